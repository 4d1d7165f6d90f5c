//! The input of the `api_sequence` target, decoded with `arbitrary`: a
//! cache shape and a sequence of C API calls, each with its arguments as
//! they are chosen (slot selections, layers, dtypes, lengths, pointer
//! modes, damaged structs and snapshots, data seeds). What an argument
//! means for a given shape (which slot "index 7" is, how long "the right
//! length" is) is resolved by the model (`model.rs`).
//!
//! Most arguments are read from one byte whose ranges weigh the choices,
//! so that most calls are valid and the fuzzer gets deep into the state
//! space; the rare values are the invalid ones. Running out of input reads
//! zeros, so every input decodes to a program.

use arbitrary::{Arbitrary, Result, Unstructured};

/// Implements `Arbitrary` for a type decoded from one input byte.
macro_rules! from_byte {
    ($t:ty, |$b:ident| $e:expr) => {
        impl<'a> Arbitrary<'a> for $t {
            fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
                let $b = u8::arbitrary(u)?;
                Ok($e)
            }
            fn size_hint(_depth: usize) -> (usize, Option<usize>) {
                (1, Some(1))
            }
        }
    };
}

/// A list of at most 7 elements (its length is one byte, mod 8).
#[derive(Clone, Debug)]
pub struct Short<T>(pub Vec<T>);

impl<'a, T: Arbitrary<'a>> Arbitrary<'a> for Short<T> {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let n = u8::arbitrary(u)? as usize % 8;
        (0..n).map(|_| T::arbitrary(u)).collect::<Result<_>>().map(Short)
    }
}

/// True one time in N.
#[derive(Clone, Copy, Debug)]
pub struct OneIn<const N: u8>(pub bool);

impl<'a, const N: u8> Arbitrary<'a> for OneIn<N> {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(OneIn(u8::arbitrary(u)?.is_multiple_of(N)))
    }
    fn size_hint(_depth: usize) -> (usize, Option<usize>) {
        (1, Some(1))
    }
}

/// The whole input: `fuzz_target!(|prog: Program| model::run(prog))`.
/// Only the first `model::MAX_CALLS` calls run.
#[derive(Arbitrary, Clone, Debug)]
pub struct Program {
    pub shape: ShapeSpec,
    pub calls: Vec<Call>,
}

/// A small cache shape (see `ShapeSpec::shape`).
#[derive(Clone, Copy, Debug)]
pub struct ShapeSpec {
    pub conv_dtype: u32,
    pub ssm_dtype: u32,
    /// conv_width = K - 1 (else K).
    pub width_k_minus_1: bool,
    pub layers: usize,
    pub slots: usize,
    pub kernel: usize,
    pub groups: usize,
}

impl<'a> Arbitrary<'a> for ShapeSpec {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let b0 = u8::arbitrary(u)?;
        let b1 = u8::arbitrary(u)?;
        Ok(ShapeSpec {
            conv_dtype: u32::from(b0 % 3),
            ssm_dtype: u32::from((b0 / 3) % 3),
            width_k_minus_1: !(b0 / 9).is_multiple_of(2),
            layers: 1 + (b1 as usize / 5) % 3,
            slots: 1 + b1 as usize % 5,
            kernel: 2 + (b1 as usize / 30) % 3,
            groups: 1 + (b1 as usize / 90) % 2,
        })
    }
}

