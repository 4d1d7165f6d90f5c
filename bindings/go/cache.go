package m2c

// #include "m2c.h"
import "C"

import (
	"errors"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"
)

// Cache is a Mamba2 state cache (m2c_cache): the conv windows and SSM states
// of every layer for a fixed number of sequence slots, plus a position per
// slot. Create it with [New] and free it with [Cache.Close]; a finalizer
// frees a cache that was never closed, but only as a safety net.
//
// All methods may be called from many goroutines at once.
type Cache struct {
	// mu guards h: every call holds it for reading, Close for writing, so
	// Close never races a call in progress (m2c_destroy must not).
	mu  sync.RWMutex
	h   *C.m2c_cache
	cfg Config // as reported by m2c_get_config at creation; immutable
}

// finalized counts caches freed by the finalizer (for the tests).
var finalized atomic.Int64

// skipGoChecks disables the checks made in Go before a call, so that tests
// can show that the library refuses the same inputs on its own.
var skipGoChecks atomic.Bool

// New creates a cache with configuration cfg (m2c_create). Every state
// starts at zero and every position at 0.
//
// Errors: ErrInvalidConfig (the message names the field),
// ErrUnsupportedDtype, ErrUnsupported (DeviceCUDA in a build without
// CUDA), ErrOutOfMemory, and ErrIncompatible for a library whose ABI
// version differs from the header's.
func New(cfg Config) (*Cache, error) {
	if abiErr != nil {
		return nil, abiErr
	}
	c := cfg.toC()
	var h *C.m2c_cache
	debugGC()
	err := callC("m2c_create", func() C.m2c_status { return C.m2c_create(&c, &h) })
	runtime.KeepAlive(&c)
	if err != nil {
		return nil, err
	}
	var got C.m2c_config
	C.m2c_config_init(&got)
	err = callC("m2c_get_config", func() C.m2c_status { return C.m2c_get_config(h, &got) })
	if err != nil {
		C.m2c_destroy(h)
		return nil, err
	}
	debugRegister(h)
	cache := &Cache{h: h, cfg: configFromC(&got)}
	runtime.SetFinalizer(cache, func(c *Cache) {
		finalized.Add(1)
		c.Close()
	})
	return cache, nil
}

// Close frees the cache and all of its storage (m2c_destroy). Views obtained
// from it become invalid. It waits for calls in progress on other goroutines,
// may be called any number of times, and always returns nil (it implements
// io.Closer). Later calls on the cache fail with ErrClosed.
func (c *Cache) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.h == nil {
		return nil
	}
	// No debugGC here: Close also runs on the finalizer goroutine, where
	// waiting for finalizers would wait for itself.
	debugUnregister(c.h)
	C.m2c_destroy(c.h)
	c.h = nil
	runtime.SetFinalizer(c, nil)
	return nil
}

// do runs one C call on the open handle: it holds the read lock (so Close
// waits), locks the goroutine to its OS thread for the call and the read of
// its message, and keeps the Cache alive until the call has returned.
func (c *Cache) do(op string, call func(h *C.m2c_cache) C.m2c_status) error {
	c.mu.RLock()
	defer c.mu.RUnlock()
	h := c.handle()
	if h == nil {
		return closedError(op)
	}
	err := callC(op, func() C.m2c_status {
		debugCheckLive(op, h)
		return call(h)
	})
	runtime.KeepAlive(c)
	return err
}

// handle returns the C handle (nil once closed). The caller holds c.mu. In
// the m2cdebug build it first collects garbage and runs the finalizers that
// queues, so a Cache that is not kept alive across the call gets destroyed
// before the call, where debugCheckLive catches it.
func (c *Cache) handle() *C.m2c_cache {
	h := c.h
	debugGC()
	return h
}

// Config returns the cache's configuration as the library reports it
// (m2c_get_config).
func (c *Cache) Config() (Config, error) {
	var out C.m2c_config
	C.m2c_config_init(&out)
	err := c.do("m2c_get_config", func(h *C.m2c_cache) C.m2c_status { return C.m2c_get_config(h, &out) })
	runtime.KeepAlive(&out)
	if err != nil {
		return Config{}, err
	}
	return configFromC(&out), nil
}

