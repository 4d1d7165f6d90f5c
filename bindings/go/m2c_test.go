package m2c

import (
	"encoding/binary"
	"errors"
	"io"
	"math"
	"math/rand"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var _ io.Closer = (*Cache)(nil)

func TestVersionMatchesHeader(t *testing.T) {
	if v := Version(); v != HeaderVersion {
		t.Fatalf("Version() = %q, header says %q", v, HeaderVersion)
	}
	if a := ABIVersion(); a != HeaderABIVersion {
		t.Fatalf("ABIVersion() = %d, header says %d", a, HeaderABIVersion)
	}
	if err := CheckABI(); err != nil {
		t.Fatalf("CheckABI: %v", err)
	}
}

func TestABIMismatchIsRefused(t *testing.T) {
	err := checkABI(HeaderABIVersion+1, HeaderABIVersion)
	if !errors.Is(err, ErrIncompatible) || !strings.Contains(err.Error(), "ABI version") {
		t.Fatalf("checkABI with a mismatch = %v", err)
	}
	saved := abiErr
	abiErr = err
	defer func() { abiErr = saved }()
	if _, err := New(smallConfig()); !errors.Is(err, ErrIncompatible) {
		t.Fatalf("New with a mismatched library = %v", err)
	}
	if _, err := ConfigBytes(smallConfig()); !errors.Is(err, ErrIncompatible) {
		t.Fatalf("ConfigBytes with a mismatched library = %v", err)
	}
}

func TestStatusMapsToSentinel(t *testing.T) {
	sentinels := map[Status]error{
		StatusNullArg: ErrNullArg, StatusInvalidArg: ErrInvalidArg, StatusInvalidConfig: ErrInvalidConfig,
		StatusOutOfRange: ErrOutOfRange, StatusShapeMismatch: ErrShapeMismatch,
		StatusUnsupportedDtype: ErrUnsupportedDtype, StatusOutOfMemory: ErrOutOfMemory,
		StatusPoisoned: ErrPoisoned, StatusPanic: ErrPanic, StatusUnsupported: ErrUnsupported,
		StatusNoFreeSlot: ErrNoFreeSlot, StatusCorrupt: ErrCorrupt, StatusIncompatible: ErrIncompatible,
		StatusIO: ErrIO, StatusNotFound: ErrNotFound,
	}
	if statusError("op", StatusOK) != nil {
		t.Fatal("StatusOK is not nil")
	}
	for code := Status(1); code <= 15; code++ {
		want, ok := sentinels[code]
		if !ok {
			t.Fatalf("no sentinel for %d", code)
		}
		err := statusError("m2c_x", code)
		for other, s := range sentinels {
			if errors.Is(err, s) != (other == code) {
				t.Fatalf("errors.Is(status %d, sentinel %d) = %v", code, other, !(other == code))
			}
		}
		if !errors.Is(err, want) {
			t.Fatalf("status %d does not match its sentinel", code)
		}
		if s := code.String(); s == "" || s == "unknown status code" {
			t.Fatalf("status %d has text %q", code, s)
		}
		if !strings.Contains(want.Error(), code.String()) {
			t.Fatalf("sentinel %d prints %q", code, want.Error())
		}
	}
	if StatusOK.String() != "ok" {
		t.Fatalf("StatusOK.String() = %q", StatusOK.String())
	}
}

func TestUnknownStatusIsAnError(t *testing.T) {
	for _, code := range []Status{16, 99, -1, math.MaxInt32} {
		err := statusError("m2c_future", code)
		if err == nil {
			t.Fatalf("unknown status %d treated as success", code)
		}
		var e *Error
		if !errors.As(err, &e) || e.Code != code {
			t.Fatalf("status %d: %v", code, err)
		}
		if code.String() != "unknown status code" {
			t.Fatalf("Status(%d).String() = %q", code, code.String())
		}
		for _, s := range []error{ErrNullArg, ErrInvalidArg, ErrPanic, ErrIO, ErrClosed} {
			if errors.Is(err, s) {
				t.Fatalf("unknown status %d matches %v", code, s)
			}
		}
		if !strings.Contains(err.Error(), "unknown status code") {
			t.Fatalf("error text %q", err.Error())
		}
	}
}

func TestDefaultConfigIsMamba2_130m(t *testing.T) {
	cfg := DefaultConfig()
	want := Config{
		NumLayers: 24, NumSlots: 1, IntermediateSize: 1536, NumHeads: 24, HeadDim: 64, StateSize: 128,
		NGroups: 1, ConvKernelSize: 4, ConvWidth: 4, ConvDType: BF16, SSMDType: F32, Device: DeviceCPU,
	}
	if cfg != want {
		t.Fatalf("DefaultConfig() = %+v, want %+v", cfg, want)
	}
	if cfg.ConvDim() != 1536+2*128 || cfg.ConvWindowLen() != 1792*4 || cfg.SSMStateLen() != 24*64*128 {
		t.Fatalf("derived sizes %d %d %d", cfg.ConvDim(), cfg.ConvWindowLen(), cfg.SSMStateLen())
	}
}

func TestConfigBytes(t *testing.T) {
	cfg := smallConfig()
	got, err := ConfigBytes(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Per layer: conv 4*16*4*4 = 1024 bytes, ssm 4*32*4 = 512 bytes (both
	// multiples of 64).
	if got != 2*(1024+512) {
		t.Fatalf("ConfigBytes = %d, want %d", got, 2*(1024+512))
	}
}

// badConfigs are configurations the library refuses, with the status.
func badConfigs() []struct {
	name string
	mod  func(*Config)
	want error
} {
	return []struct {
		name string
		mod  func(*Config)
		want error
	}{
		{"zero layers", func(c *Config) { c.NumLayers = 0 }, ErrInvalidConfig},
		{"zero slots", func(c *Config) { c.NumSlots = 0 }, ErrInvalidConfig},
		{"intermediate != heads*head_dim", func(c *Config) { c.IntermediateSize = 9 }, ErrInvalidConfig},
		{"heads not a multiple of groups", func(c *Config) { c.NGroups = 3 }, ErrInvalidConfig},
		{"kernel 1", func(c *Config) { c.ConvKernelSize = 1; c.ConvWidth = 1 }, ErrInvalidConfig},
		{"conv width K+1", func(c *Config) { c.ConvWidth = 5 }, ErrInvalidConfig},
		{"conv dtype 9", func(c *Config) { c.ConvDType = 9 }, ErrUnsupportedDtype},
		{"ssm dtype 3", func(c *Config) { c.SSMDType = 3 }, ErrUnsupportedDtype},
		{"device 7", func(c *Config) { c.Device = 7 }, ErrInvalidConfig},
		{"negative device index", func(c *Config) { c.DeviceIndex = -1 }, ErrInvalidConfig},
	}
}

func TestConfigBytesRefusesBadConfigs(t *testing.T) {
	for _, tc := range badConfigs() {
		t.Run(tc.name, func(t *testing.T) {
			cfg := smallConfig()
			tc.mod(&cfg)
			n, err := ConfigBytes(cfg)
			checkErr(t, err, tc.want)
			if n != 0 {
				t.Fatalf("bytes = %d on failure", n)
			}
		})
	}
}

func TestNewRefusesBadConfigs(t *testing.T) {
	cases := append(badConfigs(), struct {
		name string
		mod  func(*Config)
		want error
	}{"cuda without the cuda feature", func(c *Config) { c.Device = DeviceCUDA }, ErrUnsupported})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := smallConfig()
			tc.mod(&cfg)
			c, err := New(cfg)
			checkErr(t, err, tc.want)
			if c != nil {
				t.Fatal("a cache came back with an error")
			}
		})
	}
}