/// One C API call (a family of them where they share their arguments).
#[derive(Arbitrary, Clone, Debug)]
pub enum Call {
    UpdateConv(DataArgs),
    SetConv(DataArgs),
    UpdateSsm(DataArgs),
    ReadConv(ReadArgs),
    ReadSsm(ReadArgs),
    Reset(Slots),
    Advance {
        slots: Slots,
        steps: Steps,
    },
    CopySlots(CopySlots),
    Acquire {
        null_out: OneIn<16>,
    },
    Release(Slot),
    /// m2c_slot_save of one slot, then m2c_slot_load of the saved bytes
    /// (or the model's snapshot), maybe damaged, into another.
    SaveLoad(SaveLoad),
    ConvStep(ConvKernel),
    ConvPrefill {
        kernel: ConvKernel,
        cu: CuSeqlens,
    },
    SsmStep(SsmKernel),
    SsmPrefill {
        kernel: SsmKernel,
        cu: CuSeqlens,
    },
    /// Positions, non-finite counts, a view, the snapshot size, a stream,
    /// the summary, and the thread count of the calls that follow.
    Queries {
        slot: Slot,
        layer: Layer,
        stream: bool,
        threads: u8,
    },
    /// m2c_set_conv_layout: ring (`layout % 3 == 1`), oldest-first (0),
    /// or an unknown layout (2, refused); the windows' contents never change.
    ConvLayout {
        layout: u8,
    },
    /// m2c_set_snapshot_format: 1 (`format % 3 == 0`), 2, or an unknown
    /// format (refused).
    SnapshotFormat {
        format: u8,
    },
    /// m2c_spec_reserve with `max % 9` tokens.
    SpecReserve {
        max: u8,
    },
    /// m2c_spec_begin: runs of `cu`'s lengths; `tree` 0 passes NULL
    /// parents (chains), else seeds a tree; `damage` spoils the parents.
    SpecBegin {
        slots: Slots,
        cu: CuSeqlens,
        tree: u8,
        damage: ParentDamage,
    },
    /// m2c_conv_verify (the kernel's slots are not used: the round has them).
    ConvVerify(ConvKernel),
    /// m2c_ssm_verify (as ConvVerify).
    SsmVerify(SsmKernel),
    /// m2c_spec_commit of `accepted[i] % 6` tokens per row.
    SpecCommit {
        slots: Slots,
        accepted: [u8; 8],
        null_accepted: OneIn<16>,
    },
    /// A NULL handle or a NULL required pointer: NULL_ARG.
    NullCall(NullCall),
    /// An output or slot list inside the cache's own storage: INVALID_ARG.
    AliasedOutput {
        call: AliasedCall,
        offset: u8,
        count: u8,
    },
    /// m2c_store_insert of a slot under key `key % KEYS` (out_miss NULL
    /// one time in 4).
    StoreInsert {
        slot: Slot,
        key: u8,
        null_miss: OneIn<4>,
    },
    /// m2c_store_lookup of the chain `keys[i] % KEYS`.
    StoreLookup {
        keys: Short<u8>,
    },
    /// m2c_store_restore of key `key % KEYS` into a slot.
    StoreRestore {
        key: u8,
        slot: Slot,
    },
    /// m2c_store_pin (op % 3 == 0), _unpin (1) or _evict (2) of `key % KEYS`.
    StoreKey {
        key: u8,
        op: u8,
    },
}

/// Distinct store keys a program uses.
pub const KEYS: usize = 6;

/// How m2c_spec_begin's parents are spoiled.
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParentDamage {
    None,
    /// A token names itself as its parent.
    SelfParent,
    /// One entry fewer than there are tokens.
    Short,
    /// NULL parents with a non-zero length.
    NullWithLen,
}

/// update_conv / set_conv / update_ssm.
#[derive(Arbitrary, Clone, Debug)]
pub struct DataArgs {
    pub layer: Layer,
    pub slots: Slots,
    pub dtype: Dtype,
    pub len: Len,
    pub ptr: PtrMode,
    pub seed: u8,
}

/// read_conv / read_ssm.
#[derive(Arbitrary, Clone, Debug)]
pub struct ReadArgs {
    pub layer: Layer,
    pub slots: Slots,
    pub dtype: Dtype,
    pub len: Len,
    pub ptr: PtrMode,
}

