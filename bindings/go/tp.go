package m2c

/*
#include <stdlib.h>
#include "m2c.h"
*/
import "C"

import (
	"runtime"
	"unsafe"
)

// Shard is what one rank of a tensor-parallel layout holds of every layer
// (m2c_shard): heads, B/C groups (replicated when there are fewer groups
// than ranks) and the full conv channels of its x, B and C sections, as
// half-open ranges of the full layer, plus the bytes of one slot's snapshot
// of a cache of the rank's config.
type Shard struct {
	Rank, TPSize                             uint32
	HeadBegin, HeadEnd, GroupBegin, GroupEnd uint32
	GroupsReplicated                         bool
	XBegin, XEnd, BBegin, BEnd, CBegin, CEnd uint64
	SnapshotBytes                            uint64
}

// ReshardCopy is one run of a resharding plan (m2c_reshard_copy): Len bytes
// at SrcOffset of source rank SrcRank's slot snapshot image go to DstOffset
// of destination rank DstRank's. Each run lies inside one Region of either
// side.
type ReshardCopy struct {
	SrcRank, DstRank          uint32
	SrcOffset, DstOffset, Len uint64
}

// ShardConfig returns the config of rank rank of a tpSize-way tensor-parallel
// layout of full, and what that rank holds (m2c_shard_config): heads split
// evenly, groups split evenly or (fewer groups than ranks) replicated.
//
// Errors: ErrInvalidArg (tpSize 0, not dividing the heads, or neither
// dividing nor divided by the groups), ErrOutOfRange (rank >= tpSize),
// ErrInvalidConfig.
func ShardConfig(full Config, tpSize, rank uint32) (Config, Shard, error) {
	if abiErr != nil {
		return Config{}, Shard{}, abiErr
	}
	f := full.toC()
	var out C.m2c_config
	C.m2c_config_init(&out)
	var sh C.m2c_shard
	C.m2c_shard_init(&sh)
	debugGC()
	err := callC("m2c_shard_config", func() C.m2c_status {
		return C.m2c_shard_config(&f, C.uint32_t(tpSize), C.uint32_t(rank), &out, &sh)
	})
	runtime.KeepAlive(&f)
	if err != nil {
		return Config{}, Shard{}, err
	}
	return configFromC(&out), Shard{
		Rank: uint32(sh.rank), TPSize: uint32(sh.tp_size),
		HeadBegin: uint32(sh.head_begin), HeadEnd: uint32(sh.head_end),
		GroupBegin: uint32(sh.group_begin), GroupEnd: uint32(sh.group_end),
		GroupsReplicated: sh.groups_replicated != 0,
		XBegin:           uint64(sh.x_begin), XEnd: uint64(sh.x_end),
		BBegin: uint64(sh.b_begin), BEnd: uint64(sh.b_end),
		CBegin: uint64(sh.c_begin), CEnd: uint64(sh.c_end),
		SnapshotBytes: uint64(sh.snapshot_bytes),
	}, nil
}

// ReshardPlan returns the runs that move one slot's state from the tpSrc
// ranks of a layout of full to its tpDst ranks (m2c_reshard_plan).
//
// Errors: ErrInvalidArg (a layout ShardConfig refuses), ErrInvalidConfig.
func ReshardPlan(full Config, tpSrc, tpDst uint32) ([]ReshardCopy, error) {
	if abiErr != nil {
		return nil, abiErr
	}
	f := full.toC()
	var n C.size_t
	err := callC("m2c_reshard_plan", func() C.m2c_status {
		return C.m2c_reshard_plan(&f, C.uint32_t(tpSrc), C.uint32_t(tpDst), nil, 0, &n)
	})
	if err != nil {
		return nil, err
	}
	raw := make([]C.m2c_reshard_copy, int(n))
	var p *C.m2c_reshard_copy
	if n > 0 {
		p = &raw[0]
	}
	err = callC("m2c_reshard_plan", func() C.m2c_status {
		return C.m2c_reshard_plan(&f, C.uint32_t(tpSrc), C.uint32_t(tpDst), p, n, &n)
	})
	runtime.KeepAlive(&f)
	runtime.KeepAlive(raw)
	if err != nil {
		return nil, err
	}
	out := make([]ReshardCopy, len(raw))
	for i, c := range raw {
		out[i] = ReshardCopy{SrcRank: uint32(c.src_rank), DstRank: uint32(c.dst_rank), SrcOffset: uint64(c.src_offset),
			DstOffset: uint64(c.dst_offset), Len: uint64(c.len)}
	}
	return out, nil
}

// ReshardSnapshots reshards one slot's snapshots (src[r]: rank r's
// SaveSlot under a tpSrc-way layout of full) into the tpDst ranks' snapshots
// (m2c_snapshot_reshard), bit for bit what caches of that layout save.
//
// Errors: ErrCorrupt (a damaged source), ErrIncompatible, ErrInvalidArg (a
// layout ShardConfig refuses; ranks at different positions),
// ErrShapeMismatch (len(src) != tpSrc).
func ReshardSnapshots(full Config, tpSrc uint32, src [][]byte, tpDst uint32) ([][]byte, error) {
	const op = "m2c_snapshot_reshard"
	if uint32(len(src)) != tpSrc {
		return nil, goError(StatusShapeMismatch, op, "%d source snapshots for tp_src %d", len(src), tpSrc)
	}
	dst := make([][]byte, tpDst)
	for r := range dst {
		_, sh, err := ShardConfig(full, tpDst, uint32(r))
		if err != nil {
			return nil, err
		}
		dst[r] = make([]byte, sh.SnapshotBytes)
	}
	// The pointer arrays live in C memory, so cgo's rules hold without pins.
	ptrs := (*[1 << 20]unsafe.Pointer)(C.malloc(C.size_t(len(src)+len(dst)+1) * C.size_t(unsafe.Sizeof(uintptr(0)))))
	lens := (*[1 << 20]C.size_t)(C.malloc(C.size_t(len(src)+len(dst)+1) * C.size_t(unsafe.Sizeof(C.size_t(0)))))
	defer C.free(unsafe.Pointer(ptrs))
	defer C.free(unsafe.Pointer(lens))
	var pin runtime.Pinner
	defer pin.Unpin()
	for i, b := range src {
		ptrs[i], lens[i] = nil, C.size_t(len(b))
		if len(b) > 0 {
			pin.Pin(&b[0])
			ptrs[i] = unsafe.Pointer(&b[0])
		}
	}
	k := len(src)
	for i, b := range dst {
		ptrs[k+i], lens[k+i] = nil, C.size_t(len(b))
		if len(b) > 0 {
			pin.Pin(&b[0])
			ptrs[k+i] = unsafe.Pointer(&b[0])
		}
	}
	f := full.toC()
	debugGC()
	err := callC(op, func() C.m2c_status {
		return C.m2c_snapshot_reshard(&f, C.uint32_t(tpSrc), (*unsafe.Pointer)(unsafe.Pointer(&ptrs[0])), &lens[0],
			C.uint32_t(tpDst), (*unsafe.Pointer)(unsafe.Pointer(&ptrs[k])), &lens[k])
	})
	runtime.KeepAlive(&f)
	if err != nil {
		return nil, err
	}
	return dst, nil
}