// layerArg converts a layer index; one that does not fit the C type is
// always refused in Go, one past the layer count unless checks are off.
func (c *Cache) layerArg(op string, layer int) (C.uint32_t, error) {
	if layer < 0 || uint64(layer) > math.MaxUint32 {
		return 0, goError(StatusOutOfRange, op, "layer = %d is not a layer index", layer)
	}
	if !skipGoChecks.Load() && layer >= int(c.cfg.NumLayers) {
		return 0, goError(StatusOutOfRange, op, "layer = %d is out of range (num_layers = %d)", layer, c.cfg.NumLayers)
	}
	return C.uint32_t(layer), nil
}

// slotArg converts a single slot index; one that does not fit int32 is
// always refused in Go, the library checks the rest.
func slotArg(op string, slot int) (C.int32_t, error) {
	if slot < math.MinInt32 || slot > math.MaxInt32 {
		return 0, goError(StatusOutOfRange, op, "slot = %d is not an int32", slot)
	}
	return C.int32_t(slot), nil
}

// rows returns the row count n of a batched call with rowLen elements per
// row: len(slots), or, for nil slots, len(d)/rowLen. It checks in Go that
// the buffer holds exactly n rows of a known dtype.
func rows(op, what string, slots []int32, d Data, rowLen int) (int, error) {
	n := len(slots)
	if slots == nil && rowLen > 0 {
		n = d.n / rowLen
	}
	if skipGoChecks.Load() {
		return n, nil
	}
	if d.dtype.Size() == 0 {
		return 0, goError(StatusUnsupportedDtype, op, "%s_dtype = %d is not an M2C_DTYPE_* value", what, uint32(d.dtype))
	}
	if d.rem != 0 {
		return 0, goError(StatusShapeMismatch, op, "%s has %d bytes, not a whole number of %d-byte %s elements",
			what, d.n*d.dtype.Size()+d.rem, d.dtype.Size(), d.dtype)
	}
	if slots == nil && rowLen > 0 && d.n%rowLen != 0 {
		return 0, goError(StatusShapeMismatch, op, "%s has %d elements, not a whole number of rows of %d", what, d.n, rowLen)
	}
	if slots != nil && d.n != n*rowLen {
		return 0, goError(StatusShapeMismatch, op, "%s has %d elements, but %d rows of %d need %d", what, d.n, n, rowLen, n*rowLen)
	}
	return n, nil
}

// slotsPtr returns the first entry of s, or NULL for an empty list.
func slotsPtr(s []int32) *C.int32_t {
	if len(s) == 0 {
		return nil
	}
	return (*C.int32_t)(unsafe.Pointer(unsafe.SliceData(s)))
}

// batch is the shape of the five batched data calls.
type batchFn func(h *C.m2c_cache, layer C.uint32_t, slots *C.int32_t, n C.size_t, p unsafe.Pointer, dt C.m2c_dtype, len C.size_t) C.m2c_status

func (c *Cache) batch(op, what string, fn batchFn, layer int, slots []int32, d Data, rowLen int) error {
	l, err := c.layerArg(op, layer)
	if err != nil {
		return err
	}
	n, err := rows(op, what, slots, d, rowLen)
	if err != nil {
		return err
	}
	sp := slotsPtr(slots)
	err = c.do(op, func(h *C.m2c_cache) C.m2c_status {
		return fn(h, l, sp, C.size_t(n), d.ptr, C.m2c_dtype(d.dtype), C.size_t(d.n))
	})
	runtime.KeepAlive(slots)
	runtime.KeepAlive(d.ptr)
	return err
}

// SetNumThreads sets how many threads the calls on c that follow may use
// (m2c_set_num_threads): 0 (the default) m2c's pool, 1 the calling thread
// only (no other thread runs work of this cache), n at most n threads.
// Results do not depend on it. Errors: ErrInvalidArg (n < 0 or past
// uint32), ErrPoisoned, ErrClosed.
func (c *Cache) SetNumThreads(n int) error {
	const op = "m2c_set_num_threads"
	if n < 0 || n > math.MaxUint32 {
		return goError(StatusInvalidArg, op, "num_threads = %d is not a uint32", n)
	}
	return c.do(op, func(h *C.m2c_cache) C.m2c_status { return C.m2c_set_num_threads(h, C.uint32_t(n)) })
}

// SnapshotFormat is the slot snapshot format a cache writes
// (M2C_SNAPSHOT_FORMAT_*).
type SnapshotFormat uint32

const (
	// SnapshotFormat1 checksums a snapshot with one XXH64 (the default;
	// every release reads it).
	SnapshotFormat1 SnapshotFormat = C.M2C_SNAPSHOT_FORMAT_1
	// SnapshotFormat2 has the same layout and size with a checksum computed
	// in parallel 1 MiB chunks; releases before this one cannot read it.
	SnapshotFormat2 SnapshotFormat = C.M2C_SNAPSHOT_FORMAT_2
)

