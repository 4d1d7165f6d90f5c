package m2c

// #include "m2c.h"
import "C"

import (
	"fmt"
	"math"
	"runtime"
	"sync/atomic"
	"unsafe"
)

// Activation is a conv activation code (m2c_activation). Any value may be
// passed to the library, which refuses unknown ones with ErrInvalidArg.
type Activation uint32

// The conv activations.
const (
	ActivationNone Activation = C.M2C_ACTIVATION_NONE // the conv output as computed
	ActivationSiLU Activation = C.M2C_ACTIVATION_SILU // v * sigmoid(v), what Mamba2 uses
)

// String returns "none", "silu", or "Activation(N)".
func (a Activation) String() string {
	switch a {
	case ActivationNone:
		return "none"
	case ActivationSiLU:
		return "silu"
	}
	return fmt.Sprintf("Activation(%d)", uint32(a))
}

// ConvParams are the parameters of the causal conv of one layer
// (m2c_conv_args without its struct_size and io_dtype, which the binding
// fills in: the dtype of the per-token buffers is that of the Data passed
// to the call). Start from [DefaultConvParams]: the zero value has
// ActivationNone. The slices stay owned by the caller; the library reads
// them during the call only.
type ConvParams struct {
	// Weight is [ConvDim, ConvKernelSize], oldest tap first (a PyTorch
	// Conv1d weight [ConvDim, 1, K] with the 1 dropped). Required.
	Weight []float32
	// Bias is [ConvDim], or nil for none.
	Bias []float32
	// Activation is applied to every output.
	Activation Activation
}

// DefaultConvParams returns the library's defaults (m2c_conv_args_init):
// SiLU and no weights (set Weight before use).
func DefaultConvParams() ConvParams {
	var a C.m2c_conv_args
	debugGC()
	C.m2c_conv_args_init(&a)
	runtime.KeepAlive(&a)
	return ConvParams{Activation: Activation(a.activation)}
}

// SSMParams are the parameters of the selective-state update of one layer
// (m2c_ssm_args without its struct_size and io_dtype). Start from
// [DefaultSSMParams]: the zero value has softplus off. The slices stay
// owned by the caller; the library reads them during the call only.
type SSMParams struct {
	// A is [NumHeads], already -exp(A_log). Required.
	A []float32
	// D is [NumHeads] skip weights, or nil for none.
	D []float32
	// DtBias is [NumHeads], added to dt before softplus, or nil for none.
	DtBias []float32
	// DtSoftplus applies dt = softplus(dt + dt_bias) (identity above 20),
	// as Mamba2 does.
	DtSoftplus bool
	// DtClamp clamps dt to [DtMin, DtMax] after softplus; the bounds must
	// then form an interval (ErrInvalidArg for a NaN or DtMin > DtMax).
	DtClamp bool
	// DtMin and DtMax are the clamp bounds.
	DtMin, DtMax float32
}

// DefaultSSMParams returns the library's Mamba2 defaults
// (m2c_ssm_args_init): softplus on, no clamp (bounds [0, +Inf]), no A, D or
// DtBias (set A before use).
func DefaultSSMParams() SSMParams {
	var a C.m2c_ssm_args
	debugGC()
	C.m2c_ssm_args_init(&a)
	runtime.KeepAlive(&a)
	return SSMParams{
		DtSoftplus: a.dt_softplus != 0,
		DtClamp:    a.dt_clamp != 0,
		DtMin:      float32(a.dt_min),
		DtMax:      float32(a.dt_max),
	}
}

// SSMIO holds the per-token buffers of an SSM call (m2c_ssm_io), all of one
// dtype, which becomes the call's io_dtype. T is the number of token rows:
// the row count for [Cache.SSMStep], the total token count for
// [Cache.SSMPrefill].
type SSMIO struct {
	X  Data // input [T, NumHeads, HeadDim]
	Dt Data // time steps [T, NumHeads], before bias and softplus
	B  Data // [T, NGroups, StateSize]
	C  Data // [T, NGroups, StateSize]
	Z  Data // gate [T, NumHeads, HeadDim], or empty for none
	Y  Data // output [T, NumHeads, HeadDim]; written only on success
}

