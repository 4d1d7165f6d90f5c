package m2c

/*
#include "m2c.h"
*/
import "C"

import (
	"runtime"
	"unsafe"
)

// Arena is one allocation of a cache's state (m2c_arena): arena 2*l holds
// layer l's conv windows, arena 2*l+1 its SSM states. Register arenas with a
// transfer engine once.
type Arena struct {
	Base, Len   uint64
	Device      Device
	DeviceIndex int32
}

// Region is a run of one slot's state (m2c_region): Len bytes at Offset into
// arena Arena, which are bytes ImageOffset.. of the slot's snapshot.
type Region struct {
	Slot                     int32
	Arena                    uint32
	Offset, Len, ImageOffset uint64
}

// Arenas lists the arenas of the cache's state (m2c_arenas).
//
// Errors: ErrPoisoned, ErrClosed.
func (c *Cache) Arenas() ([]Arena, error) {
	var n C.size_t
	err := c.do("m2c_arenas", func(h *C.m2c_cache) C.m2c_status { return C.m2c_arenas(h, nil, 0, &n) })
	if err != nil {
		return nil, err
	}
	raw := make([]C.m2c_arena, int(n))
	var p *C.m2c_arena
	if n > 0 {
		p = &raw[0]
	}
	err = c.do("m2c_arenas", func(h *C.m2c_cache) C.m2c_status { return C.m2c_arenas(h, p, n, &n) })
	runtime.KeepAlive(raw)
	if err != nil {
		return nil, err
	}
	out := make([]Arena, len(raw))
	for i, a := range raw {
		out[i] = Arena{Base: uint64(a.base), Len: uint64(a.len), Device: Device(a.device), DeviceIndex: int32(a.device_index)}
	}
	return out, nil
}

// SlotRegions lists the byte runs of the state of slots (in range,
// distinct, no padding), per slot and layer: conv window, then SSM state
// (m2c_slot_regions).
//
// Errors: ErrOutOfRange (a slot, or padding), ErrInvalidArg (a slot listed
// twice), ErrPoisoned, ErrClosed.
func (c *Cache) SlotRegions(slots []int32) ([]Region, error) {
	var sp *C.int32_t
	if len(slots) > 0 {
		sp = (*C.int32_t)(unsafe.Pointer(unsafe.SliceData(slots)))
	}
	ns := C.size_t(len(slots))
	var n C.size_t
	err := c.do("m2c_slot_regions", func(h *C.m2c_cache) C.m2c_status {
		return C.m2c_slot_regions(h, sp, ns, nil, 0, &n)
	})
	if err != nil {
		runtime.KeepAlive(slots)
		return nil, err
	}
	raw := make([]C.m2c_region, int(n))
	var p *C.m2c_region
	if n > 0 {
		p = &raw[0]
	}
	err = c.do("m2c_slot_regions", func(h *C.m2c_cache) C.m2c_status {
		return C.m2c_slot_regions(h, sp, ns, p, n, &n)
	})
	runtime.KeepAlive(slots)
	runtime.KeepAlive(raw)
	if err != nil {
		return nil, err
	}
	out := make([]Region, len(raw))
	for i, r := range raw {
		out[i] = Region{Slot: int32(r.slot), Arena: uint32(r.arena), Offset: uint64(r.offset), Len: uint64(r.len), ImageOffset: uint64(r.image_offset)}
	}
	return out, nil
}

// SlotDigest returns the checksum m2c_slot_save would write for slot: a
// digest of its state and position to compare at both ends of a transfer
// (m2c_slot_digest).
//
// Errors: ErrOutOfRange (slot), ErrPoisoned, ErrClosed.
func (c *Cache) SlotDigest(slot int) (uint64, error) {
	const op = "m2c_slot_digest"
	s, err := slotArg(op, slot)
	if err != nil {
		return 0, err
	}
	var d C.uint64_t
	err = c.do(op, func(h *C.m2c_cache) C.m2c_status { return C.m2c_slot_digest(h, s, &d) })
	return uint64(d), err
}
