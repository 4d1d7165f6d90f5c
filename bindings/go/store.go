package m2c

/*
#include <stdlib.h>
#include "m2c.h"
*/
import "C"

import (
	"runtime"
	"sync"
	"unsafe"
)

// Key is a 128-bit prefix-store key (m2c_key).
type Key struct{ Lo, Hi uint64 }

func (k Key) toC() C.m2c_key { return C.m2c_key{lo: C.uint64_t(k.Lo), hi: C.uint64_t(k.Hi)} }

// ChainKey returns the key of a block of token ids that follows the block
// keyed *prev (nil: the prompt's first block), m2c_key_chain: chain it over
// a prompt's blocks to get the keys [Store.Lookup] takes. Equal keys mean
// equal token prefixes (up to 128-bit collisions); the hash never changes
// across releases.
func ChainKey(prev *Key, tokens []int32) (Key, error) {
	var pc *C.m2c_key
	if prev != nil {
		p := prev.toC()
		pc = &p
	}
	var tp *C.int32_t
	if len(tokens) > 0 {
		tp = (*C.int32_t)(unsafe.Pointer(unsafe.SliceData(tokens)))
	}
	var out C.m2c_key
	err := callC("m2c_key_chain", func() C.m2c_status { return C.m2c_key_chain(pc, tp, C.size_t(len(tokens)), &out) })
	runtime.KeepAlive(tokens)
	runtime.KeepAlive(pc)
	if err != nil {
		return Key{}, err
	}
	return Key{Lo: uint64(out.lo), Hi: uint64(out.hi)}, nil
}

// Miss says why a key has no usable checkpoint (M2C_MISS_*).
type Miss int32

// The miss reasons.
const (
	MissNone         Miss = C.M2C_MISS_NONE         // not a miss
	MissNeverStored  Miss = C.M2C_MISS_NEVER_STORED // nothing stored under the key (or forgotten)
	MissEvicted      Miss = C.M2C_MISS_EVICTED      // evicted for room or by Evict
	MissTooLarge     Miss = C.M2C_MISS_TOO_LARGE    // an insert did not fit the budget
	MissIncompatible Miss = C.M2C_MISS_INCOMPATIBLE // made by a cache of another shape or dtype
	MissCorrupt      Miss = C.M2C_MISS_CORRUPT      // damaged bytes
)

// String returns the library's description (m2c_miss_str).
func (m Miss) String() string { return C.GoString(C.m2c_miss_str(C.m2c_miss(m))) }

// StoreConfig holds the options of [NewStore].
type StoreConfig struct {
	// BudgetBytes is the most bytes of checkpoints held at once (> 0).
	BudgetBytes uint64
	// RememberMisses is how many missed keys keep their reason (0: none).
	RememberMisses uint64
	// Tier is the precision of the checkpoints' SSM states.
	Tier Tier
	// SpillDir, if not empty, is an existing directory where checkpoints
	// evicted for room are kept as files (the disk tier).
	SpillDir string
}

// Tier is the precision a store keeps SSM states in (M2C_TIER_*).
type Tier uint32

// The tiers.
const (
	TierFull Tier = C.M2C_TIER_FULL // as stored: restores are bit-exact
	TierBF16 Tier = C.M2C_TIER_BF16 // bf16: half of an f32 state
	TierInt8 Tier = C.M2C_TIER_INT8 // int8 with a scale per (head, state channel)
)

// DefaultStoreConfig returns the library's defaults (m2c_store_config_init):
// a 1 GiB budget, 65536 remembered misses.
func DefaultStoreConfig() StoreConfig {
	var c C.m2c_store_config
	C.m2c_store_config_init(&c)
	return StoreConfig{BudgetBytes: uint64(c.budget_bytes), RememberMisses: uint64(c.remember_misses), Tier: Tier(c.tier)}
}

// Store is a prefix store (m2c_store): checkpoints of slots under 128-bit
// keys, within a memory budget, shared by any caches of one shape. Create
// it with [NewStore] and free it with [Store.Close]. All methods may be
// called from many goroutines at once.
type Store struct {
	mu sync.RWMutex // guards h, as Cache.mu does
	h  *C.m2c_store
}

// NewStore creates an empty store (m2c_store_create).
//
// Errors: ErrInvalidArg (a zero budget, an unknown tier), ErrIO (SpillDir
// is not an existing directory), ErrOutOfMemory.
func NewStore(cfg StoreConfig) (*Store, error) {
	var c C.m2c_store_config
	C.m2c_store_config_init(&c)
	c.budget_bytes = C.uint64_t(cfg.BudgetBytes)
	c.remember_misses = C.uint64_t(cfg.RememberMisses)
	c.tier = C.m2c_tier(cfg.Tier)
	if cfg.SpillDir != "" {
		dir := C.CString(cfg.SpillDir)
		defer C.free(unsafe.Pointer(dir))
		c.spill_dir = dir
	}
	var h *C.m2c_store
	if err := callC("m2c_store_create", func() C.m2c_status { return C.m2c_store_create(&c, &h) }); err != nil {
		return nil, err
	}
	s := &Store{h: h}
	runtime.SetFinalizer(s, func(s *Store) { s.Close() })
	return s, nil
}

