package m2c

import (
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

// within reports whether got is want to 1e-5, relative to the larger of
// |want| and scale, the sum of the magnitudes of the terms that make up
// want (so that a sum that cancels to near zero is judged by the size of
// what was summed, not by its own size).
func within(got float32, want, scale float64) bool {
	return math.Abs(float64(got)-want) <= 1e-5*math.Max(math.Abs(want), scale)
}

func silu64(v float64) float64 { return v / (1 + math.Exp(-v)) }

// refConvStep is causal_conv1d_update for one slot in float64: win is the
// slot's window ([ConvDim, ConvWidth], oldest column first) and x its new
// input row. It returns the outputs, the magnitude of each output's terms,
// and the window after the step.
func refConvStep(cfg Config, win, x []float32, p ConvParams) (out, scale []float64, next []float32) {
	dim, w, k := cfg.ConvDim(), int(cfg.ConvWidth), int(cfg.ConvKernelSize)
	out, scale = make([]float64, dim), make([]float64, dim)
	next = make([]float32, dim*w)
	for c := 0; c < dim; c++ {
		row := win[c*w : (c+1)*w]
		inputs := append(append([]float32(nil), row[w-(k-1):]...), x[c]) // the K newest, oldest first
		var v, s float64
		for j, in := range inputs {
			term := float64(in) * float64(p.Weight[c*k+j])
			v += term
			s += math.Abs(term)
		}
		if p.Bias != nil {
			v += float64(p.Bias[c])
			s += math.Abs(float64(p.Bias[c]))
		}
		if p.Activation == ActivationSiLU {
			v = silu64(v) // |silu'| <= 1.1: the error scale carries over
		}
		out[c], scale[c] = v, s
		copy(next[c*w:], row[1:])
		next[c*w+w-1] = x[c]
	}
	return out, scale, next
}

// refSSMStep is selective_state_update for one slot in float64: st is the
// slot's state ([NumHeads, HeadDim, StateSize]) and x, dt, b, c, z its
// token row (z nil: no gate). It returns y and the new state, each with
// the magnitude of its terms.
func refSSMStep(cfg Config, st, x, dt, b, c, z []float32, p SSMParams) (y, yScale, next, nextScale []float64) {
	h, hd, n, g := int(cfg.NumHeads), int(cfg.HeadDim), int(cfg.StateSize), int(cfg.NGroups)
	y, yScale = make([]float64, h*hd), make([]float64, h*hd)
	next, nextScale = make([]float64, len(st)), make([]float64, len(st))
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
			xv := float64(x[head*hd+ch])
			var acc, accScale float64
			for i := 0; i < n; i++ {
				at := (head*hd+ch)*n + i
				decay := float64(st[at]) * dA
				input := d * xv * float64(b[grp*n+i])
				s := decay + input
				next[at], nextScale[at] = s, math.Abs(decay)+math.Abs(input)
				term := s * float64(c[grp*n+i])
				acc += term
				accScale += math.Abs(term)
			}
			if p.D != nil {
				acc += float64(p.D[head]) * xv
				accScale += math.Abs(float64(p.D[head]) * xv)
			}
			if z != nil {
				gate := silu64(float64(z[head*hd+ch]))
				acc *= gate
				accScale *= math.Abs(gate)
			}
			y[head*hd+ch], yScale[head*hd+ch] = acc, accScale
		}
	}
	return y, yScale, next, nextScale
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