// skipPin leaves the slices whose addresses go into the C argument structs
// unpinned, so that a test can show the default cgocheck refuses the call.
var skipPin atomic.Bool

// pinned returns the address of the first element of a buffer (nil when
// empty) for storing in a C argument struct, after pinning it. The structs
// live in Go memory and are passed to C, and cgo allows Go memory passed to
// C to hold Go pointers only to pinned objects (the default cgocheck
// verifies it on every call). Pinning a pointer to C memory, such as a
// view, does nothing.
func pinned(pin *runtime.Pinner, p unsafe.Pointer) unsafe.Pointer {
	if p != nil && !skipPin.Load() {
		pin.Pin(p)
	}
	return p
}

// convArgs builds the m2c_conv_args of a call with activations of dtype io;
// the weights are pinned with pin until the caller unpins it.
func (p *ConvParams) convArgs(io DType, pin *runtime.Pinner) *C.m2c_conv_args {
	a := new(C.m2c_conv_args)
	C.m2c_conv_args_init(a)
	a.io_dtype = C.m2c_dtype(io)
	a.activation = C.m2c_activation(p.Activation)
	a.weight = (*C.float)(pinned(pin, ptrOf(p.Weight)))
	a.weight_len = C.size_t(len(p.Weight))
	a.bias = (*C.float)(pinned(pin, ptrOf(p.Bias)))
	a.bias_len = C.size_t(len(p.Bias))
	return a
}

// ssmArgs builds the m2c_ssm_args of a call with activations of dtype io.
func (p *SSMParams) ssmArgs(io DType, pin *runtime.Pinner) *C.m2c_ssm_args {
	a := new(C.m2c_ssm_args)
	C.m2c_ssm_args_init(a)
	a.io_dtype = C.m2c_dtype(io)
	a.dt_softplus = cBool(p.DtSoftplus)
	a.dt_clamp = cBool(p.DtClamp)
	a.dt_min = C.float(p.DtMin)
	a.dt_max = C.float(p.DtMax)
	a.A = (*C.float)(pinned(pin, ptrOf(p.A)))
	a.A_len = C.size_t(len(p.A))
	a.D = (*C.float)(pinned(pin, ptrOf(p.D)))
	a.D_len = C.size_t(len(p.D))
	a.dt_bias = (*C.float)(pinned(pin, ptrOf(p.DtBias)))
	a.dt_bias_len = C.size_t(len(p.DtBias))
	return a
}

// ssmIO builds the m2c_ssm_io of a call; the buffers are pinned with pin.
func (b *SSMIO) ssmIO(pin *runtime.Pinner) *C.m2c_ssm_io {
	io := new(C.m2c_ssm_io)
	C.m2c_ssm_io_init(io)
	io.x, io.x_len = pinned(pin, b.X.ptr), C.size_t(b.X.n)
	io.dt, io.dt_len = pinned(pin, b.Dt.ptr), C.size_t(b.Dt.n)
	io.B, io.B_len = pinned(pin, b.B.ptr), C.size_t(b.B.n)
	io.C, io.C_len = pinned(pin, b.C.ptr), C.size_t(b.C.n)
	io.z, io.z_len = pinned(pin, b.Z.ptr), C.size_t(b.Z.n)
	io.y, io.y_len = pinned(pin, b.Y.ptr), C.size_t(b.Y.n)
	return io
}

func cBool(b bool) C.uint32_t {
	if b {
		return 1
	}
	return 0
}

// buf is one per-token buffer of a kernel call, named as in the C API.
type buf struct {
	name     string
	d        Data
	per      int  // elements per token row
	optional bool // empty means "none" (z)
}

func (b buf) empty() bool { return b.d.n == 0 && b.d.rem == 0 }