// Close frees the store and its checkpoints (m2c_store_destroy); it waits
// for calls in progress and may be called any number of times. Later calls
// fail with ErrClosed.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.h != nil {
		C.m2c_store_destroy(s.h)
		s.h = nil
		runtime.SetFinalizer(s, nil)
	}
	return nil
}

// do runs one C call on the open store and, if c is not nil, the open
// cache, holding both read locks so that neither is closed meanwhile.
func (s *Store) do(op string, c *Cache, call func(hs *C.m2c_store, hc *C.m2c_cache) C.m2c_status) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.h == nil {
		return &Error{Code: StatusNullArg, Op: op, Msg: op + ": the store is closed", wrapped: ErrClosed}
	}
	var hc *C.m2c_cache
	if c != nil {
		c.mu.RLock()
		defer c.mu.RUnlock()
		if hc = c.handle(); hc == nil {
			return closedError(op)
		}
	}
	hs := s.h
	err := callC(op, func() C.m2c_status { return call(hs, hc) })
	runtime.KeepAlive(s)
	runtime.KeepAlive(c)
	return err
}

// Insert stores the state of slot of c (every layer, and its position)
// under key (m2c_store_insert), evicting least recently used unpinned
// checkpoints for room. A checkpoint that cannot fit is not an error: it
// returns MissTooLarge and stores nothing.
//
// Errors: ErrOutOfRange (slot), ErrInvalidArg (a pinned checkpoint under
// key), ErrOutOfMemory, ErrClosed.
func (s *Store) Insert(c *Cache, slot int, key Key) (Miss, error) {
	const op = "m2c_store_insert"
	sl, err := slotArg(op, slot)
	if err != nil {
		return MissNone, err
	}
	k := key.toC()
	var miss C.m2c_miss
	err = s.do(op, c, func(hs *C.m2c_store, hc *C.m2c_cache) C.m2c_status {
		return C.m2c_store_insert(hs, hc, sl, &k, &miss)
	})
	return Miss(miss), err
}

// Lookup finds the longest cached prefix of a prompt whose block keys are
// keys (m2c_store_lookup), among checkpoints usable by c: blocks leading
// blocks are covered (keys[blocks-1] is the one to restore; 0: none) and
// miss says why keys[blocks] is not (MissNone when all are).
//
// Errors: ErrClosed.
func (s *Store) Lookup(c *Cache, keys []Key) (blocks int, miss Miss, err error) {
	ks := make([]C.m2c_key, len(keys))
	for i, k := range keys {
		ks[i] = k.toC()
	}
	var kp *C.m2c_key
	if len(ks) > 0 {
		kp = &ks[0]
	}
	var out C.m2c_lookup
	C.m2c_lookup_init(&out)
	err = s.do("m2c_store_lookup", c, func(hs *C.m2c_store, hc *C.m2c_cache) C.m2c_status {
		return C.m2c_store_lookup(hs, hc, kp, C.size_t(len(ks)), &out)
	})
	runtime.KeepAlive(ks)
	if err != nil {
		return 0, MissNone, err
	}
	return int(out.blocks), Miss(out.miss), nil
}

// Restore puts the checkpoint under key into slot of c (m2c_store_restore):
// the slot's state in every layer and its position become the
// checkpoint's.
//
// Errors: ErrNotFound (no checkpoint: the message gives the reason),
// ErrIncompatible (another shape or dtype), ErrOutOfRange (slot),
// ErrClosed.
func (s *Store) Restore(key Key, c *Cache, slot int) error {
	const op = "m2c_store_restore"
	sl, err := slotArg(op, slot)
	if err != nil {
		return err
	}
	k := key.toC()
	return s.do(op, c, func(hs *C.m2c_store, hc *C.m2c_cache) C.m2c_status {
		return C.m2c_store_restore(hs, &k, hc, sl)
	})
}

// Pin keeps the checkpoint under key from eviction and replacement until
// a matching [Store.Unpin] (m2c_store_pin).
//
// Errors: ErrNotFound, ErrClosed.
func (s *Store) Pin(key Key) error { return s.keyCall("m2c_store_pin", key) }

// Unpin drops one pin (m2c_store_unpin).
//
// Errors: ErrNotFound, ErrInvalidArg (not pinned), ErrClosed.
func (s *Store) Unpin(key Key) error { return s.keyCall("m2c_store_unpin", key) }

