package m2c

// #include "m2c.h"
import "C"

import (
	"fmt"
	"runtime"
)

// DType is an element type code (m2c_dtype). Any value may be passed to the
// library, which refuses unknown ones with ErrUnsupportedDtype.
type DType uint32

// The element types.
const (
	F32  DType = C.M2C_DTYPE_F32  // IEEE-754 binary32
	BF16 DType = C.M2C_DTYPE_BF16 // bfloat16, stored as the upper 16 bits of a binary32 in a uint16
	F16  DType = C.M2C_DTYPE_F16  // IEEE-754 binary16, in a uint16
)

// Size returns the bytes of one element, or 0 for an unknown dtype.
func (d DType) Size() int {
	switch d {
	case F32:
		return 4
	case BF16, F16:
		return 2
	}
	return 0
}

// String returns "f32", "bf16", "f16", or "DType(N)" for an unknown value.
func (d DType) String() string {
	switch d {
	case F32:
		return "f32"
	case BF16:
		return "bf16"
	case F16:
		return "f16"
	}
	return fmt.Sprintf("DType(%d)", uint32(d))
}

// Device is a device code (m2c_device).
type Device uint32

// The devices.
const (
	DeviceCPU  Device = C.M2C_DEVICE_CPU  // host memory
	DeviceCUDA Device = C.M2C_DEVICE_CUDA // NVIDIA GPU memory (ErrUnsupported in a build without CUDA)
)

// String returns "cpu", "cuda", or "Device(N)".
func (d Device) String() string {
	switch d {
	case DeviceCPU:
		return "cpu"
	case DeviceCUDA:
		return "cuda"
	}
	return fmt.Sprintf("Device(%d)", uint32(d))
}

// Config is the shape of a cache (m2c_config without its struct_size, which
// the binding fills in). Start from [DefaultConfig] and change the fields
// you need; the library validates every field.
type Config struct {
	NumLayers        uint32 // Mamba2 layers
	NumSlots         uint32 // sequences held at once; at most math.MaxInt32
	IntermediateSize uint32 // inner width of the mixer; NumHeads*HeadDim
	NumHeads         uint32 // SSM heads per layer; a multiple of NGroups
	HeadDim          uint32 // channels per head
	StateSize        uint32 // SSM state size (d_state)
	NGroups          uint32 // B/C groups
	ConvKernelSize   uint32 // kernel size K of the causal conv; at least 2
	ConvWidth        uint32 // stored conv columns: ConvKernelSize or ConvKernelSize-1
	ConvDType        DType  // storage dtype of the conv windows
	SSMDType         DType  // storage dtype of the SSM states
	Device           Device // DeviceCPU or DeviceCUDA
	DeviceIndex      int32  // which device of that kind; 0 for the CPU
}

// ConvDim returns the conv channels, IntermediateSize + 2*NGroups*StateSize:
// the elements of one row of [Cache.UpdateConv].
func (c Config) ConvDim() int {
	return int(c.IntermediateSize) + 2*int(c.NGroups)*int(c.StateSize)
}

// ConvWindowLen returns the elements of one slot's conv window,
// ConvDim*ConvWidth: one row of [Cache.SetConv] and [Cache.ReadConv].
func (c Config) ConvWindowLen() int { return c.ConvDim() * int(c.ConvWidth) }

// SSMStateLen returns the elements of one slot's SSM state,
// NumHeads*HeadDim*StateSize: one row of [Cache.UpdateSSM] and [Cache.ReadSSM].
func (c Config) SSMStateLen() int {
	return int(c.NumHeads) * int(c.HeadDim) * int(c.StateSize)
}

// DefaultConfig returns the library's defaults (m2c_config_init):
// Mamba2-130m shapes (24 layers, intermediate size 1536, 24 heads of 64,
// state size 128, 1 group, kernel 4), 1 slot, ConvWidth = ConvKernelSize,
// conv windows in bf16, SSM states in f32, CPU.
func DefaultConfig() Config {
	var c C.m2c_config
	debugGC()
	C.m2c_config_init(&c)
	runtime.KeepAlive(&c)
	return configFromC(&c)
}

// Preset names a published Mamba2 model for PresetConfig (M2C_PRESET_*).
type Preset uint32

