package m2c

// #include <stdlib.h>
// #include "m2c.h"
import "C"

import (
	"runtime"
	"strings"
	"unsafe"
)

// AcquireSlot hands out the lowest free slot, zeroed in every layer with
// position 0, which counts as in use until [Cache.ReleaseSlot]
// (m2c_slot_acquire). Engines that manage slots themselves can ignore
// acquire/release. Errors: ErrNoFreeSlot, ErrPoisoned, ErrClosed. Two
// goroutines never get the same slot.
func (c *Cache) AcquireSlot() (int, error) {
	var out C.int32_t
	err := c.do("m2c_slot_acquire", func(h *C.m2c_cache) C.m2c_status { return C.m2c_slot_acquire(h, &out) })
	runtime.KeepAlive(&out)
	if err != nil {
		return 0, err
	}
	return int(out), nil
}

// ReleaseSlot returns slot to the free list (m2c_slot_release); its state
// stays until the next acquire zeroes it. Errors: ErrInvalidArg (the slot is
// not in use: a double release), ErrOutOfRange, ErrPoisoned, ErrClosed.
func (c *Cache) ReleaseSlot(slot int) error {
	s, err := slotArg("m2c_slot_release", slot)
	if err != nil {
		return err
	}
	return c.do("m2c_slot_release", func(h *C.m2c_cache) C.m2c_status { return C.m2c_slot_release(h, s) })
}

// SlotsInUse returns the number of acquired slots (m2c_slots_in_use).
func (c *Cache) SlotsInUse() (int, error) {
	var out C.uint32_t
	err := c.do("m2c_slots_in_use", func(h *C.m2c_cache) C.m2c_status { return C.m2c_slots_in_use(h, &out) })
	runtime.KeepAlive(&out)
	if err != nil {
		return 0, err
	}
	return int(out), nil
}

// CopySlots forks and reorders states (m2c_copy_slots): slot dst[i] receives
// the state (every layer) and position of slot src[i], as if all reads
// happened before any write, so permutations and overlapping sets are
// correct. A negative dst[i] is padding. src and dst must have the same
// length (ErrShapeMismatch otherwise, checked in Go). Errors also:
// ErrInvalidArg (a destination listed twice), ErrOutOfRange, ErrPoisoned,
// ErrClosed; on failure nothing changes.
func (c *Cache) CopySlots(src, dst []int32) error {
	const op = "m2c_copy_slots"
	if len(src) != len(dst) {
		return goError(StatusShapeMismatch, op, "len(src) = %d differs from len(dst) = %d", len(src), len(dst))
	}
	sp, dp := slotsPtr(src), slotsPtr(dst)
	err := c.do(op, func(h *C.m2c_cache) C.m2c_status { return C.m2c_copy_slots(h, sp, dp, C.size_t(len(src))) })
	runtime.KeepAlive(src)
	runtime.KeepAlive(dst)
	return err
}

// CountNonfinite returns the number of NaN and infinite elements in the
// state of slot, its conv windows and SSM states in every layer
// (m2c_count_nonfinite); 0 means the sequence is numerically healthy.
// Non-finite inputs never reach another slot, but the recurrence carries
// them forward in their own slot until it is reset or reloaded: call this
// after a step that produced NaN outputs to decide whether to drop the
// sequence. Works on a poisoned cache. Errors: ErrOutOfRange, ErrClosed.
func (c *Cache) CountNonfinite(slot int) (uint64, error) {
	return c.countNonfinite("m2c_count_nonfinite", slot, func(h *C.m2c_cache, s C.int32_t, out *C.uint64_t) C.m2c_status {
		return C.m2c_count_nonfinite(h, s, out)
	})
}

// CheckFinite is [Cache.CountNonfinite] under its first name
// (m2c_check_finite): it returns a count.
//
// Deprecated: use [Cache.CountNonfinite].
func (c *Cache) CheckFinite(slot int) (uint64, error) {
	return c.countNonfinite("m2c_check_finite", slot, func(h *C.m2c_cache, s C.int32_t, out *C.uint64_t) C.m2c_status {
		return C.m2c_check_finite(h, s, out)
	})
}

func (c *Cache) countNonfinite(op string, slot int, call func(*C.m2c_cache, C.int32_t, *C.uint64_t) C.m2c_status) (uint64, error) {
	s, err := slotArg(op, slot)
	if err != nil {
		return 0, err
	}
	var out C.uint64_t
	err = c.do(op, func(h *C.m2c_cache) C.m2c_status { return call(h, s, &out) })
	runtime.KeepAlive(&out)
	if err != nil {
		return 0, err
	}
	return uint64(out), nil
}

