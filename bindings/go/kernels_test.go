package m2c

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand"
	"os"
	"strings"
	"testing"
	"unsafe"
)

// kernelConfig is the kernel tests' shape: ConvDim 144 (two full blocks of
// 64 channels and a remainder), 4 heads of 16 channels in 2 groups (heads
// 0-1 use group 0, heads 2-3 group 1), state size 20 (one vector of 16 and
// a remainder), kernel 4 with the given window width.
func kernelConfig(width uint32, conv, ssm DType) Config {
	cfg := smallConfig()
	cfg.NumHeads, cfg.HeadDim, cfg.IntermediateSize = 4, 16, 64
	cfg.StateSize, cfg.NGroups = 20, 2
	cfg.ConvKernelSize, cfg.ConvWidth = 4, width
	cfg.ConvDType, cfg.SSMDType = conv, ssm
	return cfg
}

// rnd returns n values uniform in [lo, hi).
func rnd(rng *rand.Rand, n int, lo, hi float64) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(lo + (hi-lo)*rng.Float64())
	}
	return x
}

// readLayer returns the conv windows and SSM states of every slot of layer.
func readLayer(t *testing.T, c *Cache, layer int) (conv, ssm []float32) {
	t.Helper()
	conv = make([]float32, int(c.cfg.NumSlots)*c.cfg.ConvWindowLen())
	ssm = make([]float32, int(c.cfg.NumSlots)*c.cfg.SSMStateLen())
	checkErr(t, c.ReadConvF32(layer, nil, conv), nil)
	checkErr(t, c.ReadSSMF32(layer, nil, ssm), nil)
	return conv, ssm
}

// randomState gives every slot of every layer random conv windows and SSM
// states.
func randomState(t *testing.T, c *Cache, rng *rand.Rand) {
	t.Helper()
	n := int(c.cfg.NumSlots)
	for l := 0; l < int(c.cfg.NumLayers); l++ {
		checkErr(t, c.SetConvF32(l, nil, rnd(rng, n*c.cfg.ConvWindowLen(), -1, 1)), nil)
		checkErr(t, c.UpdateSSMF32(l, nil, rnd(rng, n*c.cfg.SSMStateLen(), -1, 1)), nil)
	}
}

func TestDefaultKernelParamsMirrorTheLibrary(t *testing.T) {
	if p := DefaultConvParams(); p.Activation != ActivationSiLU || p.Weight != nil || p.Bias != nil {
		t.Fatalf("DefaultConvParams() = %+v", p)
	}
	p := DefaultSSMParams()
	if !p.DtSoftplus || p.DtClamp || p.DtMin != 0 || !math.IsInf(float64(p.DtMax), 1) || p.A != nil || p.D != nil || p.DtBias != nil {
		t.Fatalf("DefaultSSMParams() = %+v", p)
	}
	if ActivationNone.String() != "none" || ActivationSiLU.String() != "silu" || Activation(7).String() != "Activation(7)" {
		t.Fatal("Activation strings")
	}
}

// ssmVariant is one combination of SSM parameters.
type ssmVariant struct {
	name                        string
	softplus, bias, d, z, clamp bool
}

var ssmVariants = []ssmVariant{
	{name: "mamba2 (softplus, dt_bias, D, z)", softplus: true, bias: true, d: true, z: true},
	{name: "bare (no softplus, bias, D or z)"},
	{name: "softplus and clamp, no z", softplus: true, bias: true, d: true, clamp: true},
}

func (v ssmVariant) params(rng *rand.Rand, heads int) SSMParams {
	p := DefaultSSMParams()
	p.DtSoftplus = v.softplus
	p.A = rnd(rng, heads, -2, -0.1)
	if v.d {
		p.D = rnd(rng, heads, -1, 1)
	}
	if v.bias {
		p.DtBias = rnd(rng, heads, -1, 0.5)
	}
	if v.clamp {
		p.DtClamp, p.DtMin, p.DtMax = true, 0.2, 0.6
	}
	return p
}

// ioBuf is a per-token buffer in the io dtype of a test, kept as the
// float32 values it holds (exact in that dtype).
type ioBuf struct {
	dt DType
	f  []float32
	h  []uint16
}

func newIOBuf(dt DType, n int) ioBuf {
	if dt == BF16 {
		return ioBuf{dt: dt, h: make([]uint16, n)}
	}
	return ioBuf{dt: dt, f: make([]float32, n)}
}

// ioFrom holds v, rounded to dt.
func ioFrom(dt DType, v []float32) ioBuf {
	b := newIOBuf(dt, len(v))
	for i, x := range v {
		if dt == BF16 {
			b.h[i] = uint16(math.Float32bits(bf16Round(x)) >> 16)
		} else {
			b.f[i] = x
		}
	}
	return b
}

func (b ioBuf) data() Data {
	if b.dt == BF16 {
		return BF16Data(b.h)
	}
	return F32Data(b.f)
}

func (b ioBuf) len() int { return len(b.f) + len(b.h) }

// rows returns elements [lo, hi) of the buffer's values as float32.
func (b ioBuf) rows(lo, hi int) []float32 {
	out := make([]float32, hi-lo)
	for i := range out {
		if b.dt == BF16 {
			out[i] = math.Float32frombits(uint32(b.h[lo+i]) << 16)
		} else {
			out[i] = b.f[lo+i]
		}
	}
	return out
}

// sameBits reports whether a and b hold bit-identical values.
func sameBits(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return false
		}
	}
	return true
}

// tokens holds the per-token inputs of a prefill test: T rows of each.
type tokens struct {
	x, sx, dt, b, c, z []float32 // conv input; ssm x, dt, B, C, z
}

func randomTokens(rng *rand.Rand, cfg Config, io DType, T int) tokens {
	hd, gn := int(cfg.NumHeads*cfg.HeadDim), int(cfg.NGroups*cfg.StateSize)
	r := func(n int, lo, hi float64) []float32 { return ioFrom(io, rnd(rng, n, lo, hi)).rows(0, n) }
	return tokens{
		x: r(T*cfg.ConvDim(), -2, 2), sx: r(T*hd, -1, 1), dt: r(T*int(cfg.NumHeads), -2, 1),
		b: r(T*gn, -1, 1), c: r(T*gn, -1, 1), z: r(T*hd, -2, 2),
	}
}

