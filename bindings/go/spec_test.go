package m2c

import (
	"math/rand"
	"testing"
)

// TestSpecVerifyCommitMarshalAndMapErrors runs one speculative round
// through the binding (two slots, chains of 3 and 2 tokens, both layers)
// and checks that committing 2 and 1 tokens leaves the cache exactly as a
// twin that stepped those tokens, that the verify's outputs are the steps',
// and that refusals map to the right errors.
func TestSpecVerifyCommitMarshalAndMapErrors(t *testing.T) {
	cfg := kernelConfig(4, BF16, F32)
	a, b := mustNew(t, cfg), mustNew(t, cfg)
	defer a.Close()
	defer b.Close()
	rng := rand.New(rand.NewSource(3))
	randomState(t, a, rng)
	rng = rand.New(rand.NewSource(3))
	randomState(t, b, rng)

	dim, hp, h, gn := cfg.ConvDim(), int(cfg.NumHeads*cfg.HeadDim), int(cfg.NumHeads), int(cfg.NGroups*cfg.StateSize)
	const T = 5
	slots, cu := []int32{3, 1}, []uint64{0, 3, 5}
	type layerIn struct{ x, sx, dt, bb, cc, z []float32 }
	in := make([]layerIn, cfg.NumLayers)
	for l := range in {
		in[l] = layerIn{rnd(rng, T*dim, -2, 2), rnd(rng, T*hp, -1, 1), rnd(rng, T*h, -1, 2), rnd(rng, T*gn, -1, 1), rnd(rng, T*gn, -1, 1), rnd(rng, T*hp, -3, 3)}
	}
	cp := DefaultConvParams()
	cp.Weight, cp.Bias = rnd(rng, dim*4, -0.5, 0.5), rnd(rng, dim, -0.5, 0.5)
	sp := DefaultSSMParams()
	sp.A, sp.D, sp.DtBias = rnd(rng, h, -1, -0.05), rnd(rng, h, -1, 1), rnd(rng, h, -0.5, 0.5)

	checkErr(t, a.BeginSpec(slots, cu, nil), ErrInvalidArg) // no log reserved
	checkErr(t, a.ReserveSpec(5000), ErrOutOfRange)
	checkErr(t, a.ReserveSpec(3), nil)
	checkErr(t, a.CommitSpec(slots, []uint32{1, 1}), ErrInvalidArg) // no round
	checkErr(t, a.BeginSpec(slots, cu, []int32{-1, 1, 0, -1, 0}), ErrInvalidArg)
	checkErr(t, a.BeginSpec(slots, []uint64{0, 4, 5}, nil), ErrOutOfRange)
	checkErr(t, a.BeginSpec(slots, cu, nil), nil)

	outs := make([][2][]float32, cfg.NumLayers)
	for l := range in {
		co, y := make([]float32, T*dim), make([]float32, T*hp)
		checkErr(t, a.ConvVerify(l, F32Data(in[l].x), F32Data(co), cp), nil)
		if l == 0 {
			checkErr(t, a.CommitSpec(slots, []uint32{1, 1}), ErrInvalidArg) // layer 1 not verified
		}
		io := SSMIO{X: F32Data(in[l].sx), Dt: F32Data(in[l].dt), B: F32Data(in[l].bb), C: F32Data(in[l].cc), Z: F32Data(in[l].z), Y: F32Data(y)}
		checkErr(t, a.SSMVerify(l, io, sp), nil)
		outs[l] = [2][]float32{co, y}
	}
	checkErr(t, a.CommitSpec(slots, []uint32{4, 1}), ErrOutOfRange)
	checkErr(t, a.CommitSpec(slots, []uint32{1}), ErrShapeMismatch)
	checkErr(t, a.CommitSpec(slots, []uint32{2, 1}), nil)
	checkErr(t, a.CommitSpec(slots, []uint32{0, 0}), ErrInvalidArg) // already committed

	// The twin steps rows 0, 1 (slot 3) and 3 (slot 1).
	for _, r := range []struct {
		slot int32
		row  int
	}{{3, 0}, {3, 1}, {1, 3}} {
		for l := range in {
			co, y := make([]float32, dim), make([]float32, hp)
			checkErr(t, b.ConvStepF32(l, []int32{r.slot}, in[l].x[r.row*dim:(r.row+1)*dim], co, cp), nil)
			io := SSMIO{X: F32Data(in[l].sx[r.row*hp : (r.row+1)*hp]), Dt: F32Data(in[l].dt[r.row*h : (r.row+1)*h]),
				B: F32Data(in[l].bb[r.row*gn : (r.row+1)*gn]), C: F32Data(in[l].cc[r.row*gn : (r.row+1)*gn]),
				Z: F32Data(in[l].z[r.row*hp : (r.row+1)*hp]), Y: F32Data(y)}
			checkErr(t, b.SSMStep(l, []int32{r.slot}, io, sp), nil)
			if !equalF32(co, outs[l][0][r.row*dim:(r.row+1)*dim]) || !equalF32(y, outs[l][1][r.row*hp:(r.row+1)*hp]) {
				t.Fatalf("layer %d row %d: the verify's outputs differ from the step's", l, r.row)
			}
		}
		checkErr(t, b.Advance([]int32{r.slot}, 1), nil)
	}
	if !sameState(snapshotState(t, a), snapshotState(t, b)) {
		t.Fatal("the committed cache differs from the stepped twin")
	}
	a.Close()
	checkErr(t, a.ReserveSpec(1), ErrClosed)
	checkErr(t, a.BeginSpec(nil, []uint64{0, 1}, nil), ErrClosed)
	checkErr(t, a.CommitSpec(nil, []uint32{0}), ErrClosed)
}