func TestGetConfigRoundTrips(t *testing.T) {
	for _, dt := range []struct{ conv, ssm DType }{{F32, F32}, {BF16, F32}, {F16, BF16}} {
		cfg := smallConfig()
		cfg.ConvDType, cfg.SSMDType = dt.conv, dt.ssm
		cfg.ConvWidth = 3
		cfg.NumSlots = 7
		c := mustNew(t, cfg)
		got, err := c.Config()
		if err != nil {
			t.Fatal(err)
		}
		if got != cfg {
			t.Fatalf("Config() = %+v, want %+v", got, cfg)
		}
	}
}

func TestCloseIsIdempotentAndLaterCallsFail(t *testing.T) {
	c, err := New(smallConfig())
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	calls := map[string]error{}
	calls["Config"] = func() error { _, err := c.Config(); return err }()
	calls["UpdateConvF32"] = c.UpdateConvF32(0, nil, nil)
	calls["SetConvF32"] = c.SetConvF32(0, nil, nil)
	calls["UpdateSSMF32"] = c.UpdateSSMF32(0, nil, nil)
	calls["ReadConvF32"] = c.ReadConvF32(0, nil, nil)
	calls["ReadSSMF32"] = c.ReadSSMF32(0, nil, nil)
	calls["Reset"] = c.Reset(nil)
	calls["Advance"] = c.Advance(nil, 1)
	calls["Position"] = func() error { _, err := c.Position(0); return err }()
	calls["ConvView"] = func() error { _, err := c.ConvView(0); return err }()
	calls["SSMView"] = func() error { _, err := c.SSMView(0); return err }()
	calls["AcquireSlot"] = func() error { _, err := c.AcquireSlot(); return err }()
	calls["ReleaseSlot"] = c.ReleaseSlot(0)
	calls["SlotsInUse"] = func() error { _, err := c.SlotsInUse(); return err }()
	calls["CopySlots"] = c.CopySlots(nil, nil)
	calls["SnapshotSize"] = func() error { _, err := c.SnapshotSize(); return err }()
	calls["SaveSlot"] = func() error { _, err := c.SaveSlot(0); return err }()
	calls["LoadSlot"] = c.LoadSlot(0, []byte{1})
	calls["SaveFile"] = c.SaveFile(filepath.Join(t.TempDir(), "x"))
	calls["LoadFile"] = c.LoadFile(filepath.Join(t.TempDir(), "x"))
	calls["CheckFinite"] = func() error { _, err := c.CheckFinite(0); return err }()
	cp, sp := kernelParams(rand.New(rand.NewSource(1)), smallConfig())
	calls["ConvStep"] = c.ConvStepF32(0, nil, nil, nil, cp)
	calls["ConvPrefill"] = c.ConvPrefillF32(0, nil, []uint64{0}, nil, nil, cp)
	calls["SSMStep"] = c.SSMStep(0, nil, SSMIO{}, sp)
	calls["SSMPrefill"] = c.SSMPrefill(0, nil, []uint64{0}, SSMIO{}, sp)
	for name, err := range calls {
		if !errors.Is(err, ErrClosed) || !errors.Is(err, ErrNullArg) {
			t.Errorf("%s after Close = %v, want ErrClosed and ErrNullArg", name, err)
		}
	}
}

