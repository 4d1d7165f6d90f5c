package m2c

import "unsafe"

// Data is a Go buffer of elements of one dtype, passed to the batched calls
// without copying. Build it with [F32Data], [BF16Data], [F16Data] or
// [RawData]; the zero Data is an empty f32 buffer. A Data keeps its slice
// alive and shares its memory: the library reads (or, for reads of the
// cache, writes) the slice in place during the call.
type Data struct {
	ptr   unsafe.Pointer // first element; nil when empty
	n     int            // elements
	rem   int            // bytes left over after n whole elements (RawData)
	dtype DType
}

// F32Data wraps float32 elements.
func F32Data(x []float32) Data { return Data{ptr: ptrOf(x), n: len(x), dtype: F32} }

// BF16Data wraps bfloat16 elements, each the upper 16 bits of a float32.
func BF16Data(x []uint16) Data { return Data{ptr: ptrOf(x), n: len(x), dtype: BF16} }

// F16Data wraps IEEE-754 binary16 elements.
func F16Data(x []uint16) Data { return Data{ptr: ptrOf(x), n: len(x), dtype: F16} }

// RawData wraps little-endian bytes of elements of dtype dt (for example a
// tensor read from a file). The slice must be aligned to the element size
// (the library refuses a misaligned one with ErrInvalidArg) and its length
// a multiple of it.
func RawData(dt DType, b []byte) Data {
	size := dt.Size()
	if size == 0 { // unknown dtype: the library refuses it
		return Data{ptr: ptrOf(b), n: len(b), dtype: dt}
	}
	return Data{ptr: ptrOf(b), n: len(b) / size, rem: len(b) % size, dtype: dt}
}

// DType returns the element type.
func (d Data) DType() DType { return d.dtype }

// Len returns the number of whole elements.
func (d Data) Len() int { return d.n }

// ptrOf returns the first element of s, or nil for an empty slice, so that
// an empty buffer reaches C as (NULL, 0).
func ptrOf[T any](s []T) unsafe.Pointer {
	if len(s) == 0 {
		return nil
	}
	return unsafe.Pointer(unsafe.SliceData(s))
}
