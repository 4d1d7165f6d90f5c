package m2c

import (
	"errors"
	"math"
	"strings"
	"testing"
)

// smallConfig is a tiny valid shape: 2 layers, 4 slots, ConvDim 16,
// ConvWidth 4 (window 64 elements), SSM state 2*4*4 = 32 elements.
func smallConfig() Config {
	cfg := DefaultConfig()
	cfg.NumLayers = 2
	cfg.NumSlots = 4
	cfg.IntermediateSize = 8
	cfg.NumHeads = 2
	cfg.HeadDim = 4
	cfg.StateSize = 4
	cfg.NGroups = 1
	cfg.ConvKernelSize = 4
	cfg.ConvWidth = 4
	cfg.ConvDType = F32
	cfg.SSMDType = F32
	return cfg
}

func mustNew(t testing.TB, cfg Config) *Cache {
	t.Helper()
	c, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// ramp returns n float32 values base, base+1, ... (exact in bf16 and f16 for
// small integers).
func ramp(n int, base float32) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = base + float32(i%64)
	}
	return x
}

func filled(n int, v float32) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = v
	}
	return x
}

func equalF32(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] && !(math.IsNaN(float64(a[i])) && math.IsNaN(float64(b[i]))) {
			return false
		}
	}
	return true
}

// checkErr asserts that err matches want (nil: success) and, for an *Error,
// that its message names the C function that failed, which shows it was read
// on the failing thread.
func checkErr(t *testing.T, err, want error) {
	t.Helper()
	if want == nil {
		if err != nil {
			t.Fatalf("unexpected error: %v", err)
		}
		return
	}
	if !errors.Is(err, want) {
		t.Fatalf("got %v, want %v", err, want)
	}
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("%v is not an *Error", err)
	}
	if e.Op == "" || !strings.HasPrefix(e.Msg, e.Op+": ") {
		t.Fatalf("message %q does not name the failing function %q", e.Msg, e.Op)
	}
}

// state is every observable value of a cache, in f32.
type state struct {
	conv, ssm [][]float32
	pos       []uint64
	inUse     int
}

func snapshotState(t *testing.T, c *Cache) state {
	t.Helper()
	cfg := c.cfg
	var s state
	for l := 0; l < int(cfg.NumLayers); l++ {
		conv := make([]float32, int(cfg.NumSlots)*cfg.ConvWindowLen())
		ssm := make([]float32, int(cfg.NumSlots)*cfg.SSMStateLen())
		if err := c.ReadConvF32(l, nil, conv); err != nil {
			t.Fatal(err)
		}
		if err := c.ReadSSMF32(l, nil, ssm); err != nil {
			t.Fatal(err)
		}
		s.conv = append(s.conv, conv)
		s.ssm = append(s.ssm, ssm)
	}
	for slot := 0; slot < int(cfg.NumSlots); slot++ {
		p, err := c.Position(slot)
		if err != nil {
			t.Fatal(err)
		}
		s.pos = append(s.pos, p)
	}
	n, err := c.SlotsInUse()
	if err != nil {
		t.Fatal(err)
	}
	s.inUse = n
	return s
}

func sameState(a, b state) bool {
	if len(a.conv) != len(b.conv) || a.inUse != b.inUse || len(a.pos) != len(b.pos) {
		return false
	}
	for i := range a.conv {
		if !equalF32(a.conv[i], b.conv[i]) || !equalF32(a.ssm[i], b.ssm[i]) {
			return false
		}
	}
	for i := range a.pos {
		if a.pos[i] != b.pos[i] {
			return false
		}
	}
	return true
}

// fill gives every slot of every layer distinct non-zero state and position.
func fill(t *testing.T, c *Cache) {
	t.Helper()
	cfg := c.cfg
	for l := 0; l < int(cfg.NumLayers); l++ {
		for s := 0; s < int(cfg.NumSlots); s++ {
			base := float32(100*l + 10*s + 1)
			if err := c.SetConvF32(l, []int32{int32(s)}, ramp(cfg.ConvWindowLen(), base)); err != nil {
				t.Fatal(err)
			}
			if err := c.UpdateSSMF32(l, []int32{int32(s)}, ramp(cfg.SSMStateLen(), -base)); err != nil {
				t.Fatal(err)
			}
		}
	}
	for s := 0; s < int(cfg.NumSlots); s++ {
		if err := c.Advance([]int32{int32(s)}, uint32(s+1)); err != nil {
			t.Fatal(err)
		}
	}
}