func TestUpdateConvShiftsTheWindow(t *testing.T) {
	c := mustNew(t, smallConfig())
	dim := c.cfg.ConvDim()
	for step := 1; step <= 5; step++ {
		// Row 0 -> slot 2, row 1 is padding.
		x := append(filled(dim, float32(step)), filled(dim, 99)...)
		if err := c.UpdateConvF32(1, []int32{2, -1}, x); err != nil {
			t.Fatal(err)
		}
	}
	out := make([]float32, 2*c.cfg.ConvWindowLen())
	if err := c.ReadConvF32(1, []int32{2, -1}, out); err != nil {
		t.Fatal(err)
	}
	w := int(c.cfg.ConvWidth)
	for ch := 0; ch < dim; ch++ {
		got := out[ch*w : (ch+1)*w]
		if !equalF32(got, []float32{2, 3, 4, 5}) {
			t.Fatalf("channel %d window %v, want [2 3 4 5]", ch, got)
		}
	}
	for i, v := range out[c.cfg.ConvWindowLen():] {
		if v != 0 {
			t.Fatalf("padding row element %d = %v, want 0", i, v)
		}
	}
	// Other slots and the other layer are untouched.
	all := make([]float32, 4*c.cfg.ConvWindowLen())
	if err := c.ReadConvF32(0, nil, all); err != nil {
		t.Fatal(err)
	}
	for _, v := range all {
		if v != 0 {
			t.Fatal("layer 0 changed")
		}
	}
}

func TestDenseRowsAddressLeadingSlots(t *testing.T) {
	c := mustNew(t, smallConfig())
	n := c.cfg.SSMStateLen()
	// nil slots with two rows of data: slots 0 and 1.
	if err := c.UpdateSSMF32(0, nil, append(filled(n, 1), filled(n, 2)...)); err != nil {
		t.Fatal(err)
	}
	out := make([]float32, 4*n)
	if err := c.ReadSSMF32(0, nil, out); err != nil {
		t.Fatal(err)
	}
	for s, want := range []float32{1, 2, 0, 0} {
		if !equalF32(out[s*n:(s+1)*n], filled(n, want)) {
			t.Fatalf("slot %d: %v", s, out[s*n:(s+1)*n])
		}
	}
	// Empty calls are valid: nil data with nil slots, and an empty slot list.
	checkErr(t, c.UpdateSSMF32(0, nil, nil), nil)
	checkErr(t, c.UpdateConvF32(0, []int32{}, nil), nil)
	checkErr(t, c.ReadConvF32(1, nil, nil), nil)
}