// The published Mamba2 models (state-spaces/mamba2-*), then the Mamba2
// layers of hybrids (the header documents each one's shapes and source).
const (
	Mamba2_130m Preset = C.M2C_PRESET_MAMBA2_130M
	Mamba2_370m Preset = C.M2C_PRESET_MAMBA2_370M
	Mamba2_780m Preset = C.M2C_PRESET_MAMBA2_780M
	Mamba2_1_3b Preset = C.M2C_PRESET_MAMBA2_1_3B
	Mamba2_2_7b Preset = C.M2C_PRESET_MAMBA2_2_7B
	// The Mamba2 layers of hybrids (num_layers counts those only).
	NemotronH8b       Preset = C.M2C_PRESET_NEMOTRON_H_8B
	NemotronNano9bV2  Preset = C.M2C_PRESET_NEMOTRON_NANO_9B_V2
	Bamba9b           Preset = C.M2C_PRESET_BAMBA_9B
	Granite4_0_HSmall Preset = C.M2C_PRESET_GRANITE_4_0_H_SMALL
	FalconH1_7b       Preset = C.M2C_PRESET_FALCON_H1_7B
	Zamba2_1_2b       Preset = C.M2C_PRESET_ZAMBA2_1_2B
)

// PresetConfig returns DefaultConfig with the Mamba2 layer shapes of a
// published model (m2c_config_preset). Errors: ErrInvalidArg (an unknown
// preset).
func PresetConfig(p Preset) (Config, error) {
	var c C.m2c_config
	debugGC()
	err := callC("m2c_config_preset", func() C.m2c_status { return C.m2c_config_preset(&c, C.m2c_preset(p)) })
	runtime.KeepAlive(&c)
	if err != nil {
		return Config{}, err
	}
	return configFromC(&c), nil
}

// ConfigBytes returns the bytes of state storage a cache with configuration
// cfg allocates (m2c_config_bytes). It fails with ErrInvalidConfig,
// ErrUnsupportedDtype or, for a library of another ABI, ErrIncompatible.
func ConfigBytes(cfg Config) (uint64, error) {
	if abiErr != nil {
		return 0, abiErr
	}
	c := cfg.toC()
	var out C.uint64_t
	debugGC()
	err := callC("m2c_config_bytes", func() C.m2c_status { return C.m2c_config_bytes(&c, &out) })
	runtime.KeepAlive(&c)
	runtime.KeepAlive(&out)
	if err != nil {
		return 0, err
	}
	return uint64(out), nil
}

// toC converts to an m2c_config whose struct_size is set by m2c_config_init.
func (cfg Config) toC() C.m2c_config {
	var c C.m2c_config
	C.m2c_config_init(&c)
	c.num_layers = C.uint32_t(cfg.NumLayers)
	c.num_slots = C.uint32_t(cfg.NumSlots)
	c.intermediate_size = C.uint32_t(cfg.IntermediateSize)
	c.num_heads = C.uint32_t(cfg.NumHeads)
	c.head_dim = C.uint32_t(cfg.HeadDim)
	c.state_size = C.uint32_t(cfg.StateSize)
	c.n_groups = C.uint32_t(cfg.NGroups)
	c.conv_kernel_size = C.uint32_t(cfg.ConvKernelSize)
	c.conv_width = C.uint32_t(cfg.ConvWidth)
	c.conv_dtype = C.m2c_dtype(cfg.ConvDType)
	c.ssm_dtype = C.m2c_dtype(cfg.SSMDType)
	c.device = C.m2c_device(cfg.Device)
	c.device_index = C.int32_t(cfg.DeviceIndex)
	return c
}

func configFromC(c *C.m2c_config) Config {
	return Config{
		NumLayers:        uint32(c.num_layers),
		NumSlots:         uint32(c.num_slots),
		IntermediateSize: uint32(c.intermediate_size),
		NumHeads:         uint32(c.num_heads),
		HeadDim:          uint32(c.head_dim),
		StateSize:        uint32(c.state_size),
		NGroups:          uint32(c.n_groups),
		ConvKernelSize:   uint32(c.conv_kernel_size),
		ConvWidth:        uint32(c.conv_width),
		ConvDType:        DType(c.conv_dtype),
		SSMDType:         DType(c.ssm_dtype),
		Device:           Device(c.device),
		DeviceIndex:      int32(c.device_index),
	}
}
