//go:build m2cdebug

package m2c

import (
	"math/rand"
	"runtime"
	"testing"
	"time"
)

// These tests run only in the m2cdebug build, where every C call is
// preceded by a full GC: a Go buffer or Cache that is not kept alive across
// a call would be collected (and a cache destroyed by its finalizer) while C
// uses it.

func TestDebugBuildForcesGC(t *testing.T) {
	if !debugBuild {
		t.Fatal("m2cdebug tag set but debugBuild is false")
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	c := mustNew(t, smallConfig())
	if _, err := c.Position(0); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	if after.NumGC <= before.NumGC {
		t.Fatal("no GC ran around the calls")
	}
}

// newUnreferenced creates a cache that nothing references once it returns.
func newUnreferenced(t *testing.T) {
	c, err := New(smallConfig())
	if err != nil {
		t.Fatal(err)
	}
	if err := c.UpdateSSMF32(0, nil, filled(c.cfg.SSMStateLen(), 1)); err != nil {
		t.Fatal(err)
	}
}

func TestFinalizerFreesAnUnclosedCache(t *testing.T) {
	start := finalized.Load()
	for i := 0; i < 10; i++ {
		newUnreferenced(t)
	}
	deadline := time.Now().Add(10 * time.Second)
	for finalized.Load()-start < 10 && time.Now().Before(deadline) {
		runtime.GC()
		time.Sleep(time.Millisecond)
	}
	if n := finalized.Load() - start; n < 10 {
		t.Fatalf("only %d of 10 unclosed caches were finalized", n)
	}
}

func TestClosedCacheIsNotFinalizedAgain(t *testing.T) {
	start := finalized.Load()
	for i := 0; i < 10; i++ {
		c, err := New(smallConfig())
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	for i := 0; i < 5; i++ {
		runtime.GC()
		time.Sleep(time.Millisecond)
	}
	if n := finalized.Load() - start; n != 0 {
		t.Fatalf("%d closed caches reached the finalizer", n)
	}
}

// TestCacheUsedOnlyByTheCall makes calls on caches that nothing else
// references: the receiver must stay alive until each C call returns.
func TestCacheUsedOnlyByTheCall(t *testing.T) {
	for i := 0; i < 20; i++ {
		cache, err := New(smallConfig())
		if err != nil {
			t.Fatal(err)
		}
		out := make([]float32, smallConfig().SSMStateLen())
		if err := cache.ReadSSMF32(1, []int32{3}, out); err != nil { // last use of cache
			t.Fatal(err)
		}
	}
}

// scratch returns a fresh buffer nothing else references, so a GC between
// building the call and the C call would free it if it were not kept alive.
func scratch(n int, v float32) []float32 { return filled(n, v) }

func TestTemporaryBuffersSurviveTheCall(t *testing.T) {
	cfg := smallConfig()
	c := mustNew(t, cfg)
	for i := 0; i < 50; i++ {
		v := float32(i)
		if err := c.SetConvF32(i%2, []int32{int32(i % 4)}, scratch(cfg.ConvWindowLen(), v)); err != nil {
			t.Fatal(err)
		}
		if err := c.UpdateSSM(i%2, []int32{int32(i % 4)}, F32Data(scratch(cfg.SSMStateLen(), -v))); err != nil {
			t.Fatal(err)
		}
		_ = make([]byte, 1<<16) // garbage between calls
		out := make([]float32, cfg.ConvWindowLen())
		if err := c.ReadConvF32(i%2, []int32{int32(i % 4)}, out); err != nil {
			t.Fatal(err)
		}
		st := make([]float32, cfg.SSMStateLen())
		if err := c.ReadSSMF32(i%2, []int32{int32(i % 4)}, st); err != nil {
			t.Fatal(err)
		}
		if !equalF32(out, filled(len(out), v)) || !equalF32(st, filled(len(st), -v)) {
			t.Fatalf("iteration %d: state differs after GC", i)
		}
		snap, err := c.SaveSlot(i % 4)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.LoadSlot((i+1)%4, append([]byte(nil), snap...)); err != nil {
			t.Fatal(err)
		}
	}
}

// TestKernelTemporariesSurviveTheCall passes the kernels buffers and
// parameters that nothing references after the call is set up, some only
// through the argument structs (m2c_conv_args, m2c_ssm_io), and compares
// the results with the same calls on buffers that stay referenced.
func TestKernelTemporariesSurviveTheCall(t *testing.T) {
	cfg := kernelConfig(4, F32, F32)
	a, b := mustNew(t, cfg), mustNew(t, cfg)
	dim, hd := cfg.ConvDim(), int(cfg.NumHeads*cfg.HeadDim)
	for i := 0; i < 10; i++ {
		seed := int64(i)
		cp, sp := kernelParams(rand.New(rand.NewSource(seed)), cfg)
		tk := randomTokens(rand.New(rand.NewSource(seed)), cfg, F32, 2)
		want := runPrefill(t, b, F32, i%2, []int32{int32(i % 4)}, []uint64{0, 2}, tk, cp, sp)

		out, y := make([]float32, 2*dim), make([]float32, 2*hd)
		fresh := func() (ConvParams, SSMParams, tokens) {
			cp, sp := kernelParams(rand.New(rand.NewSource(seed)), cfg)
			return cp, sp, randomTokens(rand.New(rand.NewSource(seed)), cfg, F32, 2)
		}
		cp2, _, tk2 := fresh()
		if err := a.ConvPrefillF32(i%2, []int32{int32(i % 4)}, []uint64{0, 2}, tk2.x, out, cp2); err != nil {
			t.Fatal(err)
		}
		_ = make([]byte, 1<<16) // garbage between calls
		_, sp2, tk3 := fresh()
		io := SSMIO{X: F32Data(tk3.sx), Dt: F32Data(tk3.dt), B: F32Data(tk3.b), C: F32Data(tk3.c), Z: F32Data(tk3.z), Y: F32Data(y)}
		if err := a.SSMPrefill(i%2, []int32{int32(i % 4)}, []uint64{0, 2}, io, sp2); err != nil {
			t.Fatal(err)
		}
		if !sameBits(out, want.conv) || !sameBits(y, want.y) {
			t.Fatalf("iteration %d: outputs differ after GC", i)
		}
	}
	sameLayer(t, a, b, 0)
	sameLayer(t, a, b, 1)

	// A cache used only by a kernel call must stay alive until it returns.
	for i := 0; i < 10; i++ {
		cache, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		cp, _ := kernelParams(rand.New(rand.NewSource(1)), cfg)
		if err := cache.ConvStepF32(1, []int32{3}, filled(dim, 1), make([]float32, dim), cp); err != nil { // last use of cache
			t.Fatal(err)
		}
	}
}