// Evict drops the checkpoint under key now (m2c_store_evict).
//
// Errors: ErrNotFound, ErrInvalidArg (pinned), ErrClosed.
func (s *Store) Evict(key Key) error { return s.keyCall("m2c_store_evict", key) }

func (s *Store) keyCall(op string, key Key) error {
	k := key.toC()
	return s.do(op, nil, func(hs *C.m2c_store, _ *C.m2c_cache) C.m2c_status {
		switch op {
		case "m2c_store_pin":
			return C.m2c_store_pin(hs, &k)
		case "m2c_store_unpin":
			return C.m2c_store_unpin(hs, &k)
		default:
			return C.m2c_store_evict(hs, &k)
		}
	})
}

// StoreStats are a store's counters and occupancy (m2c_store_stats).
type StoreStats struct {
	Entries, BytesHeld, BudgetBytes, Pinned, Inserts, Hits uint64
	// Misses counts lookups that did not cover every block, by the reason
	// of the first block not covered (index: the Miss value).
	Misses              [6]uint64
	Evictions, Restores uint64
	// Spilled checkpoints are on disk now; Spills counts evictions that
	// wrote one there.
	Spilled, Spills uint64
}

// Stats returns the counters (m2c_store_get_stats).
//
// Errors: ErrClosed.
func (s *Store) Stats() (StoreStats, error) {
	var out C.m2c_store_stats
	C.m2c_store_stats_init(&out)
	err := s.do("m2c_store_get_stats", nil, func(hs *C.m2c_store, _ *C.m2c_cache) C.m2c_status {
		return C.m2c_store_get_stats(hs, &out)
	})
	if err != nil {
		return StoreStats{}, err
	}
	return StoreStats{
		Entries: uint64(out.entries), BytesHeld: uint64(out.bytes_held), BudgetBytes: uint64(out.budget_bytes),
		Pinned: uint64(out.pinned), Inserts: uint64(out.inserts), Hits: uint64(out.hits),
		Misses: [6]uint64{0, uint64(out.misses_never_stored), uint64(out.misses_evicted),
			uint64(out.misses_too_large), uint64(out.misses_incompatible), uint64(out.misses_corrupt)},
		Evictions: uint64(out.evictions), Restores: uint64(out.restores),
		Spilled: uint64(out.spilled), Spills: uint64(out.spills),
	}, nil
}

// CapturePoint declares a checkpoint to capture inside prefills: the
// state of Slot after Tokens (>= 1) more prompt tokens, kept under Key.
type CapturePoint struct {
	Slot   int32
	Tokens uint64
	Key    Key
}

// CaptureBegin declares checkpoints to capture inside the prefill calls
// that follow, for store s (m2c_capture_begin), replacing any earlier
// declaration; nil
// cancels. Where a point falls inside a prefill call, the slot's sequence
// runs in segments cut there and the layer's state is copied, in the same
// pass (bit-identical to a prompt that stopped there).
//
// Errors: ErrOutOfRange (a slot), ErrInvalidArg (Tokens of 0, a point
// listed twice), ErrOutOfMemory, ErrClosed.
func (c *Cache) CaptureBegin(s *Store, points []CapturePoint) error {
	ps := make([]C.m2c_capture_point, len(points))
	for i, p := range points {
		ps[i] = C.m2c_capture_point{slot: C.int32_t(p.Slot), tokens: C.uint64_t(p.Tokens), key: p.Key.toC()}
	}
	var pp *C.m2c_capture_point
	if len(ps) > 0 {
		pp = &ps[0]
	}
	err := s.do("m2c_capture_begin", c, func(hs *C.m2c_store, hc *C.m2c_cache) C.m2c_status {
		return C.m2c_capture_begin(hc, hs, pp, C.size_t(len(ps)))
	})
	runtime.KeepAlive(ps)
	return err
}

// CaptureEnd puts the n points declared by [Cache.CaptureBegin] into s
// (m2c_capture_end) and returns, per point, MissNone or MissTooLarge.
//
// Errors: ErrInvalidArg (a point some layer's prefill has not reached: the
// capture stays declared), ErrShapeMismatch (n is not the number of
// points), ErrClosed.
func (c *Cache) CaptureEnd(s *Store, n int) ([]Miss, error) {
	out := make([]C.m2c_miss, n)
	var op *C.m2c_miss
	if n > 0 {
		op = &out[0]
	}
	err := s.do("m2c_capture_end", c, func(hs *C.m2c_store, hc *C.m2c_cache) C.m2c_status {
		return C.m2c_capture_end(hc, hs, op, C.size_t(n))
	})
	runtime.KeepAlive(out)
	if err != nil {
		return nil, err
	}
	misses := make([]Miss, n)
	for i, m := range out {
		misses[i] = Miss(m)
	}
	return misses, nil
}