func TestConvStepMatchesFloat64Reference(t *testing.T) {
	for _, width := range []uint32{4, 3} {
		for _, act := range []Activation{ActivationSiLU, ActivationNone} {
			for _, bias := range []bool{true, false} {
				t.Run(fmt.Sprintf("width %d, %s, bias %v", width, act, bias), func(t *testing.T) {
					cfg := kernelConfig(width, F32, F32)
					c := mustNew(t, cfg)
					rng := rand.New(rand.NewSource(int64(width)))
					randomState(t, c, rng)
					dim, wl, k := cfg.ConvDim(), cfg.ConvWindowLen(), int(cfg.ConvKernelSize)
					p := DefaultConvParams()
					p.Activation = act
					p.Weight = rnd(rng, dim*k, -1, 1)
					if bias {
						p.Bias = rnd(rng, dim, -0.5, 0.5)
					}
					_, ssm0 := readLayer(t, c, 1)
					other, _ := readLayer(t, c, 0)
					slots := []int32{3, -1, 0} // slots 1 and 2 are not stepped
					for step := 0; step < 3; step++ {
						before, _ := readLayer(t, c, 1)
						x := rnd(rng, len(slots)*dim, -2, 2)
						out := filled(len(slots)*dim, 99)
						checkErr(t, c.ConvStepF32(1, slots, x, out, p), nil)
						after, ssm := readLayer(t, c, 1)
						for r, s := range slots {
							got := out[r*dim : (r+1)*dim]
							if s < 0 {
								if !equalF32(got, make([]float32, dim)) {
									t.Fatalf("step %d: padding row %d is not zero", step, r)
								}
								continue
							}
							want, scale, next := refConvStep(cfg, before[int(s)*wl:(int(s)+1)*wl], x[r*dim:(r+1)*dim], p)
							for ch := range got {
								if !within(got[ch], want[ch], scale[ch]) {
									t.Fatalf("step %d slot %d channel %d: got %v, want %v (scale %v)", step, s, ch, got[ch], want[ch], scale[ch])
								}
							}
							if !equalF32(after[int(s)*wl:(int(s)+1)*wl], next) {
								t.Fatalf("step %d slot %d: the window did not shift in x", step, s)
							}
						}
						for _, s := range []int{1, 2} {
							if !equalF32(after[s*wl:(s+1)*wl], before[s*wl:(s+1)*wl]) {
								t.Fatalf("slot %d changed", s)
							}
						}
						if !equalF32(ssm, ssm0) {
							t.Fatal("the conv step changed the SSM state")
						}
					}
					if now, _ := readLayer(t, c, 0); !equalF32(now, other) {
						t.Fatal("layer 0 changed")
					}
					for s := 0; s < 4; s++ {
						if pos, _ := c.Position(s); pos != 0 {
							t.Fatalf("slot %d position advanced to %d", s, pos)
						}
					}
				})
			}
		}
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

func TestSSMStepMatchesFloat64Reference(t *testing.T) {
	for _, v := range ssmVariants {
		t.Run(v.name, func(t *testing.T) {
			cfg := kernelConfig(4, F32, F32)
			c := mustNew(t, cfg)
			rng := rand.New(rand.NewSource(7))
			randomState(t, c, rng)
			h, hd, gn, sl := int(cfg.NumHeads), int(cfg.NumHeads*cfg.HeadDim), int(cfg.NGroups*cfg.StateSize), cfg.SSMStateLen()
			p := v.params(rng, h)
			conv0, _ := readLayer(t, c, 0)
			slots := []int32{2, -1, 1} // slots 0 and 3 are not stepped
			for step := 0; step < 3; step++ {
				_, before := readLayer(t, c, 0)
				n := len(slots)
				x, dt := rnd(rng, n*hd, -1, 1), rnd(rng, n*h, -2, 1)
				b, cc := rnd(rng, n*gn, -1, 1), rnd(rng, n*gn, -1, 1)
				var z []float32
				if v.z {
					z = rnd(rng, n*hd, -2, 2)
				}
				y := filled(n*hd, 99)
				io := SSMIO{X: F32Data(x), Dt: F32Data(dt), B: F32Data(b), C: F32Data(cc), Z: F32Data(z), Y: F32Data(y)}
				checkErr(t, c.SSMStep(0, slots, io, p), nil)
				conv, after := readLayer(t, c, 0)
				for r, s := range slots {
					got := y[r*hd : (r+1)*hd]
					if s < 0 {
						if !equalF32(got, make([]float32, hd)) {
							t.Fatalf("step %d: padding row %d is not zero", step, r)
						}
						continue
					}
					var zr []float32
					if z != nil {
						zr = z[r*hd : (r+1)*hd]
					}
					want, ys, next, ns := refSSMStep(cfg, before[int(s)*sl:(int(s)+1)*sl], x[r*hd:(r+1)*hd], dt[r*h:(r+1)*h],
						b[r*gn:(r+1)*gn], cc[r*gn:(r+1)*gn], zr, p)
					for i := range got {
						if !within(got[i], want[i], ys[i]) {
							t.Fatalf("step %d slot %d y[%d]: got %v, want %v (scale %v)", step, s, i, got[i], want[i], ys[i])
						}
					}
					st := after[int(s)*sl : (int(s)+1)*sl]
					for i := range st {
						if !within(st[i], next[i], ns[i]) {
							t.Fatalf("step %d slot %d state[%d]: got %v, want %v", step, s, i, st[i], next[i])
						}
					}
				}
				for _, s := range []int{0, 3} {
					if !equalF32(after[s*sl:(s+1)*sl], before[s*sl:(s+1)*sl]) {
						t.Fatalf("slot %d changed", s)
					}
				}
				if !equalF32(conv, conv0) {
					t.Fatal("the SSM step changed the conv windows")
				}
			}
		})
	}
}

// ioVals is a per-token buffer in the io dtype of a test, kept as the
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

// gather returns the token rows idx of every input.
func (tk tokens) gather(cfg Config, idx []int) tokens {
	pick := func(v []float32, per int) []float32 {
		out := make([]float32, 0, len(idx)*per)
		for _, i := range idx {
			out = append(out, v[i*per:(i+1)*per]...)
		}
		return out
	}
	hd, gn := int(cfg.NumHeads*cfg.HeadDim), int(cfg.NGroups*cfg.StateSize)
	return tokens{
		x: pick(tk.x, cfg.ConvDim()), sx: pick(tk.sx, hd), dt: pick(tk.dt, int(cfg.NumHeads)),
		b: pick(tk.b, gn), c: pick(tk.c, gn), z: pick(tk.z, hd),
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

func cumsum(lens []int) []uint64 {
	cu := make([]uint64, len(lens)+1)
	for i, l := range lens {
		cu[i+1] = cu[i] + uint64(l)
	}
	return cu
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

// dtypeCases are the storage and io dtypes the prefill tests run with.
var dtypeCases = []struct {
	width     uint32
	store, io DType
}{{4, F32, F32}, {3, BF16, F32}, {4, F16, BF16}, {3, F32, BF16}}

func TestPrefillEqualsTokenByTokenSteps(t *testing.T) {
	for _, dc := range dtypeCases {
		t.Run(fmt.Sprintf("width %d, storage %s, io %s", dc.width, dc.store, dc.io), func(t *testing.T) {
			cfg := kernelConfig(dc.width, dc.store, dc.store)
			rng := rand.New(rand.NewSource(3))
			pre, step := mustNew(t, cfg), mustNew(t, cfg)
			randomState(t, pre, rand.New(rand.NewSource(4)))
			randomState(t, step, rand.New(rand.NewSource(4)))
			cp, sp := kernelParams(rng, cfg)

			slots, lens := []int32{2, -1, 0, 3}, []int{5, 3, 0, 4} // a padding and an empty sequence
			cu := cumsum(lens)
			tk := randomTokens(rng, cfg, dc.io, int(cu[len(lens)]))
			got := runPrefill(t, pre, dc.io, 1, slots, cu, tk, cp, sp)

			dim, hd := cfg.ConvDim(), int(cfg.NumHeads*cfg.HeadDim)
			for tok := 0; tok < 5; tok++ {
				var rows []int32
				var idx []int
				for i, s := range slots {
					if lens[i] > tok {
						rows = append(rows, s)
						idx = append(idx, int(cu[i])+tok)
					}
				}
				want := runStep(t, step, dc.io, 1, rows, tk.gather(cfg, idx), cp, sp)
				for r, i := range idx {
					if !sameBits(got.conv[i*dim:(i+1)*dim], want.conv[r*dim:(r+1)*dim]) {
						t.Fatalf("token %d (sequence row %d): conv output differs from the step's", tok, r)
					}
					if !sameBits(got.y[i*hd:(i+1)*hd], want.y[r*hd:(r+1)*hd]) {
						t.Fatalf("token %d (sequence row %d): y differs from the step's", tok, r)
					}
				}
			}
			pad := got.conv[int(cu[1])*dim : int(cu[2])*dim]
			if !equalF32(pad, make([]float32, len(pad))) {
				t.Fatal("the padding sequence's outputs are not zero")
			}
			sameLayer(t, pre, step, 1)
			sameLayer(t, pre, step, 0)
		})
	}
}

func TestChunkedPrefillEqualsOneCall(t *testing.T) {
	for trial, dc := range dtypeCases {
		t.Run(fmt.Sprintf("width %d, storage %s, io %s", dc.width, dc.store, dc.io), func(t *testing.T) {
			cfg := kernelConfig(dc.width, dc.store, dc.store)
			rng := rand.New(rand.NewSource(int64(10 + trial)))
			whole, chunked := mustNew(t, cfg), mustNew(t, cfg)
			randomState(t, whole, rand.New(rand.NewSource(5)))
			randomState(t, chunked, rand.New(rand.NewSource(5)))
			cp, sp := kernelParams(rng, cfg)

			slots, lens := []int32{1, 3, 0}, []int{7, 1, 6}
			if trial%2 == 1 {
				slots = nil // sequence i is slot i
			}
			cu := cumsum(lens)
			tk := randomTokens(rng, cfg, dc.io, int(cu[len(lens)]))
			want := runPrefill(t, whole, dc.io, 0, slots, cu, tk, cp, sp)

			// Split each sequence into random chunks (empty ones included);
			// call i brings chunk i of every sequence.
			dim, hd := cfg.ConvDim(), int(cfg.NumHeads*cfg.HeadDim)
			got := kernelOut{conv: make([]float32, len(want.conv)), y: make([]float32, len(want.y))}
			done := make([]int, len(lens))
			for call := 0; ; call++ {
				left := false
				part := make([]int, len(lens))
				var idx []int
				for i, l := range lens {
					part[i] = min(rng.Intn(4), l-done[i]) // 0..3 tokens
					if call == 0 && i == 0 {
						part[i] = 0 // one sequence starts with an empty chunk
					}
					for k := 0; k < part[i]; k++ {
						idx = append(idx, int(cu[i])+done[i]+k)
					}
					done[i] += part[i]
					left = left || done[i] < l
				}
				out := runPrefill(t, chunked, dc.io, 0, slots, cumsum(part), tk.gather(cfg, idx), cp, sp)
				for r, i := range idx {
					copy(got.conv[i*dim:(i+1)*dim], out.conv[r*dim:(r+1)*dim])
					copy(got.y[i*hd:(i+1)*hd], out.y[r*hd:(r+1)*hd])
				}
				if !left {
					t.Logf("%d chunked calls", call+1)
					break
				}
			}
			if !sameBits(got.conv, want.conv) || !sameBits(got.y, want.y) {
				t.Fatal("chunked outputs differ from one call's")
			}
			sameLayer(t, whole, chunked, 0)
		})
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