func TestSetConvAndUpdateSSMRoundTripInEveryDType(t *testing.T) {
	for _, store := range []DType{F32, BF16, F16} {
		t.Run(store.String(), func(t *testing.T) {
			cfg := smallConfig()
			cfg.ConvDType, cfg.SSMDType = store, store
			c := mustNew(t, cfg)
			win := ramp(cfg.ConvWindowLen(), 1) // small integers: exact in every dtype
			st := ramp(cfg.SSMStateLen(), -8)
			checkErr(t, c.SetConvF32(1, []int32{3}, win), nil)
			checkErr(t, c.UpdateSSMF32(1, []int32{3}, st), nil)

			gotWin := make([]float32, len(win))
			gotSt := make([]float32, len(st))
			checkErr(t, c.ReadConvF32(1, []int32{3}, gotWin), nil)
			checkErr(t, c.ReadSSMF32(1, []int32{3}, gotSt), nil)
			if !equalF32(gotWin, win) || !equalF32(gotSt, st) {
				t.Fatal("f32 round trip differs")
			}

			// The same values read as bf16 and f16 bits.
			b := make([]uint16, len(win))
			checkErr(t, c.ReadConv(1, []int32{3}, BF16Data(b)), nil)
			if b[0] != 0x3F80 || b[1] != 0x4000 { // 1.0, 2.0
				t.Fatalf("bf16 bits %#x %#x", b[0], b[1])
			}
			h := make([]uint16, len(st))
			checkErr(t, c.ReadSSM(1, []int32{3}, F16Data(h)), nil)
			if h[0] != 0xC800 { // -8.0
				t.Fatalf("f16 bits %#x", h[0])
			}

			// Writes in bf16 and f16 convert too.
			one := make([]uint16, len(win))
			for i := range one {
				one[i] = 0x3FC0 // bf16 1.5
			}
			checkErr(t, c.SetConv(0, []int32{0}, BF16Data(one)), nil)
			half := make([]uint16, len(st))
			for i := range half {
				half[i] = 0x3800 // f16 0.5
			}
			checkErr(t, c.UpdateSSM(0, []int32{0}, F16Data(half)), nil)
			checkErr(t, c.ReadConvF32(0, []int32{0}, gotWin), nil)
			checkErr(t, c.ReadSSMF32(0, []int32{0}, gotSt), nil)
			if !equalF32(gotWin, filled(len(win), 1.5)) || !equalF32(gotSt, filled(len(st), 0.5)) {
				t.Fatal("bf16/f16 writes did not convert")
			}

			// And raw little-endian bytes.
			raw := make([]byte, 4*cfg.ConvDim())
			for i := 0; i < cfg.ConvDim(); i++ {
				copy(raw[4*i:], []byte{0, 0, 0x20, 0x41}) // 10.0f
			}
			checkErr(t, c.UpdateConv(0, []int32{0}, RawData(F32, raw)), nil)
			checkErr(t, c.ReadConvF32(0, []int32{0}, gotWin), nil)
			w := int(cfg.ConvWidth)
			if gotWin[w-1] != 10 || gotWin[w-2] != 1.5 {
				t.Fatalf("raw update: newest %v, previous %v", gotWin[w-1], gotWin[w-2])
			}
		})
	}
}

func TestResetAdvancePosition(t *testing.T) {
	c := mustNew(t, smallConfig())
	fill(t, c)
	checkErr(t, c.Advance(nil, 10), nil) // every slot
	for s := 0; s < 4; s++ {
		p, err := c.Position(s)
		checkErr(t, err, nil)
		if p != uint64(s+1+10) {
			t.Fatalf("slot %d position %d", s, p)
		}
	}
	checkErr(t, c.Reset([]int32{1, -1, 3}), nil)
	st := snapshotState(t, c)
	if st.pos[0] != 11 || st.pos[1] != 0 || st.pos[2] != 13 || st.pos[3] != 0 {
		t.Fatalf("positions after reset %v", st.pos)
	}
	wl := c.cfg.ConvWindowLen()
	for l := range st.conv {
		if !equalF32(st.conv[l][wl:2*wl], make([]float32, wl)) || equalF32(st.conv[l][0:wl], make([]float32, wl)) {
			t.Fatalf("layer %d: reset touched the wrong slots", l)
		}
	}
	checkErr(t, c.Reset(nil), nil)
	st = snapshotState(t, c)
	for _, p := range st.pos {
		if p != 0 {
			t.Fatal("Reset(nil) left a position")
		}
	}
}

func TestViewsShareTheCacheMemory(t *testing.T) {
	cfg := smallConfig()
	cfg.SSMDType = BF16
	c := mustNew(t, cfg)
	fill(t, c)
	cv, err := c.ConvView(1)
	checkErr(t, err, nil)
	if cv.DType != F32 || cv.Device != DeviceCPU || len(cv.Shape) != 3 ||
		cv.Shape[0] != 4 || cv.Shape[1] != 16 || cv.Shape[2] != 4 ||
		cv.Strides[0] != 64 || cv.Strides[1] != 4 || cv.Strides[2] != 1 {
		t.Fatalf("conv view %+v", cv)
	}
	if uintptr(cv.Data)%64 != 0 {
		t.Fatal("view not 64-byte aligned")
	}
	got := make([]float32, cfg.ConvWindowLen())
	checkErr(t, c.ReadConvF32(1, []int32{2}, got), nil)
	f := cv.F32()
	if len(f) != cv.Len() || f[cv.Offset(2, 5, 3)] != got[5*4+3] {
		t.Fatal("the view does not show slot 2")
	}
	f[cv.Offset(2, 0, 0)] = 42 // a write through the view is a write to the cache
	checkErr(t, c.ReadConvF32(1, []int32{2}, got), nil)
	if got[0] != 42 {
		t.Fatal("a write through the view is not visible")
	}
	if cv.Uint16() != nil || cv.Offset(4, 0, 0) != -1 || cv.Offset(0, 0) != -1 {
		t.Fatal("view accessors accept bad input")
	}

	sv, err := c.SSMView(0)
	checkErr(t, err, nil)
	if sv.DType != BF16 || len(sv.Shape) != 4 || sv.Shape[1] != 2 || sv.Shape[2] != 4 || sv.Shape[3] != 4 ||
		sv.Strides[0] != 32 || sv.Strides[3] != 1 || sv.F32() != nil {
		t.Fatalf("ssm view %+v", sv)
	}
	u := sv.Uint16()
	st := make([]uint16, cfg.SSMStateLen())
	checkErr(t, c.ReadSSM(0, []int32{1}, BF16Data(st)), nil)
	if u[sv.Offset(1, 0, 0, 0)] != st[0] || u[sv.Offset(1, 1, 3, 2)] != st[1*16+3*4+2] {
		t.Fatal("the ssm view does not show slot 1")
	}
}

