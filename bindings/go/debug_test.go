//go:build m2cdebug

package m2c

import (
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
