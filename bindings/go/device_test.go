package m2c

import (
	"errors"
	"math/rand"
	"runtime"
	"testing"
	"unsafe"
)

// addrOf pins the backing array of v for the rest of the test and returns
// its address: on a host cache the device-buffer calls take any memory the
// library may use during the call, and pinned Go memory is such memory.
func addrOf[T any](t *testing.T, pin *runtime.Pinner, v []T) DevicePtr {
	t.Helper()
	if len(v) == 0 {
		return 0
	}
	pin.Pin(unsafe.SliceData(v))
	return DevicePtr(uintptr(unsafe.Pointer(unsafe.SliceData(v))))
}

func devF32(t *testing.T, pin *runtime.Pinner, v []float32) DeviceBuf {
	return DeviceF32(addrOf(t, pin, v), len(v))
}

// The device-buffer calls give bit-identical results to the slice calls on
// two caches with the same state, for steps and for prefill, with the
// Mamba2 parameters and with every flag flipped (no activation, no bias,
// no softplus, a clamp, no D).
func TestDeviceBufferCallsMatchTheSliceCalls(t *testing.T) {
	cfg := kernelConfig(4, F32, BF16)
	rng := rand.New(rand.NewSource(11))
	a, b := mustNew(t, cfg), mustNew(t, cfg)
	randomState(t, a, rand.New(rand.NewSource(12)))
	randomState(t, b, rand.New(rand.NewSource(12)))
	var pin runtime.Pinner
	defer pin.Unpin()
	dim, hd := cfg.ConvDim(), int(cfg.NumHeads*cfg.HeadDim)

	var cp ConvParams
	var sp SSMParams
	var dcp DeviceConvParams
	var dsp DeviceSSMParams
	params := func(c ConvParams, s SSMParams) {
		cp, sp = c, s
		dcp = DefaultDeviceConvParams()
		dcp.Weight, dcp.Bias, dcp.Activation = devF32(t, &pin, cp.Weight), devF32(t, &pin, cp.Bias), cp.Activation
		dsp = DeviceSSMParams{A: devF32(t, &pin, sp.A), D: devF32(t, &pin, sp.D), DtBias: devF32(t, &pin, sp.DtBias),
			DtSoftplus: sp.DtSoftplus, DtClamp: sp.DtClamp, DtMin: sp.DtMin, DtMax: sp.DtMax}
	}
	check := func(what string, slots []int32, cu []uint64, T int) {
		tk := randomTokens(rng, cfg, F32, T)
		var want kernelOut
		if cu == nil {
			want = runStep(t, a, F32, 1, slots, tk, cp, sp)
		} else {
			want = runPrefill(t, a, F32, 1, slots, cu, tk, cp, sp)
		}
		out, y := filled(T*dim, -7), filled(T*hd, -7)
		x := devF32(t, &pin, tk.x)
		io := DeviceSSMIO{X: devF32(t, &pin, tk.sx), Dt: devF32(t, &pin, tk.dt), B: devF32(t, &pin, tk.b),
			C: devF32(t, &pin, tk.c), Z: devF32(t, &pin, tk.z), Y: devF32(t, &pin, y)}
		if cu == nil {
			checkErr(t, b.ConvStepDevice(1, slots, x, devF32(t, &pin, out), dcp), nil)
			checkErr(t, b.SSMStepDevice(1, slots, io, dsp), nil)
		} else {
			checkErr(t, b.ConvPrefillDevice(1, slots, cu, x, devF32(t, &pin, out), dcp), nil)
			checkErr(t, b.SSMPrefillDevice(1, slots, cu, io, dsp), nil)
		}
		if !sameBits(out, want.conv) || !sameBits(y, want.y) {
			t.Fatalf("%s: outputs differ from the slice call's", what)
		}
		sameLayer(t, a, b, 1)
	}
	params(kernelParams(rng, cfg))
	check("step", []int32{3, -1, 0}, nil, 3)
	check("prefill", []int32{2, -1, 1}, []uint64{0, 4, 6, 9}, 9)

	flipped, _ := kernelParams(rng, cfg)
	flipped.Activation, flipped.Bias = ActivationNone, nil
	params(flipped, ssmVariant{bias: true, clamp: true}.params(rng, int(cfg.NumHeads)))
	check("step, flags flipped", []int32{0, 2}, nil, 2)
	check("prefill, flags flipped", []int32{1, -1, 3}, []uint64{0, 2, 3, 6}, 6)
}