func TestSlotLifecycle(t *testing.T) {
	c := mustNew(t, smallConfig())
	fill(t, c)
	for want := 0; want < 4; want++ {
		s, err := c.AcquireSlot()
		checkErr(t, err, nil)
		if s != want {
			t.Fatalf("acquired %d, want %d", s, want)
		}
		if p, _ := c.Position(s); p != 0 {
			t.Fatalf("acquired slot %d has position %d", s, p)
		}
	}
	_, err := c.AcquireSlot()
	checkErr(t, err, ErrNoFreeSlot)
	n, err := c.SlotsInUse()
	checkErr(t, err, nil)
	if n != 4 {
		t.Fatalf("SlotsInUse = %d", n)
	}
	checkErr(t, c.ReleaseSlot(2), nil)
	checkErr(t, c.ReleaseSlot(2), ErrInvalidArg) // double release
	if n, _ := c.SlotsInUse(); n != 3 {
		t.Fatalf("SlotsInUse = %d after a release", n)
	}
	s, err := c.AcquireSlot()
	checkErr(t, err, nil)
	if s != 2 {
		t.Fatalf("reacquired %d", s)
	}
}

func TestCopySlotsForksAndPermutes(t *testing.T) {
	c := mustNew(t, smallConfig())
	fill(t, c)
	before := snapshotState(t, c)
	// A rotation 0->1->2->3->0 (as if all reads happen first), with padding.
	checkErr(t, c.CopySlots([]int32{3, 0, 1, 2, 0}, []int32{0, 1, 2, 3, -1}), nil)
	after := snapshotState(t, c)
	wl, sl := c.cfg.ConvWindowLen(), c.cfg.SSMStateLen()
	for dst, src := range []int{3, 0, 1, 2} {
		for l := range before.conv {
			if !equalF32(after.conv[l][dst*wl:(dst+1)*wl], before.conv[l][src*wl:(src+1)*wl]) ||
				!equalF32(after.ssm[l][dst*sl:(dst+1)*sl], before.ssm[l][src*sl:(src+1)*sl]) {
				t.Fatalf("slot %d does not hold slot %d's state in layer %d", dst, src, l)
			}
		}
		if after.pos[dst] != before.pos[src] {
			t.Fatalf("slot %d position %d, want %d", dst, after.pos[dst], before.pos[src])
		}
	}
	checkErr(t, c.CopySlots(nil, nil), nil)
}

func TestSlotSnapshotRoundTrip(t *testing.T) {
	cfg := smallConfig()
	cfg.ConvDType = BF16
	a := mustNew(t, cfg)
	fill(t, a)
	size, err := a.SnapshotSize()
	checkErr(t, err, nil)
	snap, err := a.SaveSlot(1)
	checkErr(t, err, nil)
	if len(snap) != size || string(snap[:8]) != "M2CSLOT\x00" {
		t.Fatalf("snapshot of %d bytes (size %d), magic %q", len(snap), size, snap[:8])
	}
	// Into another cache with more slots, at another index.
	cfg.NumSlots = 9
	b := mustNew(t, cfg)
	checkErr(t, b.LoadSlot(7, snap), nil)
	want := make([]float32, cfg.ConvWindowLen())
	got := make([]float32, cfg.ConvWindowLen())
	checkErr(t, a.ReadConvF32(1, []int32{1}, want), nil)
	checkErr(t, b.ReadConvF32(1, []int32{7}, got), nil)
	if !equalF32(got, want) {
		t.Fatal("the loaded conv state differs")
	}
	pa, _ := a.Position(1)
	pb, _ := b.Position(7)
	if pa != pb || pa == 0 {
		t.Fatalf("positions %d and %d", pa, pb)
	}
	// SaveSlotTo into a larger buffer writes exactly size bytes.
	big := make([]byte, size+100)
	n, err := a.SaveSlotTo(1, big)
	checkErr(t, err, nil)
	if n != size || string(big[:n]) != string(snap) {
		t.Fatal("SaveSlotTo differs from SaveSlot")
	}
}

func TestFileRoundTrip(t *testing.T) {
	cfg := smallConfig()
	a := mustNew(t, cfg)
	fill(t, a)
	if _, err := a.AcquireSlot(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "cache file.m2c") // a space in the name
	checkErr(t, a.SaveFile(path), nil)
	b := mustNew(t, cfg)
	checkErr(t, b.LoadFile(path), nil)
	if !sameState(snapshotState(t, a), snapshotState(t, b)) {
		t.Fatal("the loaded cache differs")
	}
	raw, err := os.ReadFile(path)
	if err != nil || string(raw[:8]) != "M2CCACHE" {
		t.Fatalf("file magic %q, %v", raw[:8], err)
	}
}