/// A layer index: usually `Index % num_layers`, sometimes out of range.
#[derive(Clone, Copy, Debug)]
pub enum Layer {
    Index(u8),
    NumLayers,
    NumLayersPlus1,
    Max,
    Bit31,
}

from_byte!(Layer, |b| if b < 240 {
    Layer::Index(b)
} else {
    [Layer::NumLayers, Layer::NumLayersPlus1, Layer::Max, Layer::Bit31][(b % 4) as usize]
});

impl Layer {
    /// The index and whether it is in range.
    pub fn resolve(self, layers: usize) -> (u32, bool) {
        let l = layers as u32;
        match self {
            Layer::Index(b) => ((b as usize % layers) as u32, true),
            Layer::NumLayers => (l, false),
            Layer::NumLayersPlus1 => (l + 1, false),
            Layer::Max => (u32::MAX, false),
            Layer::Bit31 => (1 << 31, false),
        }
    }
}

/// One slot index (a list entry or a single-slot argument): usually
/// -2..=num_slots (so padding and just-out-of-range), sometimes extreme.
#[derive(Clone, Copy, Debug)]
pub enum Slot {
    Near(u8),
    IntMin,
    MinusOne,
    IntMax,
    NumSlots,
    NumSlotsPlus1,
    Minus1000,
    Bit20,
    MinusTwo,
}

from_byte!(Slot, |e| if e < 224 {
    Slot::Near(e)
} else {
    use Slot::*;
    [IntMin, MinusOne, IntMax, NumSlots, NumSlotsPlus1, Minus1000, Bit20, MinusTwo][(e % 8) as usize]
});

impl Slot {
    pub fn resolve(self, num_slots: usize) -> i32 {
        let s = num_slots as i32;
        match self {
            Slot::Near(e) => (e as i32 % (s + 3)) - 2,
            Slot::IntMin => i32::MIN,
            Slot::MinusOne => -1,
            Slot::IntMax => i32::MAX,
            Slot::NumSlots => s,
            Slot::NumSlotsPlus1 => s + 1,
            Slot::Minus1000 => -1000,
            Slot::Bit20 => 1 << 20,
            Slot::MinusTwo => -2,
        }
    }
}

/// A slot selection (slots pointer, n).
#[derive(Clone, Debug)]
pub enum Slots {
    /// slots NULL, n = `n % (num_slots + 1)`: the first n slots.
    Dense { n: u8 },
    /// slots NULL, n = num_slots + 1 + `extra`: too many.
    DenseTooMany { extra: u8 },
    /// An explicit list (negative entries are padding rows).
    List(Short<Slot>),
}

impl<'a> Arbitrary<'a> for Slots {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let b = u8::arbitrary(u)?;
        Ok(match b % 8 {
            0 | 1 => Slots::Dense { n: b / 8 },
            2 => Slots::DenseTooMany { extra: (b / 8) % 3 },
            _ => Slots::List(Short::arbitrary(u)?),
        })
    }
}

/// A dtype code: usually one of the three, sometimes not a dtype.
#[derive(Clone, Copy, Debug)]
pub struct Dtype(pub u32);

from_byte!(Dtype, |b| Dtype(if b < 248 { u32::from(b % 3) } else { [3, 4, u32::MAX, 0x100][(b % 4) as usize] }));

impl Dtype {
    pub fn ok(self) -> bool {
        self.0 < 3
    }
}

/// A buffer length: usually the right one, sometimes off.
#[derive(Clone, Copy, Debug)]
pub enum Len {
    Correct,
    PlusOne,
    MinusOne,
    Zero,
    DoublePlusOne,
    PlusRow,
    Max,
    HalfMax,
    Plus1000,
}

from_byte!(Len, |b| if b < 224 {
    Len::Correct
} else {
    use Len::*;
    [PlusOne, MinusOne, Zero, DoublePlusOne, PlusRow, Max, HalfMax, Plus1000][(b % 8) as usize]
});

