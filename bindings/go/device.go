package m2c

// #include <stdlib.h>
// #include "m2c.h"
import "C"

import (
	"runtime"
	"unsafe"
)

// DevicePtr is an address the library reads or writes during a kernel call
// but Go never dereferences: a CUdeviceptr for a cache created with
// DeviceCUDA (kernel calls on such a cache take device buffers, never Go
// memory), or, on a host cache, C memory or pinned Go memory.
type DevicePtr uintptr

// DeviceBuf is Len elements of DType at Ptr (Ptr 0 with Len 0: none).
type DeviceBuf struct {
	Ptr   DevicePtr
	Len   int
	DType DType
}

// DeviceF32 is a DeviceBuf of n float32 elements at p.
func DeviceF32(p DevicePtr, n int) DeviceBuf { return DeviceBuf{Ptr: p, Len: n, DType: F32} }

// ptr returns the address as an unsafe.Pointer for a C argument without
// an unsafe.Pointer(uintptr) conversion: the address is not Go memory the
// garbage collector tracks, and m2c only passes it on.
func (p DevicePtr) ptr() unsafe.Pointer { return *(*unsafe.Pointer)(unsafe.Pointer(&p)) }

func (b DeviceBuf) data() Data {
	return Data{ptr: b.Ptr.ptr(), n: b.Len, dtype: b.DType}
}

// f32 returns b's address for an f32 parameter array, after checking in Go
// that b holds f32 elements (the C struct has no dtype for parameters).
func (b DeviceBuf) f32(op, name string) (*C.float, error) {
	if b.Len != 0 && b.DType != F32 {
		return nil, goError(StatusInvalidArg, op, "%s is %s: parameter arrays are f32", name, b.DType)
	}
	return (*C.float)(b.Ptr.ptr()), nil
}

// DeviceConvParams are [ConvParams] for the device-buffer calls: Weight
// ([ConvDim, ConvKernelSize]) and Bias ([ConvDim], or none) are f32
// buffers at device addresses.
type DeviceConvParams struct {
	Weight, Bias DeviceBuf
	Activation   Activation
}

// DefaultDeviceConvParams returns the library's defaults (SiLU); set
// Weight before use.
func DefaultDeviceConvParams() DeviceConvParams {
	return DeviceConvParams{Activation: DefaultConvParams().Activation}
}

// DeviceSSMParams are [SSMParams] for the device-buffer calls: A, D and
// DtBias ([NumHeads] f32 each; D and DtBias may be none) are buffers at
// device addresses.
type DeviceSSMParams struct {
	A, D, DtBias DeviceBuf
	DtSoftplus   bool
	DtClamp      bool
	DtMin, DtMax float32
}

// DefaultDeviceSSMParams returns the library's Mamba2 defaults (softplus
// on, no clamp); set A before use.
func DefaultDeviceSSMParams() DeviceSSMParams {
	p := DefaultSSMParams()
	return DeviceSSMParams{DtSoftplus: p.DtSoftplus, DtClamp: p.DtClamp, DtMin: p.DtMin, DtMax: p.DtMax}
}

// DeviceSSMIO is [SSMIO] with buffers at device addresses, all of one
// dtype (the call's io_dtype).
type DeviceSSMIO struct {
	X, Dt, B, C, Z, Y DeviceBuf
}

// The checks in Go of the device calls are those of the host calls on the
// lengths and dtypes; the library checks again, and on a DeviceCUDA cache
// also checks every address against CUDA's allocations.

func (p *DeviceConvParams) args(op string, io DType) (*C.m2c_conv_args, error) {
	w, err := p.Weight.f32(op, "weight")
	if err != nil {
		return nil, err
	}
	b, err := p.Bias.f32(op, "bias")
	if err != nil {
		return nil, err
	}
	a := (*C.m2c_conv_args)(C.malloc(C.size_t(unsafe.Sizeof(C.m2c_conv_args{}))))
	C.m2c_conv_args_init(a)
	a.io_dtype = C.m2c_dtype(io)
	a.activation = C.m2c_activation(p.Activation)
	a.weight, a.weight_len = w, C.size_t(p.Weight.Len)
	a.bias, a.bias_len = b, C.size_t(p.Bias.Len)
	return a, nil
}