func TestRawDataLengths(t *testing.T) {
	d := RawData(F32, make([]byte, 10))
	if d.Len() != 2 || d.DType() != F32 || d.rem != 2 {
		t.Fatalf("RawData(F32, 10 bytes) = %+v", d)
	}
	if d := RawData(DType(9), make([]byte, 3)); d.Len() != 3 {
		t.Fatalf("RawData with an unknown dtype = %+v", d)
	}
	if (Data{}).Len() != 0 || (Data{}).DType() != F32 {
		t.Fatal("zero Data is not an empty f32 buffer")
	}
	if F16.String() != "f16" || DType(5).String() != "DType(5)" || DeviceCUDA.String() != "cuda" ||
		Device(3).String() != "Device(3)" || BF16.Size() != 2 || DType(5).Size() != 0 {
		t.Fatal("DType/Device strings")
	}
}

func TestCheckFiniteCountsNaNAndInfInOneSlot(t *testing.T) {
	cfg := smallConfig()
	c := mustNew(t, cfg)
	fill(t, c)
	st := ramp(cfg.SSMStateLen(), 1)
	st[3], st[7] = float32(math.NaN()), float32(math.Inf(-1))
	checkErr(t, c.UpdateSSMF32(1, []int32{2}, st), nil)
	win := ramp(cfg.ConvWindowLen(), 1)
	win[0] = float32(math.Inf(1))
	checkErr(t, c.SetConvF32(0, []int32{2}, win), nil)
	for slot, want := range []uint64{0, 0, 3, 0} {
		n, err := c.CheckFinite(slot)
		checkErr(t, err, nil)
		if n != want {
			t.Fatalf("CheckFinite(%d) = %d, want %d", slot, n, want)
		}
	}
	checkErr(t, c.Reset([]int32{2}), nil)
	if n, err := c.CheckFinite(2); err != nil || n != 0 {
		t.Fatalf("CheckFinite after Reset = %d, %v", n, err)
	}
	for _, slot := range []int{-1, 4, 1 << 40} {
		_, err := c.CheckFinite(slot)
		checkErr(t, err, ErrOutOfRange)
	}
}

// TestEveryHeaderFunctionIsWrapped reads include/m2c.h and checks that the
// package's sources call every function it declares.
func TestEveryHeaderFunctionIsWrapped(t *testing.T) {
	header, err := os.ReadFile("../../include/m2c.h")
	if err != nil {
		t.Fatal(err)
	}
	decls := regexp.MustCompile(`(?m)^[a-z_0-9 ]+[ *]+(m2c_[a-z0-9_]+)\(`).FindAllSubmatch(header, -1)
	if len(decls) < 30 {
		t.Fatalf("found only %d declarations in m2c.h", len(decls))
	}
	var src strings.Builder
	files, _ := filepath.Glob("*.go")
	for _, f := range files {
		if !strings.HasSuffix(f, "_test.go") {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			src.Write(b)
		}
	}
	// A call is C.name( in Go, or a cgo preamble shim that returns name(
	// (device addresses cross into C as integers).
	for _, d := range decls {
		name := string(d[1])
		if !strings.Contains(src.String(), "C."+name+"(") && !strings.Contains(src.String(), "return "+name+"(") {
			t.Errorf("%s is declared in m2c.h but never called by the binding", name)
		}
	}
	t.Logf("%d functions, all wrapped", len(decls))
}

// TestSetSSMAndCountNonfiniteMatchTheirFirstNames checks the marshalling
// and error mapping of m2c_set_ssm and m2c_count_nonfinite, and that the
// first names (m2c_update_ssm, m2c_check_finite) still do the same.
func TestSetSSMAndCountNonfiniteMatchTheirFirstNames(t *testing.T) {
	cfg := smallConfig()
	a, b := mustNew(t, cfg), mustNew(t, cfg)
	st := ramp(2*cfg.SSMStateLen(), 0.5)
	st[5] = float32(math.NaN())
	checkErr(t, a.SetSSMF32(1, []int32{3, 0}, st), nil)
	checkErr(t, b.UpdateSSMF32(1, []int32{3, 0}, st), nil)
	for _, c := range []*Cache{a, b} {
		got := make([]float32, len(st))
		checkErr(t, c.ReadSSMF32(1, []int32{3, 0}, got), nil)
		if !equalF32(got, st) {
			t.Fatal("SetSSM / UpdateSSM did not store the states read back")
		}
		for slot, want := range []uint64{0, 0, 0, 1} {
			n1, err1 := c.CountNonfinite(slot)
			n2, err2 := c.CheckFinite(slot)
			checkErr(t, err1, nil)
			checkErr(t, err2, nil)
			if n1 != want || n2 != want {
				t.Fatalf("slot %d: CountNonfinite = %d, CheckFinite = %d, want %d", slot, n1, n2, want)
			}
		}
	}
	checkErr(t, a.SetSSMF32(0, []int32{0}, st), ErrShapeMismatch)
	checkErr(t, a.SetSSM(0, nil, RawData(DType(7), make([]byte, 8))), ErrUnsupportedDtype)
	_, err := a.CountNonfinite(99)
	checkErr(t, err, ErrOutOfRange)
	var se *Error
	if !errors.As(a.SetSSMF32(9, []int32{0}, st[:cfg.SSMStateLen()]), &se) || se.Op != "m2c_set_ssm" {
		t.Fatalf("SetSSM error does not name m2c_set_ssm: %v", se)
	}
}

