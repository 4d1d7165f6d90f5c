package m2c

import (
	"errors"
	"fmt"
	"math"
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