// ioDType returns the dtype of a call's per-token buffers, that of the first
// non-empty one (f32 when all are empty), and refuses a buffer of another
// dtype with ErrInvalidArg. C takes one io_dtype for all of them and would
// read a buffer of another dtype as elements of the wrong size, so this
// check runs even when the other Go checks are off.
func ioDType(op string, bufs []buf) (DType, error) {
	io, first := F32, ""
	for _, b := range bufs {
		if b.empty() {
			continue
		}
		if first == "" {
			io, first = b.d.dtype, b.name
		} else if b.d.dtype != io {
			return 0, goError(StatusInvalidArg, op, "%s is %s but %s is %s: every per-token buffer of a call has one dtype (io_dtype)",
				b.name, b.d.dtype, first, io)
		}
	}
	return io, nil
}

// tokenRows returns the row count n that a kernel call passes to C and the
// token rows T its buffers hold. A step has T = n rows: len(slots) or, for
// nil slots, first.Len()/rowLen. A prefill has n = len(slots) or, for nil
// slots, len(cu)-1 sequences, and T = cu[n] tokens; cu is checked in Go as
// the library checks it (unless the Go checks are off).
func tokenRows(op string, slots []int32, cu []uint64, prefill bool, first Data, rowLen int) (n int, tokens uint64, err error) {
	if !prefill {
		n = len(slots)
		if slots == nil && rowLen > 0 {
			n = first.n / rowLen
			if !skipGoChecks.Load() && first.n%rowLen != 0 {
				return 0, 0, goError(StatusShapeMismatch, op, "x has %d elements, not a whole number of rows of %d", first.n, rowLen)
			}
		}
		return n, uint64(n), nil
	}
	n = len(slots)
	if slots == nil && len(cu) > 0 {
		n = len(cu) - 1
	}
	if skipGoChecks.Load() {
		return n, 0, nil
	}
	if len(cu) != n+1 {
		return 0, 0, goError(StatusShapeMismatch, op, "cu_seqlens has %d entries, but %d sequences need %d", len(cu), n, n+1)
	}
	if cu[0] != 0 {
		return 0, 0, goError(StatusInvalidArg, op, "cu_seqlens[0] = %d, must be 0", cu[0])
	}
	for i := 1; i < len(cu); i++ {
		if cu[i] < cu[i-1] {
			return 0, 0, goError(StatusInvalidArg, op, "cu_seqlens decreases at [%d]: %d < %d", i, cu[i], cu[i-1])
		}
	}
	return n, cu[n], nil
}

// checkBufs checks in Go that each buffer holds tokens rows: a known dtype,
// whole elements, the right length. Skipped when the Go checks are off.
func checkBufs(op string, bufs []buf, tokens uint64, rowsWhat string) error {
	if skipGoChecks.Load() {
		return nil
	}
	for _, b := range bufs {
		if b.d.dtype.Size() == 0 {
			return goError(StatusUnsupportedDtype, op, "%s_dtype = %d is not an M2C_DTYPE_* value", b.name, uint32(b.d.dtype))
		}
		if b.d.rem != 0 {
			return goError(StatusShapeMismatch, op, "%s has %d bytes, not a whole number of %d-byte %s elements",
				b.name, b.d.n*b.d.dtype.Size()+b.d.rem, b.d.dtype.Size(), b.d.dtype)
		}
	}
	for _, b := range bufs {
		if b.optional && b.empty() {
			continue
		}
		want, fits := uint64(0), tokens <= math.MaxInt/uint64(max(b.per, 1))
		if fits {
			want = tokens * uint64(b.per)
		}
		if fits && uint64(b.d.n) == want {
			continue
		}
		if !fits {
			return goError(StatusShapeMismatch, op, "%s has %d elements, but %d %s of %d do not fit in memory", b.name, b.d.n, tokens, rowsWhat, b.per)
		}
		return goError(StatusShapeMismatch, op, "%s has %d elements, but %d %s of %d need %d", b.name, b.d.n, tokens, rowsWhat, b.per, want)
	}
	return nil
}

// convBufs names a conv call's per-token buffers; the first gives the row
// count of a step with nil slots.
func (c *Cache) convBufs(x, out Data) []buf {
	dim := c.cfg.ConvDim()
	return []buf{{name: "x", d: x, per: dim}, {name: "out", d: out, per: dim}}
}