func (p *DeviceSSMParams) args(op string, io DType) (*C.m2c_ssm_args, error) {
	var ptrs [3]*C.float
	for i, b := range []struct {
		name string
		buf  DeviceBuf
	}{{"A", p.A}, {"D", p.D}, {"dt_bias", p.DtBias}} {
		f, err := b.buf.f32(op, b.name)
		if err != nil {
			return nil, err
		}
		ptrs[i] = f
	}
	a := (*C.m2c_ssm_args)(C.malloc(C.size_t(unsafe.Sizeof(C.m2c_ssm_args{}))))
	C.m2c_ssm_args_init(a)
	a.io_dtype = C.m2c_dtype(io)
	a.dt_softplus, a.dt_clamp = cBool(p.DtSoftplus), cBool(p.DtClamp)
	a.dt_min, a.dt_max = C.float(p.DtMin), C.float(p.DtMax)
	a.A, a.A_len = ptrs[0], C.size_t(p.A.Len)
	a.D, a.D_len = ptrs[1], C.size_t(p.D.Len)
	a.dt_bias, a.dt_bias_len = ptrs[2], C.size_t(p.DtBias.Len)
	return a, nil
}

// deviceConv runs m2c_conv_step (cu nil, prefill false) or m2c_conv_prefill
// on device buffers. The argument struct holds raw addresses, so it lives
// in C memory (no Go memory is passed, nothing needs pinning).
func (c *Cache) deviceConv(op string, layer int, slots []int32, cu []uint64, prefill bool, x, out DeviceBuf, p *DeviceConvParams) error {
	l, err := c.layerArg(op, layer)
	if err != nil {
		return err
	}
	xd, od := x.data(), out.data()
	io, n, err := c.checkTokens(op, c.convBufs(xd, od), slots, cu, prefill)
	if err != nil {
		return err
	}
	args, err := p.args(op, io)
	if err != nil {
		return err
	}
	defer C.free(unsafe.Pointer(args))
	sp, cp := slotsPtr(slots), cuPtr(cu)
	err = c.do(op, func(h *C.m2c_cache) C.m2c_status {
		if prefill {
			return C.m2c_conv_prefill(h, l, sp, C.size_t(n), cp, C.size_t(len(cu)), xd.ptr, C.size_t(xd.n), od.ptr, C.size_t(od.n), args)
		}
		return C.m2c_conv_step(h, l, sp, C.size_t(n), xd.ptr, C.size_t(xd.n), od.ptr, C.size_t(od.n), args)
	})
	runtime.KeepAlive(slots)
	runtime.KeepAlive(cu)
	return err
}

// deviceSSM runs m2c_ssm_step or m2c_ssm_prefill on device buffers.
func (c *Cache) deviceSSM(op string, layer int, slots []int32, cu []uint64, prefill bool, b *DeviceSSMIO, p *DeviceSSMParams) error {
	l, err := c.layerArg(op, layer)
	if err != nil {
		return err
	}
	d := [6]Data{b.X.data(), b.Dt.data(), b.B.data(), b.C.data(), b.Z.data(), b.Y.data()}
	io, n, err := c.checkTokens(op, c.ssmBufs(d), slots, cu, prefill)
	if err != nil {
		return err
	}
	args, err := p.args(op, io)
	if err != nil {
		return err
	}
	defer C.free(unsafe.Pointer(args))
	cio := (*C.m2c_ssm_io)(C.malloc(C.size_t(unsafe.Sizeof(C.m2c_ssm_io{}))))
	defer C.free(unsafe.Pointer(cio))
	C.m2c_ssm_io_init(cio)
	cio.x, cio.x_len = d[0].ptr, C.size_t(d[0].n)
	cio.dt, cio.dt_len = d[1].ptr, C.size_t(d[1].n)
	cio.B, cio.B_len = d[2].ptr, C.size_t(d[2].n)
	cio.C, cio.C_len = d[3].ptr, C.size_t(d[3].n)
	cio.z, cio.z_len = d[4].ptr, C.size_t(d[4].n)
	cio.y, cio.y_len = d[5].ptr, C.size_t(d[5].n)
	sp, cp := slotsPtr(slots), cuPtr(cu)
	err = c.do(op, func(h *C.m2c_cache) C.m2c_status {
		if prefill {
			return C.m2c_ssm_prefill(h, l, sp, C.size_t(n), cp, C.size_t(len(cu)), cio, args)
		}
		return C.m2c_ssm_step(h, l, sp, C.size_t(n), cio, args)
	})
	runtime.KeepAlive(slots)
	runtime.KeepAlive(cu)
	return err
}