// TestSetNumThreadsMarshalsAndMapsErrors checks m2c_set_num_threads through
// the binding: any thread count gives the same state, a negative one is
// refused by the binding, a closed cache by ErrClosed.
func TestSetNumThreadsMarshalsAndMapsErrors(t *testing.T) {
	cfg := smallConfig()
	var want []float32
	for _, n := range []int{1, 0, 2} {
		c := mustNew(t, cfg)
		checkErr(t, c.SetNumThreads(n), nil)
		st := ramp(2*cfg.SSMStateLen(), 0.25)
		checkErr(t, c.SetSSMF32(0, []int32{1, 3}, st), nil)
		got := make([]float32, len(st))
		checkErr(t, c.ReadSSMF32(0, []int32{1, 3}, got), nil)
		if want == nil {
			want = got
		} else if !equalF32(got, want) {
			t.Fatalf("state differs with %d threads", n)
		}
		checkErr(t, c.SetNumThreads(-1), ErrInvalidArg)
		c.Close()
		checkErr(t, c.SetNumThreads(1), ErrClosed)
	}
}

// TestPresetsAndStringMarshalAndMapErrors checks m2c_config_preset and
// m2c_describe through the binding.
func TestPresetsAndStringMarshalAndMapErrors(t *testing.T) {
	big, err := PresetConfig(Mamba2_2_7b)
	checkErr(t, err, nil)
	if big.NumLayers != 64 || big.NumHeads != 80 || big.IntermediateSize != 5120 {
		t.Fatalf("2.7B preset = %+v", big)
	}
	nano, err := PresetConfig(NemotronNano9bV2)
	checkErr(t, err, nil)
	if nano.NumLayers != 27 || nano.NumHeads != 128 || nano.HeadDim != 80 || nano.NGroups != 8 || nano.IntermediateSize != 10240 {
		t.Fatalf("Nemotron-Nano-9B-v2 preset = %+v", nano)
	}
	for _, p := range []Preset{NemotronH8b, Bamba9b, Granite4_0_HSmall, FalconH1_7b, Zamba2_1_2b} {
		c, err := PresetConfig(p)
		checkErr(t, err, nil)
		if c.NumHeads*c.HeadDim != c.IntermediateSize || c.NumLayers == 0 {
			t.Fatalf("preset %d = %+v", p, c)
		}
	}
	_, err = PresetConfig(Preset(99))
	checkErr(t, err, ErrInvalidArg)
	cfg, err := PresetConfig(Mamba2_130m)
	checkErr(t, err, nil)
	cfg.NumSlots = 2
	c := mustNew(t, cfg)
	s := c.String()
	for _, want := range []string{"24 layers x 2 slots (0 in use)", "ssm f32 [24 x 64 x 128]", "host memory"} {
		if !strings.Contains(s, want) {
			t.Fatalf("String() = %q lacks %q", s, want)
		}
	}
	c.Close()
	if got := c.String(); got != "m2c cache (closed)" {
		t.Fatalf("String() after Close = %q", got)
	}
}

