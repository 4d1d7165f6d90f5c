package m2c

import (
	"errors"
	"fmt"
	"math"
	"math/rand"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestConcurrentDisjointSlots has one goroutine per slot hammer its own slot
// of one shared cache through every batched call, then checks every slot
// holds exactly what its goroutine wrote. Run it under -race.
func TestConcurrentDisjointSlots(t *testing.T) {
	cfg := smallConfig()
	cfg.NumSlots = 32
	cfg.ConvDType = BF16
	c := mustNew(t, cfg)
	iters := 40
	if debugBuild {
		iters = 4
	}
	dim, wl, sl := cfg.ConvDim(), cfg.ConvWindowLen(), cfg.SSMStateLen()
	var wg sync.WaitGroup
	errs := make(chan error, cfg.NumSlots)
	for s := 0; s < int(cfg.NumSlots); s++ {
		wg.Add(1)
		go func(slot int32) {
			defer wg.Done()
			one := []int32{slot}
			win := make([]float32, wl)
			st := make([]float32, sl)
			for it := 0; it < iters; it++ {
				v := float32(slot*64 + int32(it%64)) // conv storage is bf16: rounded, see bf16Round
				layer := it % int(cfg.NumLayers)
				if err := c.UpdateConvF32(layer, one, filled(dim, v)); err != nil {
					errs <- err
					return
				}
				if err := c.UpdateSSMF32(layer, one, filled(sl, -v)); err != nil {
					errs <- err
					return
				}
				if err := c.Advance(one, 1); err != nil {
					errs <- err
					return
				}
				if err := c.ReadSSMF32(layer, one, st); err != nil {
					errs <- err
					return
				}
				if st[0] != -v || st[sl-1] != -v {
					errs <- fmt.Errorf("slot %d read %v, wrote %v", slot, st[0], -v)
					return
				}
				if err := c.ReadConvF32(layer, one, win); err != nil {
					errs <- err
					return
				}
			}
		}(int32(s))
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// Every slot: position iters, newest conv column and SSM state of each
	// layer from that slot's own last writes.
	st := snapshotState(t, c)
	w := int(cfg.ConvWidth)
	for s := 0; s < int(cfg.NumSlots); s++ {
		if st.pos[s] != uint64(iters) {
			t.Fatalf("slot %d position %d, want %d", s, st.pos[s], iters)
		}
		for l := 0; l < int(cfg.NumLayers); l++ {
			last := iters - 1
			for last%int(cfg.NumLayers) != l {
				last--
			}
			want := bf16Round(float32(s*64 + last%64))
			conv := st.conv[l][s*wl : (s+1)*wl]
			if conv[w-1] != want || conv[(dim-1)*w+w-1] != want {
				t.Fatalf("slot %d layer %d newest conv %v, want %v", s, l, conv[w-1], want)
			}
			if got := st.ssm[l][s*sl]; got != -float32(s*64+last%64) {
				t.Fatalf("slot %d layer %d ssm %v", s, l, got)
			}
		}
	}
}

// bf16Round rounds a float32 to bfloat16, to nearest even (finite inputs).
func bf16Round(f float32) float32 {
	b := math.Float32bits(f)
	b += 0x7FFF + (b>>16)&1
	return math.Float32frombits(b &^ 0xFFFF)
}

// TestConcurrentAcquireNeverSharesASlot races more goroutines than slots
// on acquire/release and checks no slot is ever held twice.
func TestConcurrentAcquireNeverSharesASlot(t *testing.T) {
	cfg := smallConfig()
	cfg.NumSlots = 8
	c := mustNew(t, cfg)
	var held [8]atomic.Int32
	rounds := 200
	if debugBuild {
		rounds = 10
	}
	var wg sync.WaitGroup
	var failures atomic.Int32
	for g := 0; g < 24; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < rounds; i++ {
				s, err := c.AcquireSlot()
				if errors.Is(err, ErrNoFreeSlot) {
					continue
				}
				if err != nil || held[s].Add(1) != 1 {
					failures.Add(1)
					return
				}
				held[s].Add(-1)
				if err := c.ReleaseSlot(s); err != nil {
					failures.Add(1)
					return
				}
			}
		}()
	}
	wg.Wait()
	if failures.Load() != 0 {
		t.Fatalf("%d failures", failures.Load())
	}
	if n, _ := c.SlotsInUse(); n != 0 {
		t.Fatalf("SlotsInUse = %d at the end", n)
	}
}

// TestConcurrentErrorMessagesStayWithTheirCall has many goroutines fail
// with distinct inputs at once: each must get its own call's message, which
// holds only if the message is read on the thread that failed.
func TestConcurrentErrorMessagesStayWithTheirCall(t *testing.T) {
	cfg := smallConfig()
	c := mustNew(t, cfg)
	rounds := 200
	if debugBuild {
		rounds = 5
	}
	var wg sync.WaitGroup
	bad := make(chan string, 64)
	for g := 0; g < 64; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			slot := int32(100 + g)
			for i := 0; i < rounds; i++ {
				err := c.Reset([]int32{slot})
				var e *Error
				if !errors.As(err, &e) || !strings.Contains(e.Msg, fmt.Sprintf("= %d ", slot)) {
					bad <- fmt.Sprintf("goroutine %d got %v", g, err)
					return
				}
			}
		}(g)
	}
	wg.Wait()
	close(bad)
	for m := range bad {
		t.Fatal(m)
	}
}