// kernelOut is what a run of the kernels produced: the conv outputs and y
// of every token, in token order.
type kernelOut struct{ conv, y []float32 }

// runPrefill runs ConvPrefill and SSMPrefill on layer for one batch.
func runPrefill(t *testing.T, c *Cache, io DType, layer int, slots []int32, cu []uint64, tk tokens, cp ConvParams, sp SSMParams) kernelOut {
	t.Helper()
	T, hd := int(cu[len(cu)-1]), int(c.cfg.NumHeads*c.cfg.HeadDim)
	out, y := newIOBuf(io, T*c.cfg.ConvDim()), newIOBuf(io, T*hd)
	checkErr(t, c.ConvPrefill(layer, slots, cu, ioFrom(io, tk.x).data(), out.data(), cp), nil)
	sio := SSMIO{X: ioFrom(io, tk.sx).data(), Dt: ioFrom(io, tk.dt).data(), B: ioFrom(io, tk.b).data(),
		C: ioFrom(io, tk.c).data(), Z: ioFrom(io, tk.z).data(), Y: y.data()}
	checkErr(t, c.SSMPrefill(layer, slots, cu, sio, sp), nil)
	return kernelOut{out.rows(0, out.len()), y.rows(0, y.len())}
}

// runStep runs ConvStep and SSMStep on layer for one token per row.
func runStep(t *testing.T, c *Cache, io DType, layer int, slots []int32, tk tokens, cp ConvParams, sp SSMParams) kernelOut {
	t.Helper()
	n, hd := len(slots), int(c.cfg.NumHeads*c.cfg.HeadDim)
	out, y := newIOBuf(io, n*c.cfg.ConvDim()), newIOBuf(io, n*hd)
	checkErr(t, c.ConvStep(layer, slots, ioFrom(io, tk.x).data(), out.data(), cp), nil)
	sio := SSMIO{X: ioFrom(io, tk.sx).data(), Dt: ioFrom(io, tk.dt).data(), B: ioFrom(io, tk.b).data(),
		C: ioFrom(io, tk.c).data(), Z: ioFrom(io, tk.z).data(), Y: y.data()}
	checkErr(t, c.SSMStep(layer, slots, sio, sp), nil)
	return kernelOut{out.rows(0, out.len()), y.rows(0, y.len())}
}

// sameLayer fails unless layer holds bit-identical state in a and b.
func sameLayer(t *testing.T, a, b *Cache, layer int) {
	t.Helper()
	ac, as := readLayer(t, a, layer)
	bc, bs := readLayer(t, b, layer)
	if !sameBits(ac, bc) {
		t.Fatal("conv windows differ")
	}
	if !sameBits(as, bs) {
		t.Fatal("SSM states differ")
	}
}

// kernelParams returns random conv and SSM parameters for cfg.
func kernelParams(rng *rand.Rand, cfg Config) (ConvParams, SSMParams) {
	cp := DefaultConvParams()
	cp.Weight = rnd(rng, cfg.ConvDim()*int(cfg.ConvKernelSize), -1, 1)
	cp.Bias = rnd(rng, cfg.ConvDim(), -0.5, 0.5)
	return cp, ssmVariants[0].params(rng, int(cfg.NumHeads))
}

// The marshalling round trips below run each kernel call on a case small
// enough to compute by hand, so that a wrong pointer, length, dtype, slot
// list, cu_seqlens or flag passed to C shows up as a wrong number. The
// kernels' math (an f64 reference, prefill == token-by-token steps,
// chunked prefill == one call, the vector loops of large shapes) is
// proven in Rust (core/tests) and through the C ABI under ctest
// (ctests/{conv,ssm}_step_reference.c, *_prefill_matches_steps.c,
// *_prefill_chunked.c), not here.

func silu64(v float64) float64 { return v / (1 + math.Exp(-v)) }

// ioAs holds vals in a buffer of the kind how names: "f32" (F32Data),
// "raw" (RawData of little-endian f32 bytes) or "bf16" (BF16Data; vals must
// be exact in bf16). get reads the buffer back as float32. No vals: the
// empty Data (none).
func ioAs(how string, vals []float32) (d Data, get func() []float32) {
	if len(vals) == 0 {
		return Data{}, func() []float32 { return nil }
	}
	switch how {
	case "raw":
		b := make([]byte, 4*len(vals))
		for i, v := range vals {
			binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
		}
		return RawData(F32, b), func() []float32 {
			out := make([]float32, len(vals))
			for i := range out {
				out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
			}
			return out
		}
	case "bf16":
		buf := ioFrom(BF16, vals)
		return buf.data(), func() []float32 { return buf.rows(0, len(vals)) }
	}
	f := append([]float32(nil), vals...)
	return F32Data(f), func() []float32 { return f }
}

// marshallings are the ways the round trips pass their token buffers.
var marshallings = []string{"f32", "raw", "bf16"}

// kernelCall is one shape of kernel call: a step (cu nil) or a prefill, on
// listed slots or on nil slots (dense rows or sequences).
type kernelCall struct {
	name  string
	slots []int32
	cu    []uint64 // nil: a step
	rows  int      // a step's rows
}

// kernelCalls, run on layer 1 of 2: listed slots in no order with a padding
// row or sequence (and an empty sequence), and nil slots; each leaves some
// slots out of the batch, which must not change.
var kernelCalls = []kernelCall{
	{name: "step", slots: []int32{3, -1, 0}, rows: 3},
	{name: "step, nil slots", rows: 2},
	{name: "prefill", slots: []int32{2, -1, 0, 3}, cu: []uint64{0, 2, 3, 3, 5}},
	{name: "prefill, nil slots", cu: []uint64{0, 1, 1, 3}},
}

// sequences returns the call as sequences: slot slots[i] (negative:
// padding) owns token rows cu[i]..cu[i+1]. A step is one token per row;
// nil slots are rows or sequences 0..n-1. T is the token count.
func (k kernelCall) sequences() (slots []int32, cu []uint64, T int) {
	n := len(k.slots)
	if k.cu == nil {
		n = max(n, k.rows)
		cu = make([]uint64, n+1)
		for i := range cu {
			cu[i] = uint64(i)
		}
	} else {
		n, cu = len(k.cu)-1, k.cu
	}
	slots = k.slots
	if slots == nil {
		slots = make([]int32, n)
		for i := range slots {
			slots[i] = int32(i)
		}
	}
	return slots, cu, int(cu[n])
}

