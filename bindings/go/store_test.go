package m2c

import (
	"errors"
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