// ssmBufs names an SSM call's per-token buffers x, dt, B, C, z, y.
func (c *Cache) ssmBufs(d [6]Data) []buf {
	hd := int(c.cfg.NumHeads) * int(c.cfg.HeadDim)
	gn := int(c.cfg.NGroups) * int(c.cfg.StateSize)
	return []buf{
		{name: "x", d: d[0], per: hd},
		{name: "dt", d: d[1], per: int(c.cfg.NumHeads)},
		{name: "B", d: d[2], per: gn},
		{name: "C", d: d[3], per: gn},
		{name: "z", d: d[4], per: hd, optional: true},
		{name: "y", d: d[5], per: hd},
	}
}

// checkTokens runs the Go checks every kernel call makes of its per-token
// buffers and returns their dtype (the call's io_dtype) and the row or
// sequence count passed to C.
func (c *Cache) checkTokens(op string, bufs []buf, slots []int32, cu []uint64, prefill bool) (DType, int, error) {
	io, err := ioDType(op, bufs)
	if err != nil {
		return 0, 0, err
	}
	n, tokens, err := tokenRows(op, slots, cu, prefill, bufs[0].d, bufs[0].per)
	if err != nil {
		return 0, 0, err
	}
	if err := checkBufs(op, bufs, tokens, rowsWord(prefill)); err != nil {
		return 0, 0, err
	}
	return io, n, nil
}

// checkConvParams checks p against the cache's shape in Go.
func (c *Cache) checkConvParams(op string, p *ConvParams) error {
	if skipGoChecks.Load() {
		return nil
	}
	dim, k := c.cfg.ConvDim(), int(c.cfg.ConvKernelSize)
	switch {
	case p.Activation != ActivationNone && p.Activation != ActivationSiLU:
		return goError(StatusInvalidArg, op, "args->activation = %d is not an M2C_ACTIVATION_* value", uint32(p.Activation))
	case len(p.Weight) == 0:
		return goError(StatusNullArg, op, "args->weight is empty (NULL)")
	case len(p.Weight) != dim*k:
		return goError(StatusShapeMismatch, op, "weight has %d elements, but [conv_dim = %d, conv_kernel_size = %d] needs %d", len(p.Weight), dim, k, dim*k)
	case len(p.Bias) != 0 && len(p.Bias) != dim:
		return goError(StatusShapeMismatch, op, "bias has %d elements, but conv_dim is %d (or nil for none)", len(p.Bias), dim)
	}
	return nil
}

// checkSSMParams checks p against the cache's shape in Go.
func (c *Cache) checkSSMParams(op string, p *SSMParams) error {
	if skipGoChecks.Load() {
		return nil
	}
	h := int(c.cfg.NumHeads)
	switch {
	case len(p.A) == 0:
		return goError(StatusNullArg, op, "args->A is empty (NULL)")
	case len(p.A) != h:
		return goError(StatusShapeMismatch, op, "A has %d elements, but num_heads is %d", len(p.A), h)
	case len(p.D) != 0 && len(p.D) != h:
		return goError(StatusShapeMismatch, op, "D has %d elements, but num_heads is %d (or nil for none)", len(p.D), h)
	case len(p.DtBias) != 0 && len(p.DtBias) != h:
		return goError(StatusShapeMismatch, op, "dt_bias has %d elements, but num_heads is %d (or nil for none)", len(p.DtBias), h)
	case p.DtClamp && (math.IsNaN(float64(p.DtMin)) || math.IsNaN(float64(p.DtMax)) || p.DtMin > p.DtMax):
		return goError(StatusInvalidArg, op, "dt limits [%v, %v] are not an interval", p.DtMin, p.DtMax)
	}
	return nil
}

// cuPtr returns the first entry of cu, or NULL for an empty list.
func cuPtr(cu []uint64) *C.uint64_t {
	if len(cu) == 0 {
		return nil
	}
	return (*C.uint64_t)(unsafe.Pointer(unsafe.SliceData(cu)))
}

