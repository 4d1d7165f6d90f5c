package m2c

// #include <stdint.h>
// #include <stdlib.h>
// #include "m2c.h"
//
// // Device addresses and stream handles cross from Go as integers, never
// // in Go pointer slots: the Go runtime checks those, and a small value
// // (CUDA's stream handles 1 and 2) or a foreign address must not reach it.
// static inline m2c_status m2c_go_set_stream(m2c_cache *c, uintptr_t s) {
//     return m2c_set_stream(c, (void *)s);
// }
// static inline void m2c_go_conv_ptrs(m2c_conv_args *a, uintptr_t w, size_t wl, uintptr_t b, size_t bl) {
//     a->weight = (const float *)w;
//     a->weight_len = wl;
//     a->bias = (const float *)b;
//     a->bias_len = bl;
// }
// static inline void m2c_go_ssm_ptrs(m2c_ssm_args *a, uintptr_t A, size_t Al, uintptr_t D, size_t Dl,
//                                    uintptr_t bias, size_t bl) {
//     a->A = (const float *)A;
//     a->A_len = Al;
//     a->D = (const float *)D;
//     a->D_len = Dl;
//     a->dt_bias = (const float *)bias;
//     a->dt_bias_len = bl;
// }
// static inline void m2c_go_io_ptrs(m2c_ssm_io *io, const uintptr_t *p, const size_t *n) {
//     io->x = (const void *)p[0];
//     io->x_len = n[0];
//     io->dt = (const void *)p[1];
//     io->dt_len = n[1];
//     io->B = (const void *)p[2];
//     io->B_len = n[2];
//     io->C = (const void *)p[3];
//     io->C_len = n[3];
//     io->z = (const void *)p[4];
//     io->z_len = n[4];
//     io->y = (void *)p[5];
//     io->y_len = n[5];
// }
// static inline m2c_status m2c_go_conv(m2c_cache *h, uint32_t l, const int32_t *s, size_t n, const uint64_t *cu,
//                                      size_t cu_len, int prefill, uintptr_t x, size_t xl, uintptr_t o, size_t ol,
//                                      const m2c_conv_args *a) {
//     if (prefill) return m2c_conv_prefill(h, l, s, n, cu, cu_len, (const void *)x, xl, (void *)o, ol, a);
//     return m2c_conv_step(h, l, s, n, (const void *)x, xl, (void *)o, ol, a);
// }
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

// data describes b for the Go-side checks of lengths and dtypes (which
// never look at the address).
func (b DeviceBuf) data() Data {
	return Data{n: b.Len, dtype: b.DType}
}

// f32 checks in Go that b holds f32 elements (the C struct has no dtype
// for parameters).
func (b DeviceBuf) f32(op, name string) error {
	if b.Len != 0 && b.DType != F32 {
		return goError(StatusInvalidArg, op, "%s is %s: parameter arrays are f32", name, b.DType)
	}
	return nil
}

func (p DevicePtr) c() C.uintptr_t { return C.uintptr_t(p) }

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
	if err := p.Weight.f32(op, "weight"); err != nil {
		return nil, err
	}
	if err := p.Bias.f32(op, "bias"); err != nil {
		return nil, err
	}
	a := (*C.m2c_conv_args)(C.malloc(C.size_t(unsafe.Sizeof(C.m2c_conv_args{}))))
	C.m2c_conv_args_init(a)
	a.io_dtype = C.m2c_dtype(io)
	a.activation = C.m2c_activation(p.Activation)
	C.m2c_go_conv_ptrs(a, p.Weight.Ptr.c(), C.size_t(p.Weight.Len), p.Bias.Ptr.c(), C.size_t(p.Bias.Len))
	return a, nil
}

func (p *DeviceSSMParams) args(op string, io DType) (*C.m2c_ssm_args, error) {
	for _, b := range []struct {
		name string
		buf  DeviceBuf
	}{{"A", p.A}, {"D", p.D}, {"dt_bias", p.DtBias}} {
		if err := b.buf.f32(op, b.name); err != nil {
			return nil, err
		}
	}
	a := (*C.m2c_ssm_args)(C.malloc(C.size_t(unsafe.Sizeof(C.m2c_ssm_args{}))))
	C.m2c_ssm_args_init(a)
	a.io_dtype = C.m2c_dtype(io)
	a.dt_softplus, a.dt_clamp = cBool(p.DtSoftplus), cBool(p.DtClamp)
	a.dt_min, a.dt_max = C.float(p.DtMin), C.float(p.DtMax)
	C.m2c_go_ssm_ptrs(a, p.A.Ptr.c(), C.size_t(p.A.Len), p.D.Ptr.c(), C.size_t(p.D.Len), p.DtBias.Ptr.c(), C.size_t(p.DtBias.Len))
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
	pre := C.int(0)
	if prefill {
		pre = 1
	}
	err = c.do(op, func(h *C.m2c_cache) C.m2c_status {
		return C.m2c_go_conv(h, l, sp, C.size_t(n), cp, C.size_t(len(cu)), pre, x.Ptr.c(), C.size_t(x.Len), out.Ptr.c(), C.size_t(out.Len), args)
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
	var ptrs [6]C.uintptr_t
	var lens [6]C.size_t
	for i, buf := range [6]DeviceBuf{b.X, b.Dt, b.B, b.C, b.Z, b.Y} {
		ptrs[i], lens[i] = buf.Ptr.c(), C.size_t(buf.Len)
	}
	C.m2c_go_io_ptrs(cio, &ptrs[0], &lens[0])
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
	return c.do("m2c_set_stream", func(h *C.m2c_cache) C.m2c_status {
		return C.m2c_go_set_stream(h, C.uintptr_t(stream))
	})
}

func rowsWord(prefill bool) string {
	if prefill {
		return "tokens"
	}
	return "rows"
}
