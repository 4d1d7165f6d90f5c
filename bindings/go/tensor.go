package m2c

// #include "m2c.h"
import "C"

import (
	"runtime"
	"unsafe"
)

// Tensor is a zero-copy view of one layer's storage for every slot
// (m2c_tensor). Element [i0][i1][i2][i3] is at Data + (i0*Strides[0] +
// i1*Strides[1] + ...) * DType.Size() bytes.
//
// Data points into the cache's C memory: it is valid only while the cache
// is open. Close the cache (or let it be garbage collected) and every view
// of it dangles, so keep the *Cache reachable (runtime.KeepAlive) and open
// for as long as you use a view. Access through a view is not synchronised
// with the cache's own calls: do not read a layer through a view while
// another goroutine writes that layer, nor write through it while m2c works
// on the layer.
type Tensor struct {
	Data        unsafe.Pointer // the first element, 64-byte aligned
	DType       DType          // element type (the storage dtype)
	Shape       []int          // extent of each dimension (3 for conv, 4 for ssm)
	Strides     []int          // distance between consecutive indices, in elements
	Device      Device         // where Data lives; a DeviceCUDA pointer is not host memory
	DeviceIndex int32          // the device index of Data
}

// Len returns the number of elements the view spans.
func (t Tensor) Len() int {
	if len(t.Shape) == 0 {
		return 0
	}
	n := 1
	for _, s := range t.Shape {
		n *= s
	}
	return n
}

// Offset returns the element offset of the index idx (one entry per
// dimension), or -1 if idx has the wrong rank or is out of bounds.
func (t Tensor) Offset(idx ...int) int {
	if len(idx) != len(t.Shape) {
		return -1
	}
	off := 0
	for d, i := range idx {
		if i < 0 || i >= t.Shape[d] {
			return -1
		}
		off += i * t.Strides[d]
	}
	return off
}

// F32 returns the view as a []float32 over the cache's memory, or nil unless
// the view is f32 host memory. Valid only while the cache is open.
func (t Tensor) F32() []float32 {
	if t.DType != F32 || t.Device != DeviceCPU || t.Data == nil {
		return nil
	}
	return unsafe.Slice((*float32)(t.Data), t.Len())
}

// Uint16 returns the view as a []uint16 of bf16 or f16 bits over the cache's
// memory, or nil unless the view is bf16/f16 host memory. Valid only while
// the cache is open.
func (t Tensor) Uint16() []uint16 {
	if (t.DType != BF16 && t.DType != F16) || t.Device != DeviceCPU || t.Data == nil {
		return nil
	}
	return unsafe.Slice((*uint16)(t.Data), t.Len())
}

func tensorFromC(t *C.m2c_tensor) Tensor {
	nd := int(t.ndim)
	if nd > len(t.shape) {
		nd = len(t.shape)
	}
	out := Tensor{
		Data:        t.data,
		DType:       DType(t.dtype),
		Shape:       make([]int, nd),
		Strides:     make([]int, nd),
		Device:      Device(t.device),
		DeviceIndex: int32(t.device_index),
	}
	for i := 0; i < nd; i++ {
		out.Shape[i] = int(t.shape[i])
		out.Strides[i] = int(t.strides[i])
	}
	return out
}

func (c *Cache) view(op string, layer int, ssm bool) (Tensor, error) {
	l, err := c.layerArg(op, layer)
	if err != nil {
		return Tensor{}, err
	}
	var t C.m2c_tensor
	err = c.do(op, func(h *C.m2c_cache) C.m2c_status {
		if ssm {
			return C.m2c_ssm_view(h, l, &t)
		}
		return C.m2c_conv_view(h, l, &t)
	})
	runtime.KeepAlive(&t)
	if err != nil {
		return Tensor{}, err
	}
	return tensorFromC(&t), nil
}

// ConvView describes the conv storage of layer as a 3-D tensor
// [NumSlots, ConvDim, ConvWidth] in the conv storage dtype, without copying
// (m2c_conv_view). See [Tensor] for how long it stays valid. Errors:
// ErrOutOfRange (layer), ErrPoisoned, ErrClosed.
func (c *Cache) ConvView(layer int) (Tensor, error) { return c.view("m2c_conv_view", layer, false) }

// SSMView describes the SSM storage of layer as a 4-D tensor
// [NumSlots, NumHeads, HeadDim, StateSize] in the SSM storage dtype, without
// copying (m2c_ssm_view). As [Cache.ConvView] otherwise.
func (c *Cache) SSMView(layer int) (Tensor, error) { return c.view("m2c_ssm_view", layer, true) }