// conv runs m2c_conv_step (prefill false) or m2c_conv_prefill.
func (c *Cache) conv(op string, layer int, slots []int32, cu []uint64, prefill bool, x, out Data, p *ConvParams) error {
	l, err := c.layerArg(op, layer)
	if err != nil {
		return err
	}
	io, n, err := c.checkTokens(op, c.convBufs(x, out), slots, cu, prefill)
	if err != nil {
		return err
	}
	if err := c.checkConvParams(op, p); err != nil {
		return err
	}
	var pin runtime.Pinner
	defer pin.Unpin()
	args := p.convArgs(io, &pin)
	sp, cp := slotsPtr(slots), cuPtr(cu)
	err = c.do(op, func(h *C.m2c_cache) C.m2c_status {
		if prefill {
			return C.m2c_conv_prefill(h, l, sp, C.size_t(n), cp, C.size_t(len(cu)),
				x.ptr, C.size_t(x.n), out.ptr, C.size_t(out.n), args)
		}
		return C.m2c_conv_step(h, l, sp, C.size_t(n), x.ptr, C.size_t(x.n), out.ptr, C.size_t(out.n), args)
	})
	runtime.KeepAlive(slots)
	runtime.KeepAlive(cu)
	runtime.KeepAlive(x.ptr)
	runtime.KeepAlive(out.ptr)
	runtime.KeepAlive(p.Weight)
	runtime.KeepAlive(p.Bias)
	runtime.KeepAlive(args)
	return err
}

// ssm runs m2c_ssm_step (prefill false) or m2c_ssm_prefill.
func (c *Cache) ssm(op string, layer int, slots []int32, cu []uint64, prefill bool, b *SSMIO, p *SSMParams) error {
	l, err := c.layerArg(op, layer)
	if err != nil {
		return err
	}
	io, n, err := c.checkTokens(op, c.ssmBufs([6]Data{b.X, b.Dt, b.B, b.C, b.Z, b.Y}), slots, cu, prefill)
	if err != nil {
		return err
	}
	if err := c.checkSSMParams(op, p); err != nil {
		return err
	}
	var pin runtime.Pinner
	defer pin.Unpin()
	args := p.ssmArgs(io, &pin)
	cio := b.ssmIO(&pin)
	sp, cp := slotsPtr(slots), cuPtr(cu)
	err = c.do(op, func(h *C.m2c_cache) C.m2c_status {
		if prefill {
			return C.m2c_ssm_prefill(h, l, sp, C.size_t(n), cp, C.size_t(len(cu)), cio, args)
		}
		return C.m2c_ssm_step(h, l, sp, C.size_t(n), cio, args)
	})
	runtime.KeepAlive(slots)
	runtime.KeepAlive(cu)
	runtime.KeepAlive(b)
	runtime.KeepAlive(p)
	runtime.KeepAlive(cio)
	runtime.KeepAlive(args)
	return err
}

// ConvStep runs one decode token through the depthwise causal conv of layer
// (m2c_conv_step, causal_conv1d_update), in place on the cache: for each
// row, x's row ([n, ConvDim]) is pushed into the slot's conv window and
// out's row ([n, ConvDim]) receives
// act(sum_k inputs[k]*Weight[c][k] + Bias[c]) over the ConvKernelSize
// newest inputs, oldest first. x and out share one dtype (the call's
// io_dtype); the math is f32. Works with both window layouts (ConvWidth K
// or K-1).
//
// Slots as for [Cache.UpdateConv]: nil means rows 0..n-1 with
// n = x.Len()/ConvDim; a negative entry is a padding row whose window is
// untouched and whose out row is written as zeros. Positions are not
// advanced (call [Cache.Advance] once per token).
//
// Errors: ErrShapeMismatch (any length), ErrNullArg (no Weight),
// ErrInvalidArg (unknown Activation, x and out of different dtypes, a slot
// listed twice, misaligned or overlapping buffers), ErrOutOfRange (layer or
// slot), ErrUnsupportedDtype, ErrPoisoned, ErrClosed. On failure neither
// the cache nor out is written.
func (c *Cache) ConvStep(layer int, slots []int32, x, out Data, p ConvParams) error {
	return c.conv("m2c_conv_step", layer, slots, nil, false, x, out, &p)
}

// ConvStepF32 is [Cache.ConvStep] with float32 input and output.
func (c *Cache) ConvStepF32(layer int, slots []int32, x, out []float32, p ConvParams) error {
	return c.ConvStep(layer, slots, F32Data(x), F32Data(out), p)
}

