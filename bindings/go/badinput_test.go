package m2c

import (
	"os"
	"path/filepath"
	"testing"
	"unsafe"
)

// badCase is one wrapper call with one bad input and the error it must give.
type badCase struct {
	name string
	call func(c *Cache) error
	want error
	// goOnly: the input cannot be expressed to C (the binding is the only
	// check), so the case runs only with the Go checks on.
	goOnly bool
}

// misaligned returns a []byte of n bytes whose first byte is not 4-aligned.
func misaligned(n int) []byte {
	b := make([]byte, n+8)
	off := 1
	if uintptr(unsafe.Pointer(&b[0]))%4 != 0 {
		off = 0
	}
	return b[off : off+n]
}

func badCases(t *testing.T, dir string) []badCase {
	cfg := smallConfig()
	dim, wl, sl := cfg.ConvDim(), cfg.ConvWindowLen(), cfg.SSMStateLen()

	// A valid snapshot of slot 0 and damaged copies of it.
	src := mustNew(t, cfg)
	fill(t, src)
	snap, err := src.SaveSlot(0)
	if err != nil {
		t.Fatal(err)
	}
	flipped := append([]byte(nil), snap...)
	flipped[100] ^= 0x40
	badMagic := append([]byte(nil), snap...)
	badMagic[0] = 'X'
	other := cfg
	other.StateSize = 8
	other.IntermediateSize = 8
	otherCache := mustNew(t, other)
	foreign, err := otherCache.SaveSlot(0)
	if err != nil {
		t.Fatal(err)
	}

	// Files: a valid one, a damaged one, one of another shape, garbage.
	good := filepath.Join(dir, "good.m2c")
	if err := src.SaveFile(good); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(good)
	raw[len(raw)/2] ^= 1
	damaged := filepath.Join(dir, "damaged.m2c")
	os.WriteFile(damaged, raw, 0o644)
	foreignFile := filepath.Join(dir, "foreign.m2c")
	if err := otherCache.SaveFile(foreignFile); err != nil {
		t.Fatal(err)
	}
	moreSlots := cfg
	moreSlots.NumSlots = 5
	moreFile := filepath.Join(dir, "five-slots.m2c")
	if err := mustNew(t, moreSlots).SaveFile(moreFile); err != nil {
		t.Fatal(err)
	}
	garbage := filepath.Join(dir, "garbage.m2c")
	os.WriteFile(garbage, []byte("not an m2c file"), 0o644)

	return []badCase{
		// update_conv
		{name: "update_conv layer past the end", call: func(c *Cache) error { return c.UpdateConvF32(2, []int32{0}, filled(dim, 1)) }, want: ErrOutOfRange},
		{name: "update_conv negative layer", call: func(c *Cache) error { return c.UpdateConvF32(-1, []int32{0}, filled(dim, 1)) }, want: ErrOutOfRange},
		{name: "update_conv layer past uint32", call: func(c *Cache) error { return c.UpdateConvF32(1<<33, []int32{0}, filled(dim, 1)) }, want: ErrOutOfRange, goOnly: true},
		{name: "update_conv short x", call: func(c *Cache) error { return c.UpdateConvF32(0, []int32{0}, filled(dim-1, 1)) }, want: ErrShapeMismatch},
		{name: "update_conv x for one row, two slots", call: func(c *Cache) error { return c.UpdateConvF32(0, []int32{0, 1}, filled(dim, 1)) }, want: ErrShapeMismatch},
		{name: "update_conv dense x not whole rows", call: func(c *Cache) error { return c.UpdateConvF32(0, nil, filled(dim+3, 1)) }, want: ErrShapeMismatch},
		{name: "update_conv dense rows past the slot count", call: func(c *Cache) error { return c.UpdateConvF32(0, nil, filled(5*dim, 1)) }, want: ErrOutOfRange},
		{name: "update_conv slot past the end", call: func(c *Cache) error { return c.UpdateConvF32(0, []int32{4}, filled(dim, 1)) }, want: ErrOutOfRange},
		{name: "update_conv duplicate slot", call: func(c *Cache) error { return c.UpdateConvF32(0, []int32{1, -1, 1}, filled(3*dim, 1)) }, want: ErrInvalidArg},
		{name: "update_conv unknown dtype", call: func(c *Cache) error { return c.UpdateConv(0, []int32{0}, RawData(DType(7), make([]byte, 4*dim))) }, want: ErrUnsupportedDtype},
		{name: "update_conv misaligned bytes", call: func(c *Cache) error { return c.UpdateConv(0, []int32{0}, RawData(F32, misaligned(4*dim))) }, want: ErrInvalidArg},
		{name: "update_conv bytes not whole elements", call: func(c *Cache) error { return c.UpdateConv(0, []int32{0}, RawData(F32, make([]byte, 4*dim+1))) }, want: ErrShapeMismatch, goOnly: true},
		// set_conv
		{name: "set_conv short window", call: func(c *Cache) error { return c.SetConvF32(0, []int32{0}, filled(wl-1, 1)) }, want: ErrShapeMismatch},
		{name: "set_conv update-sized window", call: func(c *Cache) error { return c.SetConvF32(0, []int32{0}, filled(dim, 1)) }, want: ErrShapeMismatch},
		{name: "set_conv layer past the end", call: func(c *Cache) error { return c.SetConvF32(9, nil, filled(wl, 1)) }, want: ErrOutOfRange},
		{name: "set_conv duplicate slot", call: func(c *Cache) error { return c.SetConv(1, []int32{3, 3}, BF16Data(make([]uint16, 2*wl))) }, want: ErrInvalidArg},
		// update_ssm
		{name: "update_ssm long state", call: func(c *Cache) error { return c.UpdateSSMF32(0, []int32{0}, filled(sl+1, 1)) }, want: ErrShapeMismatch},
		{name: "update_ssm slot past the end", call: func(c *Cache) error { return c.UpdateSSM(1, []int32{-1, 17}, F16Data(make([]uint16, 2*sl))) }, want: ErrOutOfRange},
		{name: "update_ssm unknown dtype", call: func(c *Cache) error { return c.UpdateSSM(0, nil, RawData(DType(3), make([]byte, 8))) }, want: ErrUnsupportedDtype},
		// read_conv / read_ssm
		{name: "read_conv short out", call: func(c *Cache) error { return c.ReadConvF32(0, []int32{0}, make([]float32, wl-4)) }, want: ErrShapeMismatch},
		{name: "read_conv duplicate slot", call: func(c *Cache) error { return c.ReadConvF32(0, []int32{2, 2}, make([]float32, 2*wl)) }, want: ErrInvalidArg},
		{name: "read_conv layer past the end", call: func(c *Cache) error { return c.ReadConvF32(2, nil, make([]float32, wl)) }, want: ErrOutOfRange},
		{name: "read_ssm slot past the end", call: func(c *Cache) error { return c.ReadSSMF32(0, []int32{99}, make([]float32, sl)) }, want: ErrOutOfRange},
		{name: "read_ssm out not whole rows", call: func(c *Cache) error { return c.ReadSSM(0, nil, BF16Data(make([]uint16, sl+1))) }, want: ErrShapeMismatch},
		{name: "read_ssm misaligned out", call: func(c *Cache) error { return c.ReadSSM(0, []int32{0}, RawData(F32, misaligned(4*sl))) }, want: ErrInvalidArg},
		// reset / advance / position
		{name: "reset duplicate slot", call: func(c *Cache) error { return c.Reset([]int32{0, 0}) }, want: ErrInvalidArg},
		{name: "reset slot past the end", call: func(c *Cache) error { return c.Reset([]int32{1, 4}) }, want: ErrOutOfRange},
		{name: "advance slot past the end", call: func(c *Cache) error { return c.Advance([]int32{4}, 1) }, want: ErrOutOfRange},
		{name: "advance duplicate slot", call: func(c *Cache) error { return c.Advance([]int32{2, -5, 2}, 1) }, want: ErrInvalidArg},
		{name: "position negative slot", call: func(c *Cache) error { _, err := c.Position(-1); return err }, want: ErrOutOfRange},
		{name: "position slot past the end", call: func(c *Cache) error { _, err := c.Position(4); return err }, want: ErrOutOfRange},
		{name: "position slot past int32", call: func(c *Cache) error { _, err := c.Position(1 << 40); return err }, want: ErrOutOfRange, goOnly: true},
		// views
		{name: "conv_view layer past the end", call: func(c *Cache) error { _, err := c.ConvView(2); return err }, want: ErrOutOfRange},
		{name: "ssm_view layer past the end", call: func(c *Cache) error { _, err := c.SSMView(3); return err }, want: ErrOutOfRange},
		// slots
		{name: "slot_release not acquired", call: func(c *Cache) error { return c.ReleaseSlot(1) }, want: ErrInvalidArg},
		{name: "slot_release slot past the end", call: func(c *Cache) error { return c.ReleaseSlot(4) }, want: ErrOutOfRange},
		{name: "slot_release negative slot", call: func(c *Cache) error { return c.ReleaseSlot(-1) }, want: ErrOutOfRange},
		{name: "copy_slots duplicate destination", call: func(c *Cache) error { return c.CopySlots([]int32{0, 1}, []int32{2, 2}) }, want: ErrInvalidArg},
		{name: "copy_slots source past the end", call: func(c *Cache) error { return c.CopySlots([]int32{4}, []int32{0}) }, want: ErrOutOfRange},
		{name: "copy_slots padding source, real destination", call: func(c *Cache) error { return c.CopySlots([]int32{-1}, []int32{0}) }, want: ErrOutOfRange},
		{name: "copy_slots lengths differ", call: func(c *Cache) error { return c.CopySlots([]int32{0, 1}, []int32{2}) }, want: ErrShapeMismatch, goOnly: true},
		// snapshots
		{name: "slot_save slot past the end", call: func(c *Cache) error { _, err := c.SaveSlot(4); return err }, want: ErrOutOfRange},
		{name: "slot_save empty buffer (NULL, 0)", call: func(c *Cache) error { _, err := c.SaveSlotTo(0, nil); return err }, want: ErrShapeMismatch},
		{name: "slot_save buffer too small", call: func(c *Cache) error { _, err := c.SaveSlotTo(0, make([]byte, 64)); return err }, want: ErrShapeMismatch},
		{name: "slot_load flipped byte", call: func(c *Cache) error { return c.LoadSlot(1, flipped) }, want: ErrCorrupt},
		{name: "slot_load bad magic", call: func(c *Cache) error { return c.LoadSlot(1, badMagic) }, want: ErrCorrupt},
		{name: "slot_load truncated", call: func(c *Cache) error { return c.LoadSlot(1, snap[:len(snap)-1]) }, want: ErrCorrupt},
		{name: "slot_load empty", call: func(c *Cache) error { return c.LoadSlot(1, nil) }, want: ErrCorrupt},
		{name: "slot_load another shape", call: func(c *Cache) error { return c.LoadSlot(1, foreign) }, want: ErrIncompatible},
		{name: "slot_load slot past the end", call: func(c *Cache) error { return c.LoadSlot(4, snap) }, want: ErrOutOfRange},
		// files
		{name: "save_file empty path", call: func(c *Cache) error { return c.SaveFile("") }, want: ErrInvalidArg},
		{name: "save_file missing directory", call: func(c *Cache) error { return c.SaveFile(filepath.Join(dir, "no", "such", "dir", "f")) }, want: ErrIO},
		{name: "save_file NUL in path", call: func(c *Cache) error { return c.SaveFile(dir + "/a\x00b") }, want: ErrInvalidArg, goOnly: true},
		{name: "load_file missing file", call: func(c *Cache) error { return c.LoadFile(filepath.Join(dir, "missing.m2c")) }, want: ErrIO},
		{name: "load_file a directory", call: func(c *Cache) error { return c.LoadFile(dir) }, want: ErrInvalidArg},
		{name: "load_file empty path", call: func(c *Cache) error { return c.LoadFile("") }, want: ErrInvalidArg},
		{name: "load_file damaged", call: func(c *Cache) error { return c.LoadFile(damaged) }, want: ErrCorrupt},
		{name: "load_file garbage", call: func(c *Cache) error { return c.LoadFile(garbage) }, want: ErrCorrupt},
		{name: "load_file another shape", call: func(c *Cache) error { return c.LoadFile(foreignFile) }, want: ErrIncompatible},
		{name: "load_file another slot count", call: func(c *Cache) error { return c.LoadFile(moreFile) }, want: ErrIncompatible},
		{name: "load_file NUL in path", call: func(c *Cache) error { return c.LoadFile("a\x00") }, want: ErrInvalidArg, goOnly: true},
	}
}