// SetSnapshotFormat sets the format SaveSlot writes and SlotDigest reports
// (m2c_set_snapshot_format); LoadSlot reads both. Errors: ErrInvalidArg (an
// unknown format), ErrUnsupported (format 2 on a device cache),
// ErrPoisoned, ErrClosed.
func (c *Cache) SetSnapshotFormat(f SnapshotFormat) error {
	return c.do("m2c_set_snapshot_format", func(h *C.m2c_cache) C.m2c_status {
		return C.m2c_set_snapshot_format(h, C.m2c_snapshot_format(f))
	})
}

// SnapshotFormat returns the format SaveSlot writes
// (m2c_get_snapshot_format). Errors: ErrClosed.
func (c *Cache) SnapshotFormat() (SnapshotFormat, error) {
	var out C.m2c_snapshot_format
	err := c.do("m2c_get_snapshot_format", func(h *C.m2c_cache) C.m2c_status {
		return C.m2c_get_snapshot_format(h, &out)
	})
	runtime.KeepAlive(&out)
	return SnapshotFormat(out), err
}

// ConvLayout is how a cache stores its conv windows (M2C_CONV_LAYOUT_*).
type ConvLayout uint32

const (
	// ConvLayoutOldestFirst stores each slot's window [ConvDim][ConvWidth],
	// oldest input first (the default; HF transformers, vLLM, llama.cpp).
	ConvLayoutOldestFirst ConvLayout = C.M2C_CONV_LAYOUT_OLDEST_FIRST
	// ConvLayoutRing stores each window column by column with a head per
	// (layer, slot): a decode token writes one column instead of shifting
	// all of them. Results, reads, snapshots and files are the same as
	// with ConvLayoutOldestFirst. Host caches only.
	ConvLayoutRing ConvLayout = C.M2C_CONV_LAYOUT_RING
)

// SetConvLayout switches how the cache stores its conv windows, converting
// them in place (m2c_set_conv_layout); what ReadConv returns does not
// change. Errors: ErrInvalidArg (an unknown layout), ErrUnsupported (the
// ring layout on a device cache), ErrOutOfMemory, ErrPoisoned, ErrClosed.
func (c *Cache) SetConvLayout(l ConvLayout) error {
	return c.do("m2c_set_conv_layout", func(h *C.m2c_cache) C.m2c_status {
		return C.m2c_set_conv_layout(h, C.m2c_conv_layout(l))
	})
}

// ConvLayout returns how the cache stores its conv windows
// (m2c_get_conv_layout). Errors: ErrClosed.
func (c *Cache) ConvLayout() (ConvLayout, error) {
	var out C.m2c_conv_layout
	err := c.do("m2c_get_conv_layout", func(h *C.m2c_cache) C.m2c_status { return C.m2c_get_conv_layout(h, &out) })
	runtime.KeepAlive(&out)
	return ConvLayout(out), err
}