// ConvPrefill runs a prefill, or one chunk of a chunked prefill, through
// the causal conv of layer (m2c_conv_prefill). Sequence i is slot slots[i]
// (nil slots: slot i, for len(cuSeqlens)-1 sequences; negative: a padding
// sequence) and owns token rows cuSeqlens[i]..cuSeqlens[i+1] of x and out,
// each [T, ConvDim] with T = cuSeqlens[n]. cuSeqlens has n+1 entries,
// starts at 0 and never decreases; a sequence may be empty. Each
// sequence's tokens run in order with the slot's window as left context,
// and the window ends holding the last inputs: bit-identical to T calls of
// [Cache.ConvStep], so chunking never changes results. Padding sequences
// get zero out rows. Positions are not advanced.
//
// Errors: as [Cache.ConvStep], plus ErrShapeMismatch (len(cuSeqlens) !=
// n+1, or lengths that do not match T) and ErrInvalidArg (cuSeqlens[0] !=
// 0, or decreasing). On failure neither
// the cache nor out is written.
func (c *Cache) ConvPrefill(layer int, slots []int32, cuSeqlens []uint64, x, out Data, p ConvParams) error {
	return c.conv("m2c_conv_prefill", layer, slots, cuSeqlens, true, x, out, &p)
}

// ConvPrefillF32 is [Cache.ConvPrefill] with float32 input and output.
func (c *Cache) ConvPrefillF32(layer int, slots []int32, cuSeqlens []uint64, x, out []float32, p ConvParams) error {
	return c.ConvPrefill(layer, slots, cuSeqlens, F32Data(x), F32Data(out), p)
}

// SSMStep runs one decode token through the selective-state update of
// layer (m2c_ssm_step, Mamba2's selective_state_update), in place on the
// cache. Per slot and head h (group g = h / (NumHeads/NGroups)):
// dt = softplus(Dt[h] + DtBias[h]) (as p says, then clamped if asked),
// dA = exp(dt*A[h]), state = state*dA + (dt*X) outer B[g],
// Y = state . C[g] + D[h]*X, and Y *= Z*sigmoid(Z) when Z is given. The
// buffers of io hold T = n rows of one dtype; the math is f32 whatever the
// storage dtype.
//
// Slots as for [Cache.UpdateConv], with n = io.X.Len()/(NumHeads*HeadDim)
// for nil slots; padding rows keep their state and get zero Y rows.
// Positions are not advanced.
//
// Errors: ErrNullArg (no A), ErrShapeMismatch (any length, an empty
// buffer other than Z included),
// ErrInvalidArg (buffers of different dtypes, a slot listed twice,
// misaligned or overlapping buffers, clamp bounds that are not an
// interval), ErrOutOfRange, ErrUnsupportedDtype, ErrPoisoned, ErrClosed. On
// failure neither the cache nor Y is written.
func (c *Cache) SSMStep(layer int, slots []int32, io SSMIO, p SSMParams) error {
	return c.ssm("m2c_ssm_step", layer, slots, nil, false, &io, &p)
}

// SSMPrefill runs a prefill, or one chunk of a chunked prefill, through the
// selective-state update of layer (m2c_ssm_prefill): the exact sequential
// recurrence of [Cache.SSMStep] over many tokens. Sequences and cuSeqlens
// as for [Cache.ConvPrefill]; the buffers of io hold T = cuSeqlens[n] token
// rows. Each sequence starts from its slot's state and leaves the state
// after its last token there; Y receives every token's output.
// Bit-identical to T calls of [Cache.SSMStep]. Padding sequences get zero
// Y rows. Positions are not advanced.
//
// Errors: as [Cache.SSMStep], plus those of cuSeqlens listed for
// [Cache.ConvPrefill]. On failure neither the cache nor Y is written.
func (c *Cache) SSMPrefill(layer int, slots []int32, cuSeqlens []uint64, io SSMIO, p SSMParams) error {
	return c.ssm("m2c_ssm_prefill", layer, slots, cuSeqlens, true, &io, &p)
}