// TestBadInputsAreRefusedAndChangeNothing runs every bad call twice: with
// the binding's own checks, and with them off so that the library alone
// must refuse it with the same status. Either way the cache is unchanged.
func TestBadInputsAreRefusedAndChangeNothing(t *testing.T) {
	cases := append(badCases(t, t.TempDir()), kernelBadCases()...)
	for _, mode := range []struct {
		name string
		skip bool
	}{{"go checks", false}, {"library checks only", true}} {
		t.Run(mode.name, func(t *testing.T) {
			skipGoChecks.Store(mode.skip)
			defer skipGoChecks.Store(false)
			c := mustNew(t, smallConfig())
			fill(t, c)
			if s, err := c.AcquireSlot(); err != nil || s != 0 {
				t.Fatalf("AcquireSlot = %d, %v", s, err)
			}
			before := snapshotState(t, c)
			for _, tc := range cases {
				if mode.skip && tc.goOnly {
					continue
				}
				t.Run(tc.name, func(t *testing.T) {
					checkErr(t, tc.call(c), tc.want)
					if !sameState(before, snapshotState(t, c)) {
						t.Fatal("a failed call changed the cache")
					}
				})
			}
		})
	}
}

// TestGoChecksDoNotReachTheLibrary shows that a length refused in Go never
// crosses into C: the message is the binding's, in the library's style.
func TestGoChecksDoNotReachTheLibrary(t *testing.T) {
	c := mustNew(t, smallConfig())
	err := c.UpdateConvF32(0, []int32{0}, make([]float32, 3))
	checkErr(t, err, ErrShapeMismatch)
	want := "m2c_update_conv: x has 3 elements, but 1 rows of 16 need 16"
	if e := err.(*Error); e.Msg != want || e.Op != "m2c_update_conv" {
		t.Fatalf("Msg = %q", e.Msg)
	}
	skipGoChecks.Store(true)
	defer skipGoChecks.Store(false)
	err = c.UpdateConvF32(0, []int32{0}, make([]float32, 3))
	checkErr(t, err, ErrShapeMismatch)
	if e := err.(*Error); e.Msg == want {
		t.Fatal("the library's message is the binding's")
	}
	t.Logf("library: %v", err)
}