// clone returns a deep copy of s.
func (s state) clone() state {
	c := state{pos: append([]uint64(nil), s.pos...), inUse: s.inUse}
	for i := range s.conv {
		c.conv = append(c.conv, append([]float32(nil), s.conv[i]...))
		c.ssm = append(c.ssm, append([]float32(nil), s.ssm[i]...))
	}
	return c
}

// near reports whether got is want to tol*(1+|want|) everywhere (tol 0:
// exactly).
func near(got, want []float32, tol float64) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if math.Abs(float64(got[i])-float64(want[i])) > tol*(1+math.Abs(float64(want[i]))) {
			return false
		}
	}
	return true
}

// pickConv is a conv whose output is computable by hand: channel c passes
// its tap c%K through (tap K-1 is the newest input), plus Bias[c] = c.
func pickConv(cfg Config, act Activation, bias bool) ConvParams {
	dim, k := cfg.ConvDim(), int(cfg.ConvKernelSize)
	p := DefaultConvParams()
	p.Activation = act
	p.Weight = make([]float32, dim*k)
	for c := 0; c < dim; c++ {
		p.Weight[c*k+c%k] = 1
	}
	if bias {
		p.Bias = make([]float32, dim)
		for c := range p.Bias {
			p.Bias[c] = float32(c)
		}
	}
	return p
}

// wantPickConv returns what a pickConv conv on layer gives for the
// sequences of a call (as kernelCall.sequences returns them) with token rows
// x, starting from the cache state before: the outputs, and the state
// after. Each sequence's inputs run after its slot's window; padding
// sequences get zero rows and change nothing.
func wantPickConv(cfg Config, before state, layer int, slots []int32, cu []uint64, x []float32, p ConvParams) ([]float32, state) {
	dim, w, wl, k := cfg.ConvDim(), int(cfg.ConvWidth), cfg.ConvWindowLen(), int(cfg.ConvKernelSize)
	out := make([]float32, len(x))
	after := before.clone()
	for i, s := range slots {
		if s < 0 {
			continue
		}
		win := after.conv[layer][int(s)*wl : (int(s)+1)*wl]
		var hist [][]float32 // the slot's inputs, one column of dim each, oldest first
		for j := 0; j < w; j++ {
			col := make([]float32, dim)
			for c := range col {
				col[c] = win[c*w+j]
			}
			hist = append(hist, col)
		}
		for t := int(cu[i]); t < int(cu[i+1]); t++ {
			hist = append(hist, x[t*dim:(t+1)*dim])
			for c := 0; c < dim; c++ {
				v := hist[len(hist)-k+c%k][c]
				if p.Bias != nil {
					v += p.Bias[c]
				}
				if p.Activation == ActivationSiLU {
					v = float32(silu64(float64(v)))
				}
				out[t*dim+c] = v
			}
		}
		for c := 0; c < dim; c++ {
			for j := 0; j < w; j++ {
				win[c*w+j] = hist[len(hist)-w+j][c]
			}
		}
	}
	return out, after
}

// TestConvKernelsMarshalTheirArguments is the round trip of ConvStep,
// ConvStepF32, ConvPrefill and ConvPrefillF32: every call shape, with the
// tokens as F32 slices, raw bytes and bf16, against the hand-computed
// outputs and state (every layer, slot and position). The values are small
// integers, exact in f32 and bf16; the SiLU case is compared to f32 (bf16)
// rounding.
func TestConvKernelsMarshalTheirArguments(t *testing.T) {
	cfg := smallConfig()
	dim := cfg.ConvDim()
	for _, pc := range []struct {
		name string
		p    ConvParams
	}{
		{"no activation, bias", pickConv(cfg, ActivationNone, true)},
		{"silu, no bias", pickConv(cfg, ActivationSiLU, false)},
	} {
		for _, how := range marshallings {
			for _, call := range kernelCalls {
				t.Run(fmt.Sprintf("%s, %s, %s", pc.name, how, call.name), func(t *testing.T) {
					c := mustNew(t, cfg)
					fill(t, c) // windows of small integers
					before := snapshotState(t, c)
					slots, cu, T := call.sequences()
					x := make([]float32, T*dim)
					for i := range x {
						x[i] = -float32(i + 1)
					}
					xd, _ := ioAs(how, x)
					od, got := ioAs(how, filled(T*dim, 99))
					var err error
					switch {
					case how == "f32" && call.cu == nil: // the typed wrappers
						out := filled(T*dim, 99)
						err = c.ConvStepF32(1, call.slots, x, out, pc.p)
						got = func() []float32 { return out }
					case how == "f32":
						out := filled(T*dim, 99)
						err = c.ConvPrefillF32(1, call.slots, call.cu, x, out, pc.p)
						got = func() []float32 { return out }
					case call.cu == nil:
						err = c.ConvStep(1, call.slots, xd, od, pc.p)
					default:
						err = c.ConvPrefill(1, call.slots, call.cu, xd, od, pc.p)
					}
					checkErr(t, err, nil)
					want, wantState := wantPickConv(cfg, before, 1, slots, cu, x, pc.p)
					tol := 0.0 // exact
					if pc.p.Activation == ActivationSiLU {
						tol = map[string]float64{"f32": 1e-5, "raw": 1e-5, "bf16": 1e-2}[how]
					}
					if out := got(); !near(out, want, tol) {
						t.Fatalf("out = %v,\nwant %v", out, want)
					}
					if !sameState(snapshotState(t, c), wantState) {
						t.Fatal("the cache does not hold the hand-computed state")
					}
				})
			}
		}
	}
}