impl Len {
    pub fn resolve(self, correct: usize, per_row: usize) -> usize {
        match self {
            Len::Correct => correct,
            Len::PlusOne => correct + 1,
            Len::MinusOne => correct.saturating_sub(1),
            Len::Zero => 0,
            Len::DoublePlusOne => correct * 2 + 1,
            Len::PlusRow => correct + per_row.max(1),
            Len::Max => usize::MAX,
            Len::HalfMax => usize::MAX / 2,
            Len::Plus1000 => correct + 1000,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PtrMode {
    Normal,
    Null,
    Misaligned,
    /// A pointer into the cache's own storage.
    Alias,
}

from_byte!(PtrMode, |b| match b {
    0..=231 => PtrMode::Normal,
    232..=239 => PtrMode::Null,
    240..=247 => PtrMode::Misaligned,
    _ => PtrMode::Alias,
});

/// A buffer of a kernel call.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub struct Buf {
    pub len: Len,
    pub ptr: PtrMode,
}

/// The optional gate z: absent (NULL, 0) one time in four.
#[derive(Clone, Copy, Debug)]
pub struct Gate(pub Option<Buf>);

impl<'a> Arbitrary<'a> for Gate {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(Gate(if u8::arbitrary(u)?.is_multiple_of(4) { None } else { Some(Buf::arbitrary(u)?) }))
    }
}

/// m2c_advance's step count.
#[derive(Clone, Copy, Debug)]
pub struct Steps(pub u32);

from_byte!(Steps, |b| Steps(if b < 200 {
    u32::from(b % 8)
} else {
    [u32::MAX, 1000, 1 << 31, u32::MAX - 1][(b % 4) as usize]
}));

#[derive(Arbitrary, Clone, Debug)]
pub struct CopySlots {
    /// (src, dst) entries.
    pub pairs: Short<(Slot, Slot)>,
    /// Replace dst by n-1, ..., 0 (when n <= num_slots): reorders.
    pub reverse_dst: OneIn<4>,
    pub nulls: CopyNulls,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyNulls {
    Neither,
    NullSrc,
    NullDst,
}

from_byte!(CopyNulls, |b| match b % 16 {
    0 => CopyNulls::NullSrc,
    1 => CopyNulls::NullDst,
    _ => CopyNulls::Neither,
});

#[derive(Arbitrary, Clone, Debug)]
pub struct SaveLoad {
    pub save_slot: Slot,
    pub save_len: SaveLen,
    pub save_nulls: SaveNulls,
    pub load_slot: Slot,
    pub damage: SnapshotDamage,
    /// Load from a pointer into the cache's own storage.
    pub alias: OneIn<32>,
}

/// The buffer length given to m2c_slot_save.
#[derive(Clone, Copy, Debug)]
pub enum SaveLen {
    Exact,
    OneShort,
    Zero,
    FiveOver,
    Double,
    One,
    HeaderOnly,
    Eighty,
}

from_byte!(SaveLen, |b| if b < 200 {
    SaveLen::Exact
} else {
    use SaveLen::*;
    [OneShort, Zero, FiveOver, Double, One, Exact, HeaderOnly, Eighty][(b % 8) as usize]
});

impl SaveLen {
    pub fn resolve(self, size: usize) -> usize {
        match self {
            SaveLen::Exact => size,
            SaveLen::OneShort => size - 1,
            SaveLen::Zero => 0,
            SaveLen::FiveOver => size + 5,
            SaveLen::Double => 2 * size,
            SaveLen::One => 1,
            SaveLen::HeaderOnly => 72,
            SaveLen::Eighty => 80,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaveNulls {
    Neither,
    NullBuf,
    NullWritten,
}

from_byte!(SaveNulls, |b| match b % 32 {
    0 => SaveNulls::NullBuf,
    1 => SaveNulls::NullWritten,
    _ => SaveNulls::Neither,
});

/// What is done to a snapshot before it is loaded (offsets are those of
/// docs/FORMATS.md; all but the first three fix the checksum).
#[derive(Clone, Copy, Debug)]
pub enum SnapshotDamage {
    None,
    /// Flip bit `bit` of byte `at * 7 % len`.
    FlipBit {
        at: u8,
        bit: u8,
    },
    /// Drop 1 + `by` bytes.
    Truncate {
        by: u8,
    },
    Append(u8),
    /// position = u64::MAX - `minus`.
    PositionNearMax {
        minus: u8,
    },
    /// version 2 (`huge` false) or 1002.
    Version {
        huge: bool,
    },
    /// Add `delta` to fingerprint field `field`.
    Fingerprint {
        field: u8,
        delta: u8,
    },
    /// header_size + 8, and a payload-size byte changed.
    HeaderSize {
        xor: u8,
    },
    /// position = `value` << `shift`.
    Position {
        value: u8,
        shift: u8,
    },
}

impl<'a> Arbitrary<'a> for SnapshotDamage {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let m = u8::arbitrary(u)?;
        let arg = u8::arbitrary(u)?;
        if m < 160 {
            return Ok(SnapshotDamage::None);
        }
        Ok(match m % 8 {
            0 => SnapshotDamage::FlipBit { at: arg, bit: m % 7 },
            1 => SnapshotDamage::Truncate { by: arg % 16 },
            2 => SnapshotDamage::Append(arg),
            3 => SnapshotDamage::PositionNearMax { minus: arg % 4 },
            4 => SnapshotDamage::Version { huge: arg % 2 == 1 },
            5 => SnapshotDamage::Fingerprint { field: arg % 10, delta: 1 + m % 3 },
            6 => SnapshotDamage::HeaderSize { xor: arg | 1 },
            _ => SnapshotDamage::Position { value: arg, shift: m % 40 },
        })
    }
    fn size_hint(_depth: usize) -> (usize, Option<usize>) {
        (2, Some(2))
    }
}

/// A weight, bias, A, D or dt_bias array.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub struct Param {
    pub mode: ParamMode,
    pub seed: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamMode {
    /// (NULL, 0): no array (a required one is Present instead).
    Absent,
    Present,
    /// NULL with the full length.
    NullWithLen,
    /// (NULL, 0) even when required.
    NullEmpty,
    Longer,
    Shorter,
}

from_byte!(ParamMode, |b| match b {
    0..=95 => ParamMode::Absent,
    96..=231 => ParamMode::Present,
    232..=239 => ParamMode::NullWithLen,
    240..=247 => ParamMode::NullEmpty,
    _ if b.is_multiple_of(2) => ParamMode::Longer,
    _ => ParamMode::Shorter,
});

/// The conv kernels' argument struct.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub struct ConvArgs {
    pub activation: Activation,
    pub damage: ArgsDamage,
    pub weight: Param,
    pub bias: Param,
}

/// An activation code: usually none or SiLU, sometimes not one.
#[derive(Clone, Copy, Debug)]
pub struct Activation(pub u32);

from_byte!(Activation, |b| Activation(if b < 240 { u32::from(b % 2) } else { [2, u32::MAX][(b % 2) as usize] }));

/// struct_size values other than the struct's.
#[derive(Clone, Copy, Debug)]
pub enum StructSize {
    Zero,
    Eight,
    Larger,
}

/// A damaged m2c_conv_args.
#[derive(Clone, Copy, Debug)]
pub enum ArgsDamage {
    None,
    Reserved,
    StructSize(StructSize),
}

from_byte!(ArgsDamage, |b| if b < 250 {
    ArgsDamage::None
} else if b.is_multiple_of(2) {
    ArgsDamage::Reserved
} else {
    ArgsDamage::StructSize([StructSize::Zero, StructSize::Eight, StructSize::Larger][(b % 3) as usize])
});

/// A damaged m2c_ssm_args (it has no reserved field).
#[derive(Clone, Copy, Debug)]
pub struct SsmArgsDamage(pub Option<StructSize>);

from_byte!(SsmArgsDamage, |b| SsmArgsDamage(if b < 250 {
    None
} else {
    Some([StructSize::Zero, StructSize::Eight, StructSize::Larger][(b % 3) as usize])
}));

/// A damaged m2c_ssm_io.
#[derive(Clone, Copy, Debug)]
pub enum IoDamage {
    None,
    Reserved,
    Larger,
}

from_byte!(IoDamage, |b| if b < 250 {
    IoDamage::None
} else if b.is_multiple_of(2) {
    IoDamage::Reserved
} else {
    IoDamage::Larger
});

/// The dt clamp of m2c_ssm_args.
#[derive(Clone, Copy, Debug)]
pub enum Clamp {
    Off,
    /// [min(lo, hi), max(lo, hi)].
    On {
        lo: f32,
        hi: f32,
    },
    /// dt_min > dt_max.
    Inverted,
    /// dt_min NaN.
    NanMin,
}

from_byte!(Clamp, |c| match c {
    0..=127 => Clamp::Off,
    240.. if c.is_multiple_of(2) => Clamp::Inverted,
    240.. => Clamp::NanMin,
    _ => Clamp::On { lo: f32::from(c % 8) / 8.0, hi: f32::from(c / 8 % 8) / 4.0 },
});

/// The SSM kernels' argument struct.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub struct SsmArgs {
    pub dt_softplus: bool,
    pub damage: SsmArgsDamage,
    pub clamp: Clamp,
    pub a: Param,
    pub d: Param,
    pub dt_bias: Param,
}

/// conv_step / conv_prefill.
#[derive(Arbitrary, Clone, Debug)]
pub struct ConvKernel {
    pub layer: Layer,
    pub slots: Slots,
    pub io_dtype: Dtype,
    pub args: ConvArgs,
    pub x: Buf,
    pub x_seed: u8,
    pub out: Buf,
}

/// ssm_step / ssm_prefill.
#[derive(Arbitrary, Clone, Debug)]
pub struct SsmKernel {
    pub layer: Layer,
    pub slots: Slots,
    pub io_dtype: Dtype,
    pub args: SsmArgs,
    pub seed: u8,
    pub x: Buf,
    pub dt: Buf,
    pub b: Buf,
    pub c: Buf,
    pub z: Gate,
    pub y: Buf,
    pub io_damage: IoDamage,
}

/// cu_seqlens of the prefills: sequence i has `lens[i] % 4` tokens
/// (selections have at most 8 rows), then maybe damaged.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub struct CuSeqlens {
    pub lens: [u8; 8],
    pub damage: CuDamage,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CuDamage {
    None,
    Null,
    DropLast,
    RepeatLast,
    FirstNotZero,
    /// The last entry below the one before (when that is >= 1).
    Decreasing,
    HugeTotal,
}

from_byte!(CuDamage, |b| if b < 224 {
    CuDamage::None
} else {
    use CuDamage::*;
    [Null, DropLast, RepeatLast, FirstNotZero, Decreasing, HugeTotal, None, None][(b % 8) as usize]
});

/// The NULL-argument calls.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum NullCall {
    UpdateConvNullHandle,
    ResetNullHandle,
    AcquireNullHandle,
    LoadNullHandle,
    PositionNullOut,
    LoadNullBytes,
    CopyNullLists,
    CheckFiniteNullOut,
}

/// The calls given an output (or a slot list) inside the cache's storage.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum AliasedCall {
    Position,
    CountNonfinite,
    CheckFinite,
    SlotsInUse,
    SnapshotSize,
    GetConfig,
    ConvView,
    Acquire,
    Reset,
    Advance,
    /// out_written inside the snapshot buffer.
    SaveWrittenInBuffer,
}