// Bad device-buffer calls are refused with the same errors as the slice
// calls, and change nothing.
func TestDeviceBufferCallsRefuseBadArguments(t *testing.T) {
	cfg := kernelConfig(4, F32, F32)
	c := mustNew(t, cfg)
	randomState(t, c, rand.New(rand.NewSource(5)))
	conv0, ssm0 := readLayer(t, c, 0)
	var pin runtime.Pinner
	defer pin.Unpin()
	dim, h, hd := cfg.ConvDim(), int(cfg.NumHeads), int(cfg.NumHeads*cfg.HeadDim)
	w := devF32(t, &pin, make([]float32, dim*int(cfg.ConvKernelSize)))
	x, out := devF32(t, &pin, make([]float32, dim)), devF32(t, &pin, make([]float32, dim))
	p := DefaultDeviceConvParams()
	p.Weight = w

	checkErr(t, c.ConvStepDevice(0, []int32{0}, DeviceF32(x.Ptr, dim-1), out, p), ErrShapeMismatch)
	checkErr(t, c.ConvStepDevice(0, []int32{0}, x, out, DefaultDeviceConvParams()), ErrNullArg)
	bad := p
	bad.Weight.DType = BF16
	checkErr(t, c.ConvStepDevice(0, []int32{0}, x, out, bad), ErrInvalidArg)
	bf := DeviceBuf{Ptr: out.Ptr, Len: dim, DType: BF16}
	checkErr(t, c.ConvStepDevice(0, []int32{0}, x, bf, p), ErrInvalidArg) // x and out differ in dtype
	checkErr(t, c.ConvStepDevice(9, []int32{0}, x, out, p), ErrOutOfRange)
	checkErr(t, c.ConvPrefillDevice(0, []int32{0}, []uint64{1, 1}, x, out, p), ErrInvalidArg)

	sp := DefaultDeviceSSMParams()
	sp.A = devF32(t, &pin, make([]float32, h))
	gn := int(cfg.NGroups * cfg.StateSize)
	io := DeviceSSMIO{X: devF32(t, &pin, make([]float32, hd)), Dt: devF32(t, &pin, make([]float32, h)),
		B: devF32(t, &pin, make([]float32, gn)), C: devF32(t, &pin, make([]float32, gn)), Y: devF32(t, &pin, make([]float32, hd))}
	bad2 := io
	bad2.Dt = DeviceF32(io.Dt.Ptr, h+1)
	checkErr(t, c.SSMStepDevice(0, []int32{1}, bad2, sp), ErrShapeMismatch)
	checkErr(t, c.SSMStepDevice(0, []int32{1, 1}, io, sp), ErrShapeMismatch)
	noA := sp
	noA.A = DeviceBuf{}
	checkErr(t, c.SSMStepDevice(0, []int32{1}, io, noA), ErrNullArg)

	if conv1, ssm1 := readLayer(t, c, 0); !sameBits(conv0, conv1) || !sameBits(ssm0, ssm1) {
		t.Fatal("a refused call changed the cache")
	}
	// The same arguments, corrected, run.
	checkErr(t, c.ConvStepDevice(0, []int32{0}, x, out, p), nil)
	checkErr(t, c.SSMStepDevice(0, []int32{1}, io, sp), nil)
}

func TestSetStreamOnAHostCache(t *testing.T) {
	c := mustNew(t, smallConfig())
	checkErr(t, c.SetStream(0), nil)
	// CUDA's own handles 1 (legacy) and 2 (per-thread) are small integers:
	// they must reach the library, not the Go runtime's pointer checks.
	for _, s := range []uintptr{1, 2} {
		checkErr(t, c.SetStream(s), ErrUnsupported)
		runtime.GC()
	}
	err := c.SetStream(0x1000)
	checkErr(t, err, ErrUnsupported)
	var e *Error
	if !errors.As(err, &e) || e.Op != "m2c_set_stream" {
		t.Fatalf("error %v does not name m2c_set_stream", err)
	}
	c.Close()
	checkErr(t, c.SetStream(0), ErrClosed)
}