// wantSSMToken applies one token of the selective-state update, the
// formula of SSMStep's doc, to st (one slot's state, [NumHeads, HeadDim,
// StateSize]) in float64 and returns y. The token's rows are x, dt, b, cc
// and z (nil: no gate).
func wantSSMToken(cfg Config, st []float64, x, dt, b, cc, z []float32, p SSMParams) []float64 {
	h, hd, n, g := int(cfg.NumHeads), int(cfg.HeadDim), int(cfg.StateSize), int(cfg.NGroups)
	y := make([]float64, h*hd)
	for head := 0; head < h; head++ {
		grp := head / (h / g)
		d := float64(dt[head])
		if p.DtBias != nil {
			d += float64(p.DtBias[head])
		}
		if p.DtSoftplus && d <= 20 {
			d = math.Log1p(math.Exp(d))
		}
		if p.DtClamp {
			d = math.Min(math.Max(d, float64(p.DtMin)), float64(p.DtMax))
		}
		dA := math.Exp(d * float64(p.A[head]))
		for ch := 0; ch < hd; ch++ {
			i := head*hd + ch
			xv := float64(x[i])
			for k := 0; k < n; k++ {
				at := i*n + k
				st[at] = st[at]*dA + d*xv*float64(b[grp*n+k])
				y[i] += st[at] * float64(cc[grp*n+k])
			}
			if p.D != nil {
				y[i] += float64(p.D[head]) * xv
			}
			if z != nil {
				y[i] *= silu64(float64(z[i]))
			}
		}
	}
	return y
}

// dyadic returns n values k/4 for k in -4..4, exact in f32 and bf16, in a
// pattern of period m.
func dyadic(n, m int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(i%m%9-4) / 4
	}
	return v
}

// TestSSMKernelsMarshalTheirArguments is the round trip of SSMStep and
// SSMPrefill: every call shape, with the tokens as F32 slices, raw bytes
// and bf16, and two parameter sets that between them flip every flag and
// leave out every optional array, against the formula evaluated in float64
// on a 2-head shape (y and the state to f32, or bf16, rounding; every
// other layer, slot and position exactly).
func TestSSMKernelsMarshalTheirArguments(t *testing.T) {
	cfg := smallConfig()
	h, hd, gn, sl := int(cfg.NumHeads), int(cfg.NumHeads*cfg.HeadDim), int(cfg.NGroups*cfg.StateSize), cfg.SSMStateLen()
	plain := DefaultSSMParams() // softplus off, D and dt_bias, no gate
	plain.DtSoftplus = false
	plain.A, plain.D, plain.DtBias = []float32{-0.5, -0.25}, []float32{1, -0.5}, []float32{0.25, 0.5}
	gated := DefaultSSMParams() // softplus, clamp (both bounds hit), gate, no D or dt_bias
	gated.A = []float32{-1, -0.75}
	gated.DtClamp, gated.DtMin, gated.DtMax = true, 0.6, 1
	for _, pc := range []struct {
		name string
		p    SSMParams
		z    bool
	}{{"no softplus, D, dt_bias", plain, false}, {"softplus, clamp, z", gated, true}} {
		for _, how := range marshallings {
			for _, call := range kernelCalls {
				t.Run(fmt.Sprintf("%s, %s, %s", pc.name, how, call.name), func(t *testing.T) {
					c := mustNew(t, cfg)
					fill(t, c)
					checkErr(t, c.UpdateSSMF32(1, nil, dyadic(int(cfg.NumSlots)*sl, 7)), nil)
					before := snapshotState(t, c)
					slots, cu, T := call.sequences()
					x, b, cc := dyadic(T*hd, 5), dyadic(T*gn, 6), dyadic(T*gn, 4)
					dt := make([]float32, T*h) // -0.25, 0.25, 0.75: softplus 0.58, 0.83, 1.13
					for i := range dt {
						dt[i] = float32(i%3)/2 - 0.25
					}
					var z []float32
					if pc.z {
						z = dyadic(T*hd, 9)
					}
					io := SSMIO{}
					io.X, _ = ioAs(how, x)
					io.Dt, _ = ioAs(how, dt)
					io.B, _ = ioAs(how, b)
					io.C, _ = ioAs(how, cc)
					io.Z, _ = ioAs(how, z)
					var got func() []float32
					io.Y, got = ioAs(how, filled(T*hd, 99))
					if call.cu == nil {
						checkErr(t, c.SSMStep(1, call.slots, io, pc.p), nil)
					} else {
						checkErr(t, c.SSMPrefill(1, call.slots, call.cu, io, pc.p), nil)
					}

					want := make([]float32, T*hd) // padding rows: zeros
					wantState := before.clone()
					for i, s := range slots {
						if s < 0 {
							continue
						}
						st := make([]float64, sl)
						for j, v := range before.ssm[1][int(s)*sl : (int(s)+1)*sl] {
							st[j] = float64(v)
						}
						for tok := int(cu[i]); tok < int(cu[i+1]); tok++ {
							var zr []float32
							if z != nil {
								zr = z[tok*hd : (tok+1)*hd]
							}
							y := wantSSMToken(cfg, st, x[tok*hd:(tok+1)*hd], dt[tok*h:(tok+1)*h],
								b[tok*gn:(tok+1)*gn], cc[tok*gn:(tok+1)*gn], zr, pc.p)
							for j, v := range y {
								want[tok*hd+j] = float32(v)
							}
						}
						for j, v := range st {
							wantState.ssm[1][int(s)*sl+j] = float32(v)
						}
					}
					tol := map[string]float64{"f32": 1e-5, "raw": 1e-5, "bf16": 1e-2}[how]
					if y := got(); !near(y, want, tol) {
						t.Fatalf("y = %v,\nwant %v", y, want)
					}
					after := snapshotState(t, c)
					if !near(after.ssm[1], wantState.ssm[1], 1e-5) {
						t.Fatalf("state = %v,\nwant %v", after.ssm[1], wantState.ssm[1])
					}
					after.ssm[1] = wantState.ssm[1]
					if !sameState(after, wantState) {
						t.Fatal("the call changed more than the batch's SSM states")
					}
				})
			}
		}
	}
}

