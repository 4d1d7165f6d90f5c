package m2c

import (
	"bytes"
	"encoding/binary"
	"testing"
	"unsafe"
)

// TestRegionsRebuildASnapshot reads a slot's regions from the arenas and
// compares the bytes with its snapshot's payload; refusals map to errors.
func TestRegionsRebuildASnapshot(t *testing.T) {
	c := mustNew(t, smallConfig())
	defer c.Close()
	fill(t, c)
	arenas, err := c.Arenas()
	checkErr(t, err, nil)
	if len(arenas) != 2*int(c.cfg.NumLayers) || arenas[0].Device != DeviceCPU {
		t.Fatalf("arenas = %+v", arenas)
	}
	regions, err := c.SlotRegions([]int32{2})
	checkErr(t, err, nil)
	snap, err := c.SaveSlot(2)
	checkErr(t, err, nil)
	image := make([]byte, len(snap))
	for _, r := range regions {
		// The arena is the layer's view storage: read it through the view.
		var v Tensor
		if r.Arena%2 == 0 {
			v, err = c.ConvView(int(r.Arena / 2))
		} else {
			v, err = c.SSMView(int(r.Arena / 2))
		}
		checkErr(t, err, nil)
		if uint64(uintptr(v.Data)) != arenas[r.Arena].Base {
			t.Fatalf("arena %d is not the view's storage", r.Arena)
		}
		src := unsafe.Slice((*byte)(v.Data), arenas[r.Arena].Len)
		copy(image[r.ImageOffset:], src[r.Offset:r.Offset+r.Len])
	}
	if !bytes.Equal(image[72:len(snap)-8], snap[72:len(snap)-8]) {
		t.Fatal("the regions do not rebuild the snapshot's payload")
	}
	d, err := c.SlotDigest(2)
	checkErr(t, err, nil)
	if d != binary.LittleEndian.Uint64(snap[len(snap)-8:]) {
		t.Fatal("SlotDigest is not the snapshot's checksum")
	}
	_, err = c.SlotDigest(99)
	checkErr(t, err, ErrOutOfRange)
	_, err = c.SlotRegions([]int32{-1})
	checkErr(t, err, ErrOutOfRange)
	_, err = c.SlotRegions([]int32{1, 1})
	checkErr(t, err, ErrInvalidArg)
	_, err = c.SlotRegions([]int32{99})
	checkErr(t, err, ErrOutOfRange)
}