// TestCloseWhileInUse closes a cache while other goroutines call it: each
// call either succeeds or fails with ErrClosed, and nothing crashes.
func TestCloseWhileInUse(t *testing.T) {
	c, err := New(smallConfig())
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var calls atomic.Int64
	start := make(chan struct{})
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			<-start
			out := make([]float32, c.cfg.SSMStateLen())
			for {
				err := c.ReadSSMF32(g%2, []int32{int32(g % 4)}, out)
				calls.Add(1)
				if errors.Is(err, ErrClosed) {
					return
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		}(g)
	}
	close(start)
	for deadline := time.Now().Add(5 * time.Second); calls.Load() < 100 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond) // let the readers run
	}
	var cw sync.WaitGroup
	for i := 0; i < 4; i++ {
		cw.Add(1)
		go func() { defer cw.Done(); c.Close() }()
	}
	cw.Wait()
	wg.Wait()
}

// kernelWork is one goroutine's share of TestConcurrentKernelsOnDisjointSlots:
// decode steps and prefill chunks of both kernels on slot, with inputs drawn
// from a generator seeded by the slot. It returns every output, in order.
func kernelWork(c *Cache, slot int32, iters int, cp ConvParams, sp SSMParams) ([]float32, error) {
	cfg := c.cfg
	rng := rand.New(rand.NewSource(int64(slot)))
	dim, h, hd, gn := cfg.ConvDim(), int(cfg.NumHeads), int(cfg.NumHeads*cfg.HeadDim), int(cfg.NGroups*cfg.StateSize)
	var outs []float32
	for it := 0; it < iters; it++ {
		layer, tok := it%int(cfg.NumLayers), 1+it%3
		x, out := rnd(rng, tok*dim, -2, 2), make([]float32, tok*dim)
		io := SSMIO{X: F32Data(rnd(rng, tok*hd, -1, 1)), Dt: F32Data(rnd(rng, tok*h, -2, 1)), B: F32Data(rnd(rng, tok*gn, -1, 1)),
			C: F32Data(rnd(rng, tok*gn, -1, 1)), Z: F32Data(rnd(rng, tok*hd, -2, 2))}
		y := make([]float32, tok*hd)
		io.Y = F32Data(y)
		var err error
		if tok == 1 {
			if err = c.ConvStepF32(layer, []int32{slot}, x, out, cp); err == nil {
				err = c.SSMStep(layer, []int32{slot}, io, sp)
			}
		} else {
			cu := []uint64{0, 0, uint64(tok)} // a padding sequence with no tokens first
			if err = c.ConvPrefillF32(layer, []int32{-1, slot}, cu, x, out, cp); err == nil {
				err = c.SSMPrefill(layer, []int32{-1, slot}, cu, io, sp)
			}
		}
		if err == nil {
			err = c.Advance([]int32{slot}, uint32(tok))
		}
		if err != nil {
			return nil, err
		}
		outs = append(append(outs, out...), y...)
	}
	return outs, nil
}

// TestConcurrentKernelsOnDisjointSlots runs the four kernels from one
// goroutine per slot on a shared cache, with parameter slices shared by
// every goroutine (so they are pinned by many calls at once), and checks
// every output and the final state against the same work done serially.
// Run it under -race.
func TestConcurrentKernelsOnDisjointSlots(t *testing.T) {
	cfg := kernelConfig(3, BF16, F32)
	cfg.NumSlots = 16
	iters := 24
	if debugBuild {
		iters = 3
	}
	cp, sp := kernelParams(rand.New(rand.NewSource(99)), cfg)
	shared, serial := mustNew(t, cfg), mustNew(t, cfg)
	got := make([][]float32, cfg.NumSlots)
	errs := make([]error, cfg.NumSlots)
	var wg sync.WaitGroup
	for s := range got {
		wg.Add(1)
		go func(s int) {
			defer wg.Done()
			got[s], errs[s] = kernelWork(shared, int32(s), iters, cp, sp)
		}(s)
	}
	wg.Wait()
	for s := range got {
		if errs[s] != nil {
			t.Fatalf("slot %d: %v", s, errs[s])
		}
		want, err := kernelWork(serial, int32(s), iters, cp, sp)
		if err != nil {
			t.Fatal(err)
		}
		if !equalF32(got[s], want) {
			t.Fatalf("slot %d: concurrent outputs differ from serial ones", s)
		}
	}
	if !sameState(snapshotState(t, shared), snapshotState(t, serial)) {
		t.Fatal("the concurrent cache differs from the serial one")
	}
}
