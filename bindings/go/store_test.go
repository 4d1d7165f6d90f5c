package m2c

import (
	"errors"
	"math/rand"
	"testing"
)

// TestStoreMarshalAndMapErrors inserts, looks up and restores checkpoints
// through the binding: a restored slot equals the inserted one, lookups
// report blocks and miss reasons, refusals map to their errors, and the
// key chain matches the library's pinned values (the Rust tests pin the
// same ones).
func TestStoreMarshalAndMapErrors(t *testing.T) {
	cfg := smallConfig()
	c := mustNew(t, cfg)
	defer c.Close()
	fill(t, c)
	before := snapshotState(t, c)

	k1, err := ChainKey(nil, []int32{1, 2, 3, 4})
	checkErr(t, err, nil)
	if k1 != (Key{Lo: 0x32d9870b7fe2528a, Hi: 0x31c366485599f4b6}) {
		t.Fatalf("ChainKey(nil, 1..4) = %#x/%#x", k1.Hi, k1.Lo)
	}
	k2, err := ChainKey(&k1, []int32{5, 6})
	checkErr(t, err, nil)
	if k2 != (Key{Lo: 0xcdc49828af55421c, Hi: 0xe9de02fa0cb56ad3}) {
		t.Fatalf("ChainKey(k1, 5 6) = %#x/%#x", k2.Hi, k2.Lo)
	}

	def := DefaultStoreConfig()
	if def.BudgetBytes != 1<<30 || def.RememberMisses == 0 {
		t.Fatalf("DefaultStoreConfig() = %+v", def)
	}
	_, err = NewStore(StoreConfig{})
	checkErr(t, err, ErrInvalidArg)
	s, err := NewStore(StoreConfig{BudgetBytes: 1 << 20, RememberMisses: 16})
	checkErr(t, err, nil)
	defer s.Close()

	miss, err := s.Insert(c, 2, k1)
	checkErr(t, err, nil)
	if miss != MissNone {
		t.Fatalf("insert: %v", miss)
	}
	blocks, miss, err := s.Lookup(c, []Key{k1, k2})
	checkErr(t, err, nil)
	if blocks != 1 || miss != MissNeverStored {
		t.Fatalf("lookup = %d, %v", blocks, miss)
	}
	checkErr(t, s.Restore(k1, c, 0), nil)
	after := snapshotState(t, c)
	if !equalF32(after.ssm[1][0:cfg.SSMStateLen()], before.ssm[1][2*cfg.SSMStateLen():3*cfg.SSMStateLen()]) ||
		!equalF32(after.conv[0][0:cfg.ConvWindowLen()], before.conv[0][2*cfg.ConvWindowLen():3*cfg.ConvWindowLen()]) ||
		after.pos[0] != before.pos[2] {
		t.Fatal("the restored slot differs from the inserted one")
	}

	err = s.Restore(k2, c, 0)
	checkErr(t, err, ErrNotFound)
	var e *Error
	if !errors.As(err, &e) || e.Op != "m2c_store_restore" {
		t.Fatalf("restore of a missing key: %v", err)
	}
	checkErr(t, s.Restore(k1, c, 99), ErrOutOfRange)
	_, err = s.Insert(c, -1, k1)
	checkErr(t, err, ErrOutOfRange)
	checkErr(t, s.Pin(k1), nil)
	checkErr(t, s.Evict(k1), ErrInvalidArg)
	checkErr(t, s.Unpin(k1), nil)
	checkErr(t, s.Unpin(k1), ErrInvalidArg)
	checkErr(t, s.Evict(k1), nil)
	checkErr(t, s.Pin(k1), ErrNotFound)
	_, miss, err = s.Lookup(c, []Key{k1})
	checkErr(t, err, nil)
	if miss != MissEvicted || miss.String() != "evicted" {
		t.Fatalf("lookup after evict: %v", miss)
	}

	_, err = NewStore(StoreConfig{BudgetBytes: 1 << 20, Tier: 7})
	checkErr(t, err, ErrInvalidArg)
	// An int8 store holds a checkpoint in fewer bytes.
	small, err := NewStore(StoreConfig{BudgetBytes: 1 << 20, Tier: TierInt8})
	checkErr(t, err, nil)
	_, err = small.Insert(c, 1, k2)
	checkErr(t, err, nil)
	sst, err := small.Stats()
	checkErr(t, err, nil)
	checkErr(t, small.Restore(k2, c, 3), nil)
	checkErr(t, small.Close(), nil)
	if sst.Entries != 1 || sst.BytesHeld == 0 {
		t.Fatalf("int8 store stats = %+v", sst)
	}

	// The disk tier: a store with room for one spills the other.
	_, err = NewStore(StoreConfig{BudgetBytes: 1 << 20, SpillDir: "/nonexistent/m2c"})
	checkErr(t, err, ErrIO)
	probe, err := NewStore(DefaultStoreConfig())
	checkErr(t, err, nil)
	_, err = probe.Insert(c, 1, k1)
	checkErr(t, err, nil)
	pst, err := probe.Stats()
	checkErr(t, err, nil)
	checkErr(t, probe.Close(), nil)
	one := pst.BytesHeld // one full checkpoint
	disk, err := NewStore(StoreConfig{BudgetBytes: one + one/2, SpillDir: t.TempDir()})
	checkErr(t, err, nil)
	_, err = disk.Insert(c, 1, k1)
	checkErr(t, err, nil)
	_, err = disk.Insert(c, 2, k2)
	checkErr(t, err, nil)
	dst, err := disk.Stats()
	checkErr(t, err, nil)
	checkErr(t, disk.Restore(k1, c, 3), nil)
	checkErr(t, disk.Close(), nil)
	if dst.Spilled != 1 || dst.Spills != 1 || dst.Entries != 1 {
		t.Fatalf("disk store stats = %+v", dst)
	}

	tiny, err := NewStore(StoreConfig{BudgetBytes: 1})
	checkErr(t, err, nil)
	miss, err = tiny.Insert(c, 0, k1)
	checkErr(t, err, nil)
	if miss != MissTooLarge {
		t.Fatalf("insert into a 1-byte store: %v", miss)
	}
	checkErr(t, tiny.Close(), nil)
	_, _, err = tiny.Lookup(c, nil)
	checkErr(t, err, ErrClosed)

	st, err := s.Stats()
	checkErr(t, err, nil)
	if st.Inserts != 1 || st.Restores != 1 || st.Evictions != 1 || st.Entries != 0 || st.Hits != 1 ||
		st.Misses[MissNeverStored] != 1 || st.Misses[MissEvicted] != 1 || st.BudgetBytes != 1<<20 {
		t.Fatalf("stats = %+v", st)
	}
}