// TestEmptyBatches: a call with no rows or no tokens changes nothing.
func TestEmptyBatches(t *testing.T) {
	cfg := smallConfig()
	c := mustNew(t, cfg)
	fill(t, c)
	before := snapshotState(t, c)
	rng := rand.New(rand.NewSource(1))
	cp, sp := kernelParams(rng, cfg)
	checkErr(t, c.ConvStepF32(0, nil, nil, nil, cp), nil)
	checkErr(t, c.ConvStepF32(0, []int32{}, nil, nil, cp), nil)
	checkErr(t, c.ConvPrefillF32(0, []int32{}, []uint64{0}, nil, nil, cp), nil)
	checkErr(t, c.ConvPrefillF32(0, []int32{1, -1}, []uint64{0, 0, 0}, nil, nil, cp), nil)
	// SSM calls with no token rows pass every buffer as (NULL, 0).
	checkErr(t, c.SSMStep(0, nil, SSMIO{}, sp), nil)
	checkErr(t, c.SSMStep(0, []int32{}, SSMIO{}, sp), nil)
	checkErr(t, c.SSMPrefill(0, []int32{2}, []uint64{0, 0}, SSMIO{}, sp), nil)
	checkErr(t, c.SSMPrefill(1, nil, []uint64{0}, SSMIO{}, sp), nil)
	if !sameState(before, snapshotState(t, c)) {
		t.Fatal("an empty call changed the cache")
	}
}

// TestArgumentStructsNeedThePins shows that the pins are what makes the
// calls legal: without them the default cgocheck refuses to pass
// m2c_conv_args or m2c_ssm_io, which live in Go memory and hold the
// addresses of Go slices, and the call never reaches C.
func TestArgumentStructsNeedThePins(t *testing.T) {
	if strings.Contains(os.Getenv("GODEBUG"), "cgocheck=0") {
		t.Skip("cgocheck is off")
	}
	cfg := smallConfig()
	c := mustNew(t, cfg)
	fill(t, c)
	rng := rand.New(rand.NewSource(1))
	cp, sp := kernelParams(rng, cfg)
	dim, hd, gn := cfg.ConvDim(), int(cfg.NumHeads*cfg.HeadDim), int(cfg.NGroups*cfg.StateSize)
	conv := func() error { return c.ConvStepF32(0, []int32{1}, filled(dim, 1), make([]float32, dim), cp) }
	ssm := func() error {
		return c.SSMStep(1, []int32{2}, SSMIO{X: F32Data(filled(hd, 1)), Dt: F32Data(filled(2, 0)), B: F32Data(filled(gn, 1)),
			C: F32Data(filled(gn, 1)), Y: F32Data(make([]float32, hd))}, sp)
	}
	before := snapshotState(t, c)
	skipPin.Store(true)
	for name, call := range map[string]func() error{"ConvStep": conv, "SSMStep": ssm} {
		func() {
			defer func() {
				r := recover()
				if r == nil || !strings.Contains(fmt.Sprint(r), "unpinned Go pointer") {
					t.Errorf("%s without pins: recovered %v, want cgocheck's panic", name, r)
				}
			}()
			call()
		}()
	}
	skipPin.Store(false)
	if !sameState(before, snapshotState(t, c)) {
		t.Fatal("a refused call changed the cache")
	}
	checkErr(t, conv(), nil)
	checkErr(t, ssm(), nil)
}

// untouched runs call and turns its result into an error that matches no
// sentinel if the call wrote any of outs: a failing call must not write
// its outputs.
func untouched(call func() error, outs ...[]float32) error {
	saved := make([][]float32, len(outs))
	for i, o := range outs {
		saved[i] = append([]float32(nil), o...)
	}
	err := call()
	for i, o := range outs {
		if !equalF32(saved[i], o) {
			return errors.New("the call wrote its output: " + fmt.Sprint(err))
		}
	}
	return err
}