// SnapshotSize returns the exact size in bytes of a snapshot of one slot
// (m2c_slot_snapshot_size); the format is in docs/FORMATS.md.
func (c *Cache) SnapshotSize() (int, error) {
	var out C.size_t
	err := c.do("m2c_slot_snapshot_size", func(h *C.m2c_cache) C.m2c_status { return C.m2c_slot_snapshot_size(h, &out) })
	runtime.KeepAlive(&out)
	if err != nil {
		return 0, err
	}
	return int(out), nil
}

// SaveSlot returns a self-describing snapshot of slot: its state in every
// layer and its position. It loads into any slot of any cache of the same
// shape and storage dtypes ([Cache.LoadSlot]). Errors: ErrOutOfRange,
// ErrClosed.
func (c *Cache) SaveSlot(slot int) ([]byte, error) {
	size, err := c.SnapshotSize()
	if err != nil {
		return nil, err
	}
	buf := make([]byte, size)
	n, err := c.SaveSlotTo(slot, buf)
	if err != nil {
		return nil, err
	}
	return buf[:n], nil
}

// SaveSlotTo writes a snapshot of slot into buf, which must hold at least
// [Cache.SnapshotSize] bytes, and returns the bytes written (m2c_slot_save).
// Errors: ErrShapeMismatch (buf too small), ErrOutOfRange, ErrClosed; on
// failure buf is not written.
func (c *Cache) SaveSlotTo(slot int, buf []byte) (int, error) {
	const op = "m2c_slot_save"
	s, err := slotArg(op, slot)
	if err != nil {
		return 0, err
	}
	if !skipGoChecks.Load() {
		size, err := c.SnapshotSize()
		if err != nil {
			return 0, err
		}
		if len(buf) < size {
			return 0, goError(StatusShapeMismatch, op, "buffer of %d bytes is smaller than the snapshot (%d bytes)", len(buf), size)
		}
	}
	p := ptrOf(buf)
	var written C.size_t
	err = c.do(op, func(h *C.m2c_cache) C.m2c_status {
		return C.m2c_slot_save(h, s, p, C.size_t(len(buf)), &written)
	})
	runtime.KeepAlive(buf)
	runtime.KeepAlive(&written)
	if err != nil {
		return 0, err
	}
	return int(written), nil
}

// LoadSlot replaces the state (every layer) and position of slot with a
// snapshot made by [Cache.SaveSlot] (m2c_slot_load). The whole snapshot is
// validated first. Errors: ErrCorrupt (bad magic, truncated, checksum
// mismatch), ErrIncompatible (another format version or shape),
// ErrOutOfRange, ErrPoisoned, ErrClosed; on failure the slot is unchanged.
func (c *Cache) LoadSlot(slot int, snapshot []byte) error {
	const op = "m2c_slot_load"
	s, err := slotArg(op, slot)
	if err != nil {
		return err
	}
	p := ptrOf(snapshot)
	err = c.do(op, func(h *C.m2c_cache) C.m2c_status {
		return C.m2c_slot_load(h, s, p, C.size_t(len(snapshot)))
	})
	runtime.KeepAlive(snapshot)
	return err
}

// pathCall runs a C call that takes a path. A path with a NUL byte cannot
// reach C intact and is refused in Go with ErrInvalidArg.
func (c *Cache) pathCall(op, path string, call func(h *C.m2c_cache, p *C.char) C.m2c_status) error {
	if strings.IndexByte(path, 0) >= 0 {
		return goError(StatusInvalidArg, op, "path %q contains a NUL byte", path)
	}
	cp := C.CString(path)
	defer C.free(unsafe.Pointer(cp))
	return c.do(op, func(h *C.m2c_cache) C.m2c_status { return call(h, cp) })
}

// SaveFile saves the whole cache to the file at path (m2c_save_file): every
// slot's state, position and acquired flag, with a checksum. It writes a
// temporary file in the same directory and renames it over path, so an
// interrupted save never damages an existing file. Errors: ErrInvalidArg
// (empty path), ErrIO (the message has the OS error), ErrClosed.
func (c *Cache) SaveFile(path string) error {
	return c.pathCall("m2c_save_file", path, func(h *C.m2c_cache, p *C.char) C.m2c_status {
		return C.m2c_save_file(h, p)
	})
}

// LoadFile replaces every slot's state, position and acquired flag with the
// file at path, written by [Cache.SaveFile] (m2c_load_file). The file is
// validated before the cache is touched. Errors: ErrInvalidArg (empty
// path), ErrIO (missing or unreadable file), ErrCorrupt, ErrIncompatible
// (another shape or slot count), ErrPoisoned, ErrClosed.
func (c *Cache) LoadFile(path string) error {
	return c.pathCall("m2c_load_file", path, func(h *C.m2c_cache, p *C.char) C.m2c_status {
		return C.m2c_load_file(h, p)
	})
}