// TestCaptureMarshalAndMapErrors declares checkpoints, prefills through
// them in two chunks, and checks that each restores to the state of a
// cache that prefilled only the prefix; refusals map to their errors.
func TestCaptureMarshalAndMapErrors(t *testing.T) {
	cfg := kernelConfig(4, BF16, F32)
	a, ref := mustNew(t, cfg), mustNew(t, cfg)
	defer a.Close()
	defer ref.Close()
	s, err := NewStore(DefaultStoreConfig())
	checkErr(t, err, nil)
	defer s.Close()
	dim, hp, h, gn := cfg.ConvDim(), int(cfg.NumHeads*cfg.HeadDim), int(cfg.NumHeads), int(cfg.NGroups*cfg.StateSize)
	const T = 6
	rng := rand.New(rand.NewSource(9))
	type layerIn struct{ x, sx, dt, bb, cc []float32 }
	in := make([]layerIn, cfg.NumLayers)
	for l := range in {
		in[l] = layerIn{rnd(rng, T*dim, -1, 1), rnd(rng, T*hp, -1, 1), rnd(rng, T*h, -1, 1), rnd(rng, T*gn, -1, 1), rnd(rng, T*gn, -1, 1)}
	}
	cp := DefaultConvParams()
	cp.Weight = rnd(rng, dim*4, -0.5, 0.5)
	sp := DefaultSSMParams()
	sp.A = rnd(rng, h, -1, -0.1)
	run := func(c *Cache, a, b int) {
		for l := range in {
			out, y := make([]float32, (b-a)*dim), make([]float32, (b-a)*hp)
			cu := []uint64{0, uint64(b - a)}
			checkErr(t, c.ConvPrefill(l, []int32{2}, cu, F32Data(in[l].x[a*dim:b*dim]), F32Data(out), cp), nil)
			io := SSMIO{X: F32Data(in[l].sx[a*hp : b*hp]), Dt: F32Data(in[l].dt[a*h : b*h]), B: F32Data(in[l].bb[a*gn : b*gn]), C: F32Data(in[l].cc[a*gn : b*gn]), Y: F32Data(y)}
			checkErr(t, c.SSMPrefill(l, []int32{2}, cu, io, sp), nil)
		}
	}
	k, err := ChainKey(nil, []int32{4, 4})
	checkErr(t, err, nil)
	checkErr(t, a.CaptureBegin(s, []CapturePoint{{Slot: 2, Tokens: 0, Key: k}}), ErrInvalidArg)
	checkErr(t, a.CaptureBegin(s, []CapturePoint{{Slot: 99, Tokens: 1, Key: k}}), ErrOutOfRange)
	checkErr(t, a.CaptureBegin(s, []CapturePoint{{Slot: 2, Tokens: 4, Key: k}}), nil)
	run(a, 0, 3)
	_, err = a.CaptureEnd(s, 1)
	checkErr(t, err, ErrInvalidArg) // not reached yet
	_, err = a.CaptureEnd(s, 2)
	checkErr(t, err, ErrShapeMismatch)
	run(a, 3, T)
	misses, err := a.CaptureEnd(s, 1)
	checkErr(t, err, nil)
	if len(misses) != 1 || misses[0] != MissNone {
		t.Fatalf("CaptureEnd = %v", misses)
	}
	run(ref, 0, 4)
	checkErr(t, s.Restore(k, a, 0), nil)
	want, got := make([]float32, cfg.SSMStateLen()), make([]float32, cfg.SSMStateLen())
	for l := range in {
		checkErr(t, ref.ReadSSMF32(l, []int32{2}, want), nil)
		checkErr(t, a.ReadSSMF32(l, []int32{0}, got), nil)
		if !equalF32(want, got) {
			t.Fatalf("layer %d: the captured state differs from the 4-token prefix state", l)
		}
	}
}