// kernelBadCases are bad calls of the four kernels on smallConfig (ConvDim
// 16, kernel 4, 2 heads of 4, 1 group, state 4); the harness in
// badinput_test.go checks each is refused and changes nothing.
func kernelBadCases() []badCase {
	cfg := smallConfig()
	dim, k, h, hd, gn := cfg.ConvDim(), int(cfg.ConvKernelSize), int(cfg.NumHeads), int(cfg.NumHeads*cfg.HeadDim), int(cfg.NGroups*cfg.StateSize)
	rng := rand.New(rand.NewSource(2))
	cp := DefaultConvParams()
	cp.Weight, cp.Bias = rnd(rng, dim*k, -1, 1), rnd(rng, dim, -1, 1)
	sp := ssmVariants[0].params(rng, h)

	// conv: a valid call is ConvStep(layer 0, slots {0}, x [dim], out [dim]).
	convStep := func(layer int, slots []int32, x, out []float32, p ConvParams) func(*Cache) error {
		return func(c *Cache) error {
			return untouched(func() error { return c.ConvStepF32(layer, slots, x, out, p) }, out)
		}
	}
	withConv := func(mod func(*ConvParams)) ConvParams {
		p := cp
		mod(&p)
		return p
	}
	x1 := filled(dim, 1)
	// conv prefill: a valid call is slots {0, 2}, cu {0, 2, 3}, 3 tokens.
	convPre := func(slots []int32, cu []uint64, x, out []float32, p ConvParams) func(*Cache) error {
		return func(c *Cache) error {
			return untouched(func() error { return c.ConvPrefillF32(1, slots, cu, x, out, p) }, out)
		}
	}
	x3 := filled(3*dim, 1)

	// ssm: one token row per slot.
	ioRows := func(n int) SSMIO {
		return SSMIO{X: F32Data(filled(n*hd, 1)), Dt: F32Data(filled(n*h, 0.5)), B: F32Data(filled(n*gn, 1)),
			C: F32Data(filled(n*gn, 1)), Z: F32Data(filled(n*hd, 1)), Y: F32Data(make([]float32, n*hd))}
	}
	withIO := func(n int, mod func(*SSMIO)) SSMIO {
		io := ioRows(n)
		mod(&io)
		return io
	}
	withSSM := func(mod func(*SSMParams)) SSMParams {
		p := sp
		mod(&p)
		return p
	}
	f32 := func(d Data) []float32 { // the float32 slice behind an F32Data
		if d.dtype != F32 || d.n == 0 {
			return nil
		}
		return unsafeF32(d)
	}
	ssmStep := func(layer int, slots []int32, io SSMIO, p SSMParams) func(*Cache) error {
		return func(c *Cache) error {
			return untouched(func() error { return c.SSMStep(layer, slots, io, p) }, f32(io.Y))
		}
	}
	ssmPre := func(slots []int32, cu []uint64, io SSMIO, p SSMParams) func(*Cache) error {
		return func(c *Cache) error {
			return untouched(func() error { return c.SSMPrefill(1, slots, cu, io, p) }, f32(io.Y))
		}
	}
	shared := filled(2*dim, 1) // x and out in one array

	return []badCase{
		// conv_step
		{name: "conv_step layer past the end", call: convStep(2, []int32{0}, x1, make([]float32, dim), cp), want: ErrOutOfRange},
		{name: "conv_step layer past uint32", call: convStep(1<<33, []int32{0}, x1, make([]float32, dim), cp), want: ErrOutOfRange, goOnly: true},
		{name: "conv_step short x", call: convStep(0, []int32{0}, filled(dim-1, 1), make([]float32, dim), cp), want: ErrShapeMismatch},
		{name: "conv_step long out", call: convStep(0, []int32{0}, x1, make([]float32, dim+1), cp), want: ErrShapeMismatch},
		{name: "conv_step x for one row, two slots", call: convStep(0, []int32{0, 1}, x1, make([]float32, 2*dim), cp), want: ErrShapeMismatch},
		{name: "conv_step dense x not whole rows", call: convStep(0, nil, filled(dim+2, 1), make([]float32, dim+2), cp), want: ErrShapeMismatch},
		{name: "conv_step dense rows past the slot count", call: convStep(0, nil, filled(5*dim, 1), make([]float32, 5*dim), cp), want: ErrOutOfRange},
		{name: "conv_step slot past the end", call: convStep(0, []int32{4}, x1, make([]float32, dim), cp), want: ErrOutOfRange},
		{name: "conv_step duplicate slot", call: convStep(0, []int32{3, -1, 3}, filled(3*dim, 1), make([]float32, 3*dim), cp), want: ErrInvalidArg},
		{name: "conv_step no weight", call: convStep(0, []int32{0}, x1, make([]float32, dim), withConv(func(p *ConvParams) { p.Weight = nil })), want: ErrNullArg},
		{name: "conv_step short weight", call: convStep(0, []int32{0}, x1, make([]float32, dim), withConv(func(p *ConvParams) { p.Weight = p.Weight[:dim*k-1] })), want: ErrShapeMismatch},
		{name: "conv_step bias of conv_dim-1", call: convStep(0, []int32{0}, x1, make([]float32, dim), withConv(func(p *ConvParams) { p.Bias = p.Bias[:dim-1] })), want: ErrShapeMismatch},
		{name: "conv_step unknown activation", call: convStep(0, []int32{0}, x1, make([]float32, dim), withConv(func(p *ConvParams) { p.Activation = 2 })), want: ErrInvalidArg},
		{name: "conv_step out is x", call: func(c *Cache) error { return c.ConvStepF32(0, []int32{0}, shared[:dim], shared[:dim], cp) }, want: ErrInvalidArg},
		{name: "conv_step out overlaps x", call: func(c *Cache) error { return c.ConvStepF32(0, []int32{0}, shared[:dim], shared[dim-1:2*dim-1], cp) }, want: ErrInvalidArg},
		{name: "conv_step out overlaps weight", call: func(c *Cache) error {
			p := cp
			p.Weight = append([]float32(nil), cp.Weight...)
			return c.ConvStepF32(0, []int32{0}, x1, p.Weight[:dim], p)
		}, want: ErrInvalidArg},
		{name: "conv_step x in the cache (a view)", call: func(c *Cache) error {
			v, err := c.ConvView(1)
			if err != nil {
				return err
			}
			out := make([]float32, dim)
			return untouched(func() error { return c.ConvStepF32(0, []int32{0}, v.F32()[:dim], out, cp) }, out)
		}, want: ErrInvalidArg},
		{name: "conv_step out in the cache (a view)", call: func(c *Cache) error {
			v, err := c.ConvView(1)
			if err != nil {
				return err
			}
			return c.ConvStepF32(0, []int32{0}, x1, v.F32()[:dim], cp)
		}, want: ErrInvalidArg},
		{name: "conv_step unknown dtype", call: func(c *Cache) error {
			return c.ConvStep(0, []int32{0}, RawData(DType(5), make([]byte, 4*dim)), RawData(DType(5), make([]byte, 4*dim)), cp)
		}, want: ErrUnsupportedDtype},
		{name: "conv_step misaligned x", call: func(c *Cache) error {
			out := make([]float32, dim)
			return untouched(func() error { return c.ConvStep(0, []int32{0}, RawData(F32, misaligned(4*dim)), F32Data(out), cp) }, out)
		}, want: ErrInvalidArg},
		{name: "conv_step x and out of different dtypes", call: func(c *Cache) error {
			return c.ConvStep(0, []int32{0}, F32Data(x1), BF16Data(make([]uint16, dim)), cp)
		}, want: ErrInvalidArg, goOnly: true},
		{name: "conv_step x bytes not whole elements", call: func(c *Cache) error {
			return c.ConvStep(0, []int32{0}, RawData(F32, make([]byte, 4*dim+2)), F32Data(make([]float32, dim)), cp)
		}, want: ErrShapeMismatch, goOnly: true},
		// conv_prefill
		{name: "conv_prefill cu_seqlens one entry short", call: convPre([]int32{0, 2}, []uint64{0, 3}, x3, make([]float32, 3*dim), cp), want: ErrShapeMismatch},
		{name: "conv_prefill cu_seqlens one entry long", call: convPre([]int32{0, 2}, []uint64{0, 1, 2, 3}, x3, make([]float32, 3*dim), cp), want: ErrShapeMismatch},
		{name: "conv_prefill cu_seqlens[0] not 0", call: convPre([]int32{0, 2}, []uint64{1, 2, 3}, x3, make([]float32, 3*dim), cp), want: ErrInvalidArg},
		{name: "conv_prefill cu_seqlens decreasing", call: convPre([]int32{0, 2}, []uint64{0, 4, 3}, x3, make([]float32, 3*dim), cp), want: ErrInvalidArg},
		{name: "conv_prefill cu_seqlens total differs from x", call: convPre([]int32{0, 2}, []uint64{0, 2, 4}, x3, make([]float32, 4*dim), cp), want: ErrShapeMismatch},
		{name: "conv_prefill out short", call: convPre([]int32{0, 2}, []uint64{0, 2, 3}, x3, make([]float32, 2*dim), cp), want: ErrShapeMismatch},
		{name: "conv_prefill cu_seqlens empty", call: convPre([]int32{0, 2}, nil, x3, make([]float32, 3*dim), cp), want: ErrShapeMismatch},
		{name: "conv_prefill dense, cu_seqlens empty", call: convPre(nil, nil, nil, nil, cp), want: ErrShapeMismatch},
		{name: "conv_prefill dense sequences past the slot count", call: convPre(nil, []uint64{0, 1, 1, 1, 2, 3}, x3, make([]float32, 3*dim), cp), want: ErrOutOfRange},
		{name: "conv_prefill slot past the end", call: convPre([]int32{0, 9}, []uint64{0, 2, 3}, x3, make([]float32, 3*dim), cp), want: ErrOutOfRange},
		{name: "conv_prefill duplicate slot", call: convPre([]int32{2, 2}, []uint64{0, 2, 3}, x3, make([]float32, 3*dim), cp), want: ErrInvalidArg},
		{name: "conv_prefill short weight", call: convPre([]int32{0, 2}, []uint64{0, 2, 3}, x3, make([]float32, 3*dim), withConv(func(p *ConvParams) { p.Weight = p.Weight[1:] })), want: ErrShapeMismatch},
		{name: "conv_prefill unknown activation", call: convPre([]int32{0, 2}, []uint64{0, 2, 3}, x3, make([]float32, 3*dim), withConv(func(p *ConvParams) { p.Activation = 99 })), want: ErrInvalidArg},
		{name: "conv_prefill layer past the end", call: func(c *Cache) error {
			return c.ConvPrefillF32(2, []int32{0}, []uint64{0, 1}, x1, make([]float32, dim), cp)
		}, want: ErrOutOfRange},
		{name: "conv_prefill out overlaps x", call: func(c *Cache) error {
			return c.ConvPrefillF32(1, []int32{0}, []uint64{0, 1}, shared[:dim], shared[dim/2:dim/2+dim], cp)
		}, want: ErrInvalidArg},
		// ssm_step
		{name: "ssm_step layer past the end", call: ssmStep(2, []int32{0}, ioRows(1), sp), want: ErrOutOfRange},
		{name: "ssm_step short x", call: ssmStep(0, []int32{0}, withIO(1, func(io *SSMIO) { io.X = F32Data(filled(hd-1, 1)) }), sp), want: ErrShapeMismatch},
		{name: "ssm_step long dt", call: ssmStep(0, []int32{0}, withIO(1, func(io *SSMIO) { io.Dt = F32Data(filled(h+1, 1)) }), sp), want: ErrShapeMismatch},
		{name: "ssm_step short B", call: ssmStep(0, []int32{0}, withIO(1, func(io *SSMIO) { io.B = F32Data(filled(gn-1, 1)) }), sp), want: ErrShapeMismatch},
		{name: "ssm_step long C", call: ssmStep(0, []int32{0}, withIO(1, func(io *SSMIO) { io.C = F32Data(filled(2*gn, 1)) }), sp), want: ErrShapeMismatch},
		{name: "ssm_step short z", call: ssmStep(0, []int32{0}, withIO(1, func(io *SSMIO) { io.Z = F32Data(filled(hd-1, 1)) }), sp), want: ErrShapeMismatch},
		{name: "ssm_step long y", call: ssmStep(0, []int32{0}, withIO(1, func(io *SSMIO) { io.Y = F32Data(make([]float32, hd+1)) }), sp), want: ErrShapeMismatch},
		{name: "ssm_step no x", call: ssmStep(0, []int32{0}, withIO(1, func(io *SSMIO) { io.X = Data{} }), sp), want: ErrShapeMismatch},
		{name: "ssm_step no dt", call: ssmStep(0, []int32{0}, withIO(1, func(io *SSMIO) { io.Dt = Data{} }), sp), want: ErrShapeMismatch},
		{name: "ssm_step no C", call: ssmStep(0, []int32{0}, withIO(1, func(io *SSMIO) { io.C = Data{} }), sp), want: ErrShapeMismatch},
		{name: "ssm_step no y", call: ssmStep(0, []int32{0}, withIO(1, func(io *SSMIO) { io.Y = Data{} }), sp), want: ErrShapeMismatch},
		{name: "ssm_step x for one row, two slots", call: ssmStep(0, []int32{0, 1}, ioRows(1), sp), want: ErrShapeMismatch},
		{name: "ssm_step dense x not whole rows", call: ssmStep(0, nil, withIO(1, func(io *SSMIO) { io.X = F32Data(filled(hd+1, 1)) }), sp), want: ErrShapeMismatch},
		{name: "ssm_step dense rows past the slot count", call: ssmStep(0, nil, ioRows(5), sp), want: ErrOutOfRange},
		{name: "ssm_step slot past the end", call: ssmStep(0, []int32{-1, 4}, ioRows(2), sp), want: ErrOutOfRange},
		{name: "ssm_step duplicate slot", call: ssmStep(0, []int32{1, 1}, ioRows(2), sp), want: ErrInvalidArg},
		{name: "ssm_step no A", call: ssmStep(0, []int32{0}, ioRows(1), withSSM(func(p *SSMParams) { p.A = nil })), want: ErrNullArg},
		{name: "ssm_step short A", call: ssmStep(0, []int32{0}, ioRows(1), withSSM(func(p *SSMParams) { p.A = p.A[:h-1] })), want: ErrShapeMismatch},
		{name: "ssm_step long D", call: ssmStep(0, []int32{0}, ioRows(1), withSSM(func(p *SSMParams) { p.D = filled(h+1, 1) })), want: ErrShapeMismatch},
		{name: "ssm_step short dt_bias", call: ssmStep(0, []int32{0}, ioRows(1), withSSM(func(p *SSMParams) { p.DtBias = p.DtBias[:1] })), want: ErrShapeMismatch},
		{name: "ssm_step clamp min > max", call: ssmStep(0, []int32{0}, ioRows(1), withSSM(func(p *SSMParams) { p.DtClamp, p.DtMin, p.DtMax = true, 1, 0.5 })), want: ErrInvalidArg},
		{name: "ssm_step clamp NaN", call: ssmStep(0, []int32{0}, ioRows(1), withSSM(func(p *SSMParams) { p.DtClamp, p.DtMax = true, float32(math.NaN()) })), want: ErrInvalidArg},
		{name: "ssm_step y is x", call: ssmStep(0, []int32{0}, withIO(1, func(io *SSMIO) { io.Y = io.X }), sp), want: ErrInvalidArg},
		{name: "ssm_step y overlaps z", call: func(c *Cache) error {
			both := filled(2*hd, 1)
			io := withIO(1, func(io *SSMIO) { io.Z, io.Y = F32Data(both[:hd]), F32Data(both[hd-1:2*hd-1]) })
			return c.SSMStep(0, []int32{0}, io, sp)
		}, want: ErrInvalidArg},
		{name: "ssm_step y overlaps A", call: func(c *Cache) error {
			y := make([]float32, hd)
			p := withSSM(func(p *SSMParams) { p.A = y[:h] })
			return c.SSMStep(0, []int32{0}, withIO(1, func(io *SSMIO) { io.Y = F32Data(y) }), p)
		}, want: ErrInvalidArg},
		{name: "ssm_step x in the cache (a view)", call: func(c *Cache) error {
			v, err := c.SSMView(1)
			if err != nil {
				return err
			}
			return ssmStep(0, []int32{0}, withIO(1, func(io *SSMIO) { io.X = F32Data(v.F32()[:hd]) }), sp)(c)
		}, want: ErrInvalidArg},
		{name: "ssm_step y in the cache (a view)", call: func(c *Cache) error {
			v, err := c.SSMView(0)
			if err != nil {
				return err
			}
			return c.SSMStep(0, []int32{1}, withIO(1, func(io *SSMIO) { io.Y = F32Data(v.F32()[:hd]) }), sp)
		}, want: ErrInvalidArg},
		{name: "ssm_step misaligned B", call: ssmStep(0, []int32{0}, withIO(1, func(io *SSMIO) { io.B = RawData(F32, misaligned(4*gn)) }), sp), want: ErrInvalidArg},
		{name: "ssm_step unknown dtype", call: func(c *Cache) error {
			raw := func(n int) Data { return RawData(DType(9), make([]byte, 4*n)) }
			return c.SSMStep(0, []int32{0}, SSMIO{X: raw(hd), Dt: raw(h), B: raw(gn), C: raw(gn), Y: raw(hd)}, sp)
		}, want: ErrUnsupportedDtype},
		{name: "ssm_step y of another dtype", call: ssmStep(0, []int32{0}, withIO(1, func(io *SSMIO) { io.Y = BF16Data(make([]uint16, hd)) }), sp), want: ErrInvalidArg, goOnly: true},
		{name: "ssm_step z of another dtype", call: ssmStep(0, []int32{0}, withIO(1, func(io *SSMIO) { io.Z = F16Data(make([]uint16, hd)) }), sp), want: ErrInvalidArg, goOnly: true},
		// ssm_prefill: a valid call is slots {0, 3}, cu {0, 1, 3}, 3 tokens.
		{name: "ssm_prefill cu_seqlens one entry short", call: ssmPre([]int32{0, 3}, []uint64{0, 3}, ioRows(3), sp), want: ErrShapeMismatch},
		{name: "ssm_prefill cu_seqlens[0] not 0", call: ssmPre([]int32{0, 3}, []uint64{2, 2, 3}, ioRows(3), sp), want: ErrInvalidArg},
		{name: "ssm_prefill cu_seqlens decreasing", call: ssmPre([]int32{0, 3}, []uint64{0, 3, 2}, ioRows(3), sp), want: ErrInvalidArg},
		{name: "ssm_prefill cu_seqlens total differs from the buffers", call: ssmPre([]int32{0, 3}, []uint64{0, 1, 2}, ioRows(3), sp), want: ErrShapeMismatch},
		{name: "ssm_prefill cu_seqlens empty", call: ssmPre([]int32{0, 3}, nil, ioRows(3), sp), want: ErrShapeMismatch},
		{name: "ssm_prefill dense sequences past the slot count", call: ssmPre(nil, []uint64{0, 0, 1, 1, 1, 3}, ioRows(3), sp), want: ErrOutOfRange},
		{name: "ssm_prefill slot past the end", call: ssmPre([]int32{0, 4}, []uint64{0, 1, 3}, ioRows(3), sp), want: ErrOutOfRange},
		{name: "ssm_prefill duplicate slot", call: ssmPre([]int32{3, 3}, []uint64{0, 1, 3}, ioRows(3), sp), want: ErrInvalidArg},
		{name: "ssm_prefill short dt", call: ssmPre([]int32{0, 3}, []uint64{0, 1, 3}, withIO(3, func(io *SSMIO) { io.Dt = F32Data(filled(3*h-1, 1)) }), sp), want: ErrShapeMismatch},
		{name: "ssm_prefill z for one token less", call: ssmPre([]int32{0, 3}, []uint64{0, 1, 3}, withIO(3, func(io *SSMIO) { io.Z = F32Data(filled(2*hd, 1)) }), sp), want: ErrShapeMismatch},
		{name: "ssm_prefill no A", call: ssmPre([]int32{0, 3}, []uint64{0, 1, 3}, ioRows(3), withSSM(func(p *SSMParams) { p.A = nil })), want: ErrNullArg},
		{name: "ssm_prefill clamp min > max", call: ssmPre([]int32{0, 3}, []uint64{0, 1, 3}, ioRows(3), withSSM(func(p *SSMParams) { p.DtClamp, p.DtMin, p.DtMax = true, 1e9, 1 })), want: ErrInvalidArg},
		{name: "ssm_prefill y is B", call: ssmPre([]int32{0}, []uint64{0, 2}, withIO(2, func(io *SSMIO) { io.Y = F32Data(filled(2*hd, 1)); io.B = F32Data(f32(io.Y)[:2*gn]) }), sp), want: ErrInvalidArg},
		{name: "ssm_prefill layer past the end", call: func(c *Cache) error {
			return c.SSMPrefill(3, []int32{0}, []uint64{0, 1}, ioRows(1), sp)
		}, want: ErrOutOfRange},
	}
}

// unsafeF32 returns the float32 slice behind an F32Data.
func unsafeF32(d Data) []float32 { return unsafe.Slice((*float32)(d.ptr), d.n) }