// ConvHeads returns, per slot of layer, the physical column of its conv
// window that holds the oldest input (m2c_conv_heads): with [Cache.ConvView],
// input k of slot s is at column (heads[s] + k) % ConvWidth in the ring
// layout. All zero in the oldest-first layout. Errors: ErrOutOfRange
// (layer), ErrPoisoned, ErrClosed.
func (c *Cache) ConvHeads(layer int) ([]uint32, error) {
	const op = "m2c_conv_heads"
	l, err := c.layerArg(op, layer)
	if err != nil {
		return nil, err
	}
	out := make([]uint32, c.cfg.NumSlots)
	err = c.do(op, func(h *C.m2c_cache) C.m2c_status {
		var p *C.uint32_t
		if len(out) > 0 {
			p = (*C.uint32_t)(unsafe.Pointer(&out[0]))
		}
		return C.m2c_conv_heads(h, l, p, C.size_t(len(out)))
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// String returns a one-line summary of the cache (m2c_describe): shapes,
// dtypes, slots in use, bytes and where they live; "m2c cache (closed)"
// once closed.
func (c *Cache) String() string {
	var needed C.size_t
	buf := make([]byte, 512)
	err := c.do("m2c_describe", func(h *C.m2c_cache) C.m2c_status {
		return C.m2c_describe(h, (*C.char)(unsafe.Pointer(&buf[0])), C.size_t(len(buf)), &needed)
	})
	runtime.KeepAlive(buf)
	if err != nil {
		if errors.Is(err, ErrClosed) {
			return "m2c cache (closed)"
		}
		return "m2c cache (" + err.Error() + ")"
	}
	return string(buf[:needed-1])
}

func cUpdateConv(h *C.m2c_cache, l C.uint32_t, s *C.int32_t, n C.size_t, p unsafe.Pointer, dt C.m2c_dtype, ln C.size_t) C.m2c_status {
	return C.m2c_update_conv(h, l, s, n, p, dt, ln)
}

func cSetConv(h *C.m2c_cache, l C.uint32_t, s *C.int32_t, n C.size_t, p unsafe.Pointer, dt C.m2c_dtype, ln C.size_t) C.m2c_status {
	return C.m2c_set_conv(h, l, s, n, p, dt, ln)
}

func cSetSSM(h *C.m2c_cache, l C.uint32_t, s *C.int32_t, n C.size_t, p unsafe.Pointer, dt C.m2c_dtype, ln C.size_t) C.m2c_status {
	return C.m2c_set_ssm(h, l, s, n, p, dt, ln)
}

func cUpdateSSM(h *C.m2c_cache, l C.uint32_t, s *C.int32_t, n C.size_t, p unsafe.Pointer, dt C.m2c_dtype, ln C.size_t) C.m2c_status {
	return C.m2c_update_ssm(h, l, s, n, p, dt, ln)
}

func cReadConv(h *C.m2c_cache, l C.uint32_t, s *C.int32_t, n C.size_t, p unsafe.Pointer, dt C.m2c_dtype, ln C.size_t) C.m2c_status {
	return C.m2c_read_conv(h, l, s, n, p, dt, ln)
}

func cReadSSM(h *C.m2c_cache, l C.uint32_t, s *C.int32_t, n C.size_t, p unsafe.Pointer, dt C.m2c_dtype, ln C.size_t) C.m2c_status {
	return C.m2c_read_ssm(h, l, s, n, p, dt, ln)
}

// UpdateConv pushes one new conv input per row into the conv windows of
// layer (m2c_update_conv): each selected slot's window shifts left by one
// column and x's row becomes its newest column. x is [n, ConvDim] elements
// of any dtype (converted, rounding to nearest even). slots nil: rows
// 0..n-1 address slots 0..n-1, with n = x.Len()/ConvDim; otherwise row i
// addresses slots[i], negative entries are padding, and a slot listed twice
// is ErrInvalidArg.
//
// Errors: ErrOutOfRange (layer or slot), ErrShapeMismatch (x's length),
// ErrInvalidArg, ErrUnsupportedDtype, ErrPoisoned, ErrClosed. On failure
// the cache is unchanged.
func (c *Cache) UpdateConv(layer int, slots []int32, x Data) error {
	return c.batch("m2c_update_conv", "x", cUpdateConv, layer, slots, x, c.cfg.ConvDim())
}

// UpdateConvF32 is [Cache.UpdateConv] with float32 input.
func (c *Cache) UpdateConvF32(layer int, slots []int32, x []float32) error {
	return c.UpdateConv(layer, slots, F32Data(x))
}

// SetConv replaces whole conv windows of layer, for example after prefill
// (m2c_set_conv). window is [n, ConvDim, ConvWidth] elements, column
// ConvWidth-1 the newest; with nil slots n = window.Len()/ConvWindowLen.
// Slots, conversion and errors as for [Cache.UpdateConv].
func (c *Cache) SetConv(layer int, slots []int32, window Data) error {
	return c.batch("m2c_set_conv", "window", cSetConv, layer, slots, window, c.cfg.ConvWindowLen())
}

// SetConvF32 is [Cache.SetConv] with float32 input.
func (c *Cache) SetConvF32(layer int, slots []int32, window []float32) error {
	return c.SetConv(layer, slots, F32Data(window))
}

// SetSSM replaces whole SSM states of layer (m2c_set_ssm). state is
// [n, NumHeads, HeadDim, StateSize] elements; with nil slots
// n = state.Len()/SSMStateLen. Slots, conversion and errors as for
// [Cache.UpdateConv].
func (c *Cache) SetSSM(layer int, slots []int32, state Data) error {
	return c.batch("m2c_set_ssm", "state", cSetSSM, layer, slots, state, c.cfg.SSMStateLen())
}

// SetSSMF32 is [Cache.SetSSM] with float32 input.
func (c *Cache) SetSSMF32(layer int, slots []int32, state []float32) error {
	return c.SetSSM(layer, slots, F32Data(state))
}

// UpdateSSM is [Cache.SetSSM] under its first name (m2c_update_ssm): it
// replaces states.
//
// Deprecated: use [Cache.SetSSM].
func (c *Cache) UpdateSSM(layer int, slots []int32, state Data) error {
	return c.batch("m2c_update_ssm", "state", cUpdateSSM, layer, slots, state, c.cfg.SSMStateLen())
}

// UpdateSSMF32 is [Cache.UpdateSSM] with float32 input.
//
// Deprecated: use [Cache.SetSSMF32].
func (c *Cache) UpdateSSMF32(layer int, slots []int32, state []float32) error {
	return c.UpdateSSM(layer, slots, F32Data(state))
}

// ReadConv copies the conv windows of layer for the selected slots into out
// (m2c_read_conv), [n, ConvDim, ConvWidth] elements of out's dtype,
// converting from the storage dtype; padding rows are written as zeros.
// With nil slots n = out.Len()/ConvWindowLen. out is written only on
// success. Works on a poisoned cache.
func (c *Cache) ReadConv(layer int, slots []int32, out Data) error {
	return c.batch("m2c_read_conv", "out", cReadConv, layer, slots, out, c.cfg.ConvWindowLen())
}

// ReadConvF32 is [Cache.ReadConv] into a float32 buffer.
func (c *Cache) ReadConvF32(layer int, slots []int32, out []float32) error {
	return c.ReadConv(layer, slots, F32Data(out))
}

// ReadSSM copies the SSM states of layer for the selected slots into out
// (m2c_read_ssm), [n, NumHeads, HeadDim, StateSize] elements of out's
// dtype; with nil slots n = out.Len()/SSMStateLen. Otherwise as
// [Cache.ReadConv].
func (c *Cache) ReadSSM(layer int, slots []int32, out Data) error {
	return c.batch("m2c_read_ssm", "out", cReadSSM, layer, slots, out, c.cfg.SSMStateLen())
}

// ReadSSMF32 is [Cache.ReadSSM] into a float32 buffer.
func (c *Cache) ReadSSMF32(layer int, slots []int32, out []float32) error {
	return c.ReadSSM(layer, slots, F32Data(out))
}

// allRows returns (NULL, n) for a nil list, meaning every slot, and the
// list itself otherwise.
func (c *Cache) allRows(slots []int32) (*C.int32_t, C.size_t) {
	if slots == nil {
		return nil, C.size_t(c.cfg.NumSlots)
	}
	return slotsPtr(slots), C.size_t(len(slots))
}

// Reset zeroes the conv windows and SSM states of the selected slots in
// every layer and sets their positions to 0 (m2c_reset); nil slots means
// every slot. Errors: ErrOutOfRange, ErrInvalidArg (a slot listed twice),
// ErrPoisoned, ErrClosed; on failure nothing changes.
func (c *Cache) Reset(slots []int32) error {
	sp, n := c.allRows(slots)
	err := c.do("m2c_reset", func(h *C.m2c_cache) C.m2c_status { return C.m2c_reset(h, sp, n) })
	runtime.KeepAlive(slots)
	return err
}

// Advance adds numTokens to the position of each selected slot (m2c_advance);
// nil slots means every slot. Errors: ErrOutOfRange (a slot, or a position
// that would overflow uint64), ErrInvalidArg, ErrPoisoned, ErrClosed; on
// failure no position changes.
func (c *Cache) Advance(slots []int32, numTokens uint32) error {
	sp, n := c.allRows(slots)
	err := c.do("m2c_advance", func(h *C.m2c_cache) C.m2c_status {
		return C.m2c_advance(h, sp, n, C.uint32_t(numTokens))
	})
	runtime.KeepAlive(slots)
	return err
}

// Position returns the tokens slot has consumed (m2c_position). Errors:
// ErrOutOfRange, ErrClosed.
func (c *Cache) Position(slot int) (uint64, error) {
	s, err := slotArg("m2c_position", slot)
	if err != nil {
		return 0, err
	}
	var out C.uint64_t
	err = c.do("m2c_position", func(h *C.m2c_cache) C.m2c_status { return C.m2c_position(h, s, &out) })
	runtime.KeepAlive(&out)
	if err != nil {
		return 0, err
	}
	return uint64(out), nil
}