// ConvStepDevice is [Cache.ConvStep] on buffers at device addresses, the
// form the kernel calls of a DeviceCUDA cache take: x and out
// ([n, ConvDim], one dtype) and the parameters live in device memory of
// the cache's GPU. On a DeviceCUDA cache the call returns once the kernel
// is queued on the cache's stream ([Cache.SetStream]); an address CUDA
// does not know, or an array that runs past its allocation, is refused
// with ErrInvalidArg before anything runs. Errors otherwise as for
// [Cache.ConvStep], plus ErrInvalidArg for a parameter buffer that is not
// f32.
func (c *Cache) ConvStepDevice(layer int, slots []int32, x, out DeviceBuf, p DeviceConvParams) error {
	return c.deviceConv("m2c_conv_step", layer, slots, nil, false, x, out, &p)
}

// ConvPrefillDevice is [Cache.ConvPrefill] on device buffers (see
// [Cache.ConvStepDevice]); cuSeqlens stays in Go memory.
func (c *Cache) ConvPrefillDevice(layer int, slots []int32, cuSeqlens []uint64, x, out DeviceBuf, p DeviceConvParams) error {
	return c.deviceConv("m2c_conv_prefill", layer, slots, cuSeqlens, true, x, out, &p)
}

// SSMStepDevice is [Cache.SSMStep] on device buffers (see
// [Cache.ConvStepDevice]).
func (c *Cache) SSMStepDevice(layer int, slots []int32, io DeviceSSMIO, p DeviceSSMParams) error {
	return c.deviceSSM("m2c_ssm_step", layer, slots, nil, false, &io, &p)
}

// SSMPrefillDevice is [Cache.SSMPrefill] on device buffers (see
// [Cache.ConvStepDevice]); cuSeqlens stays in Go memory.
func (c *Cache) SSMPrefillDevice(layer int, slots []int32, cuSeqlens []uint64, io DeviceSSMIO, p DeviceSSMParams) error {
	return c.deviceSSM("m2c_ssm_prefill", layer, slots, cuSeqlens, true, &io, &p)
}

// SetStream chooses the CUDA stream (a CUstream / cudaStream_t, as an
// integer; 0 for the legacy default stream) on which a DeviceCUDA cache
// queues its work from now on (m2c_set_stream): kernel calls are queued
// there, copy-style calls transfer there and wait for it. It first waits
// for the work queued on the previous stream. Keep the stream alive until
// another is set or the cache is closed (Close waits for it). A host cache
// takes no stream: 0 is accepted and does nothing, anything else is
// ErrUnsupported. Errors: ErrInvalidArg (not a stream of the device's
// primary context), ErrUnsupported, ErrPoisoned, ErrClosed.
func (c *Cache) SetStream(stream uintptr) error {
	p := DevicePtr(stream).ptr()
	return c.do("m2c_set_stream", func(h *C.m2c_cache) C.m2c_status {
		return C.m2c_set_stream(h, p)
	})
}

func rowsWord(prefill bool) string {
	if prefill {
		return "tokens"
	}
	return "rows"
}
