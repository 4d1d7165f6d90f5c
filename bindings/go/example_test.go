package m2c_test

import (
	"errors"
	"fmt"

	"m2c.dev/m2c"
)

// The README's example: one decode step for slot 2 of a four-slot cache with
// Mamba2-130m shapes, a padding row, and an error checked with errors.Is.
func Example() {
	cfg := m2c.DefaultConfig() // Mamba2-130m shapes, conv bf16, ssm f32
	cfg.NumSlots = 4
	cache, err := m2c.New(cfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer cache.Close()

	dim := cfg.ConvDim()
	slots := []int32{2, -1} // row 0 -> slot 2; row 1 is padding
	x := make([]float32, 2*dim)
	x[0] = 1.5 // channel 0 of slot 2 gets a new input
	if err := cache.UpdateConvF32(0, slots, x); err != nil {
		fmt.Println(err)
		return
	}
	if err := cache.Advance(slots, 1); err != nil {
		fmt.Println(err)
		return
	}
	win := make([]float32, 2*cfg.ConvWindowLen())
	if err := cache.ReadConvF32(0, slots, win); err != nil {
		fmt.Println(err)
		return
	}
	pos, _ := cache.Position(2)
	fmt.Println("newest column of channel 0:", win[cfg.ConvWidth-1])
	fmt.Println("position of slot 2:", pos)

	// A slot listed twice is refused, and the cache is unchanged.
	err = cache.Reset([]int32{1, 1})
	fmt.Println(errors.Is(err, m2c.ErrInvalidArg))
	// Output:
	// newest column of channel 0: 1.5
	// position of slot 2: 1
	// true
}

// Snapshots move one slot's state between caches (or processes).
func ExampleCache_SaveSlot() {
	cfg := m2c.DefaultConfig()
	cfg.NumLayers = 2
	cfg.NumSlots = 2
	a, _ := m2c.New(cfg)
	defer a.Close()
	b, _ := m2c.New(cfg)
	defer b.Close()

	a.Advance([]int32{0}, 7)
	snap, err := a.SaveSlot(0)
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := b.LoadSlot(1, snap); err != nil {
		fmt.Println(err)
		return
	}
	pos, _ := b.Position(1)
	fmt.Println("position:", pos)

	snap[len(snap)/2] ^= 1 // damage it
	err = b.LoadSlot(1, snap)
	fmt.Println(errors.Is(err, m2c.ErrCorrupt))
	// Output:
	// position: 7
	// true
}

// One decode token through a layer: the causal conv, then the
// selective-state update, on slot 1. The conv output of a fresh slot sees
// only the new input at first; the SSM state accumulates dt*x*B, which y
// reads back through C.
func ExampleCache_ConvStep() {
	cfg := m2c.DefaultConfig() // Mamba2-130m shapes
	cfg.NumLayers, cfg.NumSlots = 1, 2
	cache, err := m2c.New(cfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer cache.Close()

	conv := m2c.DefaultConvParams() // SiLU
	conv.Activation = m2c.ActivationNone
	conv.Weight = make([]float32, cfg.ConvDim()*int(cfg.ConvKernelSize))
	for i := range conv.Weight {
		conv.Weight[i] = 0.25
	}
	ssm := m2c.DefaultSSMParams() // softplus on dt
	ssm.DtSoftplus = false
	ssm.A = make([]float32, cfg.NumHeads) // A = 0: the state never decays

	heads, width, bc := int(cfg.NumHeads), int(cfg.NumHeads*cfg.HeadDim), int(cfg.NGroups*cfg.StateSize)
	x, out := make([]float32, cfg.ConvDim()), make([]float32, cfg.ConvDim())
	sx, dt, b, c, y := make([]float32, width), make([]float32, heads), make([]float32, bc), make([]float32, bc), make([]float32, width)
	x[0], sx[0], dt[0], b[0], c[0] = 2, 1, 1, 1, 1
	io := m2c.SSMIO{X: m2c.F32Data(sx), Dt: m2c.F32Data(dt), B: m2c.F32Data(b), C: m2c.F32Data(c), Y: m2c.F32Data(y)}

	slots := []int32{1}
	for token := 0; token < 2; token++ {
		if err := cache.ConvStepF32(0, slots, x, out, conv); err != nil {
			fmt.Println(err)
			return
		}
		if err := cache.SSMStep(0, slots, io, ssm); err != nil {
			fmt.Println(err)
			return
		}
		if err := cache.Advance(slots, 1); err != nil {
			fmt.Println(err)
			return
		}
		fmt.Printf("token %d: conv out %v, y %v\n", token, out[0], y[0])
	}
	// Output:
	// token 0: conv out 0.5, y 1
	// token 1: conv out 1, y 2
}
