package m2c

/*
#include "m2c.h"
*/
import "C"

import (
	"runtime"
	"unsafe"
)

// ReserveSpec reserves the speculative-decoding log for runs of up to
// maxTokens tokens per slot (the last sampled token plus its drafts, or a
// draft tree's nodes), in every slot and layer; 0 frees it
// (m2c_spec_reserve). It ends the current round.
//
// Errors: ErrOutOfRange (maxTokens above 4096), ErrOutOfMemory,
// ErrUnsupported (a device cache), ErrClosed.
func (c *Cache) ReserveSpec(maxTokens uint32) error {
	return c.do("m2c_spec_reserve", func(h *C.m2c_cache) C.m2c_status {
		return C.m2c_spec_reserve(h, C.uint32_t(maxTokens))
	})
}

// BeginSpec starts a speculative round (m2c_spec_begin): sequence i (slot
// slots[i]; nil slots: slot i for len(cuSeqlens)-1 sequences; negative:
// padding) verifies token rows cuSeqlens[i]..cuSeqlens[i+1] of every later
// [Cache.ConvVerify] and [Cache.SSMVerify] call. parents (nil: chains)
// gives each token row its parent within its run (-1: the committed
// state), making the runs trees. It replaces any earlier round; a slot
// changed before it is committed leaves the round.
//
// Errors: ErrInvalidArg (no log reserved, a run of 0 tokens, a parent that
// is not earlier in its run, a slot listed twice, bad cuSeqlens),
// ErrOutOfRange (a slot, a run longer than reserved), ErrShapeMismatch
// (len(cuSeqlens) or len(parents)), ErrUnsupported, ErrClosed.
func (c *Cache) BeginSpec(slots []int32, cuSeqlens []uint64, parents []int32) error {
	n := len(slots)
	if slots == nil && len(cuSeqlens) > 0 {
		n = len(cuSeqlens) - 1
	}
	var pp *C.int32_t
	if parents != nil {
		pp = (*C.int32_t)(unsafe.Pointer(unsafe.SliceData(parents)))
	}
	sp, cp := slotsPtr(slots), cuPtr(cuSeqlens)
	err := c.do("m2c_spec_begin", func(h *C.m2c_cache) C.m2c_status {
		return C.m2c_spec_begin(h, sp, C.size_t(n), cp, C.size_t(len(cuSeqlens)), pp, C.size_t(len(parents)))
	})
	runtime.KeepAlive(slots)
	runtime.KeepAlive(cuSeqlens)
	runtime.KeepAlive(parents)
	return err
}

// ConvVerify verifies the current round through the causal conv of layer
// (m2c_conv_verify): x and out hold one row per token of the round
// ([T, ConvDim], one dtype), and each token's output is bit-identical to
// [Cache.ConvStep] along its path from the slot's committed window. The
// windows are not changed. Padding rows and slots that left the round get
// zero outputs.
//
// Errors: as [Cache.ConvStep] for T rows, and ErrInvalidArg (no round),
// ErrUnsupported (a device cache). On failure nothing is written.
func (c *Cache) ConvVerify(layer int, x, out Data, p ConvParams) error {
	const op = "m2c_conv_verify"
	l, err := c.layerArg(op, layer)
	if err != nil {
		return err
	}
	io, err := ioDType(op, c.convBufs(x, out))
	if err != nil {
		return err
	}
	if err := c.checkConvParams(op, &p); err != nil {
		return err
	}
	var pin runtime.Pinner
	defer pin.Unpin()
	args := p.convArgs(io, &pin)
	err = c.do(op, func(h *C.m2c_cache) C.m2c_status {
		return C.m2c_conv_verify(h, l, x.ptr, C.size_t(x.n), out.ptr, C.size_t(out.n), args)
	})
	runtime.KeepAlive(x.ptr)
	runtime.KeepAlive(out.ptr)
	runtime.KeepAlive(p.Weight)
	runtime.KeepAlive(p.Bias)
	runtime.KeepAlive(args)
	return err
}

// SSMVerify verifies the current round through the selective-state update
// of layer (m2c_ssm_verify): io's buffers hold one row per token of the
// round, and each token's Y is bit-identical to [Cache.SSMStep] along its
// path from the slot's committed state. The states are not changed.
//
// Errors: as [Cache.SSMStep] for T rows, and ErrInvalidArg (no round),
// ErrUnsupported (a device cache). On failure nothing is written.
func (c *Cache) SSMVerify(layer int, io SSMIO, p SSMParams) error {
	const op = "m2c_ssm_verify"
	l, err := c.layerArg(op, layer)
	if err != nil {
		return err
	}
	dt, err := ioDType(op, c.ssmBufs([6]Data{io.X, io.Dt, io.B, io.C, io.Z, io.Y}))
	if err != nil {
		return err
	}
	if err := c.checkSSMParams(op, &p); err != nil {
		return err
	}
	var pin runtime.Pinner
	defer pin.Unpin()
	args := p.ssmArgs(dt, &pin)
	cio := io.ssmIO(&pin)
	err = c.do(op, func(h *C.m2c_cache) C.m2c_status {
		return C.m2c_ssm_verify(h, l, cio, args)
	})
	runtime.KeepAlive(&io)
	runtime.KeepAlive(&p)
	runtime.KeepAlive(cio)
	runtime.KeepAlive(args)
	return err
}

// CommitSpec commits the current round for the listed slots
// (m2c_spec_commit; nil slots: slots 0..len(accepted)-1; negative entries
// are skipped): accepted[i] tokens of slot slots[i]'s run (for a tree, the
// path to token accepted[i]-1) become its state in every layer,
// bit-identical to stepping them, and its position advances by that path's
// length; 0 just ends the run. All or nothing.
//
// Errors: ErrShapeMismatch (len(slots) != len(accepted)), ErrInvalidArg
// (no round, a slot with no live run, a layer not verified), ErrOutOfRange
// (accepted above a run's length), ErrUnsupported, ErrClosed.
func (c *Cache) CommitSpec(slots []int32, accepted []uint32) error {
	const op = "m2c_spec_commit"
	if slots != nil && len(slots) != len(accepted) {
		return goError(StatusShapeMismatch, op, "%d slots but %d accepted counts", len(slots), len(accepted))
	}
	var ap *C.uint32_t
	if len(accepted) > 0 {
		ap = (*C.uint32_t)(unsafe.Pointer(unsafe.SliceData(accepted)))
	}
	sp := slotsPtr(slots)
	err := c.do(op, func(h *C.m2c_cache) C.m2c_status {
		return C.m2c_spec_commit(h, sp, C.size_t(len(accepted)), ap)
	})
	runtime.KeepAlive(slots)
	runtime.KeepAlive(accepted)
	return err
}