// TestRingConvLayoutMarshalsAndMatchesOldestFirst checks m2c_set_conv_layout,
// m2c_get_conv_layout and m2c_conv_heads through the binding: a ring cache
// steps, reads and snapshots exactly as an oldest-first one, its view and
// heads locate every input, and bad input maps to the right errors.
func TestRingConvLayoutMarshalsAndMatchesOldestFirst(t *testing.T) {
	cfg := smallConfig()
	plain, ring := mustNew(t, cfg), mustNew(t, cfg)
	if l, err := ring.ConvLayout(); err != nil || l != ConvLayoutOldestFirst {
		t.Fatalf("ConvLayout of a new cache = %v, %v", l, err)
	}
	checkErr(t, ring.SetConvLayout(ConvLayoutRing), nil)
	if l, err := ring.ConvLayout(); err != nil || l != ConvLayoutRing {
		t.Fatalf("ConvLayout after SetConvLayout = %v, %v", l, err)
	}
	dim, w := cfg.ConvDim(), int(cfg.ConvWidth)
	p := DefaultConvParams()
	p.Weight = ramp(dim*int(cfg.ConvKernelSize), 0.5)
	for tok := 0; tok < 6; tok++ {
		x := ramp(2*dim, float32(10*tok))
		outA, outB := make([]float32, 2*dim), make([]float32, 2*dim)
		checkErr(t, plain.ConvStepF32(1, []int32{2, 0}, x, outA, p), nil)
		checkErr(t, ring.ConvStepF32(1, []int32{2, 0}, x, outB, p), nil)
		if !equalF32(outA, outB) {
			t.Fatalf("token %d: conv outputs differ", tok)
		}
	}
	checkErr(t, plain.UpdateConvF32(1, []int32{2}, ramp(dim, 99)), nil)
	checkErr(t, ring.UpdateConvF32(1, []int32{2}, ramp(dim, 99)), nil)
	a, b := make([]float32, dim*w), make([]float32, dim*w)
	checkErr(t, plain.ReadConvF32(1, []int32{2}, a), nil)
	checkErr(t, ring.ReadConvF32(1, []int32{2}, b), nil)
	if !equalF32(a, b) {
		t.Fatal("read_conv differs between the layouts")
	}
	sa, err := plain.SaveSlot(2)
	checkErr(t, err, nil)
	sb, err := ring.SaveSlot(2)
	checkErr(t, err, nil)
	if string(sa) != string(sb) {
		t.Fatal("snapshots differ between the layouts")
	}
	// Heads and the view locate input k of slot 2 at column (head + k) % w.
	heads, err := ring.ConvHeads(1)
	checkErr(t, err, nil)
	if len(heads) != int(cfg.NumSlots) || heads[2] != uint32(7%w) || heads[1] != 0 {
		t.Fatalf("heads = %v", heads)
	}
	v, err := ring.ConvView(1)
	checkErr(t, err, nil)
	data := v.F32()
	for c := 0; c < dim; c++ {
		for k := 0; k < w; k++ {
			j := (int(heads[2]) + k) % w
			if got := data[2*v.Strides[0]+c*v.Strides[1]+j*v.Strides[2]]; got != a[c*w+k] {
				t.Fatalf("view [2][%d][%d] = %v, want %v", c, j, got, a[c*w+k])
			}
		}
	}
	if h, err := plain.ConvHeads(0); err != nil || h[2] != 0 {
		t.Fatalf("oldest-first heads = %v, %v", h, err)
	}
	checkErr(t, ring.SetConvLayout(ConvLayout(7)), ErrInvalidArg)
	_, err = ring.ConvHeads(2)
	checkErr(t, err, ErrOutOfRange)
	checkErr(t, ring.SetConvLayout(ConvLayoutOldestFirst), nil)
	checkErr(t, ring.ReadConvF32(1, []int32{2}, b), nil)
	if !equalF32(a, b) {
		t.Fatal("switching back changed the windows")
	}
	ring.Close()
	checkErr(t, ring.SetConvLayout(ConvLayoutRing), ErrClosed)
	_, err = ring.ConvLayout()
	checkErr(t, err, ErrClosed)
	_, err = ring.ConvHeads(0)
	checkErr(t, err, ErrClosed)
}

// TestSnapshotFormat2MarshalsAndLoadsEverywhere checks m2c_set_snapshot_format
// and m2c_get_snapshot_format through the binding: format 2 keeps format 1's
// size and payload, says version 2, loads into any cache, and the digest
// follows the format; bad input maps to the right errors.
func TestSnapshotFormat2MarshalsAndLoadsEverywhere(t *testing.T) {
	cfg := smallConfig()
	c := mustNew(t, cfg)
	checkErr(t, c.SetSSMF32(1, []int32{2}, ramp(cfg.SSMStateLen(), 3)), nil)
	if f, err := c.SnapshotFormat(); err != nil || f != SnapshotFormat1 {
		t.Fatalf("SnapshotFormat of a new cache = %v, %v", f, err)
	}
	v1, err := c.SaveSlot(2)
	checkErr(t, err, nil)
	checkErr(t, c.SetSnapshotFormat(SnapshotFormat2), nil)
	if f, err := c.SnapshotFormat(); err != nil || f != SnapshotFormat2 {
		t.Fatalf("SnapshotFormat after SetSnapshotFormat = %v, %v", f, err)
	}
	v2, err := c.SaveSlot(2)
	checkErr(t, err, nil)
	n := len(v2)
	if len(v1) != n || binary.LittleEndian.Uint32(v2[8:12]) != 2 || string(v1[12:n-8]) != string(v2[12:n-8]) {
		t.Fatal("format 2 is not format 1's layout with version 2")
	}
	d, err := c.SlotDigest(2)
	checkErr(t, err, nil)
	if d != binary.LittleEndian.Uint64(v2[n-8:]) {
		t.Fatal("the digest is not format 2's checksum")
	}
	other := mustNew(t, cfg)
	checkErr(t, other.LoadSlot(0, v2), nil)
	checkErr(t, other.LoadSlot(1, v1), nil)
	v2[n/2] ^= 1
	checkErr(t, other.LoadSlot(0, v2), ErrCorrupt)
	checkErr(t, c.SetSnapshotFormat(SnapshotFormat(3)), ErrInvalidArg)
	c.Close()
	checkErr(t, c.SetSnapshotFormat(SnapshotFormat1), ErrClosed)
	_, err = c.SnapshotFormat()
	checkErr(t, err, ErrClosed)
}
