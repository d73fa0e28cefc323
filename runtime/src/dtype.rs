//! Storage types and block layouts: [`DType`], the block size [`QK`], the
//! typed blocks [`BlockQ8_0`] and [`BlockQ4_0`] (ggml `block_q8_0` /
//! `block_q4_0`), [`BlockQ4_16`] (q4_0 with a scale per 16 values) and
//! [`DType::row_bytes`]. A leaf module: the model format and
//! the kernels both build on it, and it uses nothing of the crate.

use serde::{Deserialize, Serialize};

/// Values per quantization block (q8_0, q4_0 and q4_16).
pub const QK: usize = 32;
/// Values per scale of q4_16: each 32-value block holds two 16-value groups.
pub const QK4_16: usize = 16;

/// Bytes of one q8_0 block: an f16 scale and 32 signed quants.
pub const Q8_0_BLOCK_BYTES: usize = core::mem::size_of::<BlockQ8_0>();
/// Bytes of one q4_0 block: an f16 scale and 16 bytes of nibbles.
pub const Q4_0_BLOCK_BYTES: usize = core::mem::size_of::<BlockQ4_0>();

/// Bytes of one q4_16 block: two f16 scales and 16 bytes of nibbles.
pub const Q4_16_BLOCK_BYTES: usize = core::mem::size_of::<BlockQ4_16>();

/// One q8_0 block, as laid out in the file (no padding, alignment 1, so any
/// byte slice of whole blocks casts to `&[BlockQ8_0]`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct BlockQ8_0 {
    /// Scale, binary16 little-endian.
    pub d: [u8; 2],
    /// Quants: value `i` = d · `qs[i]`.
    pub qs: [i8; QK],
}

/// One q4_0 block, as laid out in the file (no padding, alignment 1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct BlockQ4_0 {
    /// Scale, binary16 little-endian.
    pub d: [u8; 2],
    /// Nibbles: the low nibble of byte j is element j, the high nibble element j + 16;
    /// value = d · (nibble − 8).
    pub qs: [u8; QK / 2],
}

/// One q4_16 block of 32 values, as laid out in the file (no padding, alignment 1):
/// q4_0's nibble layout with a scale for each 16-value half. Elements 0..16 (the
/// low nibbles) use `d[0]`, elements 16..32 (the high nibbles) use `d[1]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct BlockQ4_16 {
    /// Scales of elements 0..16 and 16..32, binary16 little-endian.
    pub d: [[u8; 2]; 2],
    /// Nibbles: the low nibble of byte j is element j, the high nibble element j + 16;
    /// value = d\[i / 16\] · (nibble − 8).
    pub qs: [u8; QK / 2],
}

// The structs are the documented layouts: scales first, then the quants; 34, 18 and 20 bytes.
const _: () = assert!(core::mem::size_of::<BlockQ8_0>() == 34);
const _: () = assert!(core::mem::size_of::<BlockQ4_0>() == 18);
const _: () = assert!(core::mem::size_of::<BlockQ4_16>() == 20);
const _: () = assert!(core::mem::align_of::<BlockQ8_0>() == 1 && core::mem::align_of::<BlockQ4_0>() == 1);
const _: () = assert!(core::mem::align_of::<BlockQ4_16>() == 1);

/// The byte-slice views every block type has: `slice`, `slice_mut`, `read`, `write`.
macro_rules! block_io {
    ($block:ident, $bytes:ident, $n:literal) => {
        impl $block {
            /// The whole blocks at the start of `bytes` (a trailing partial block is left out).
            #[inline(always)]
            pub fn slice(bytes: &[u8]) -> &[$block] {
                let whole = bytes.len() - bytes.len() % $bytes;
                // Alignment 1 and a whole number of blocks: the cast cannot fail.
                bytemuck::try_cast_slice(&bytes[..whole]).unwrap_or(&[])
            }

            /// The whole blocks at the start of `bytes`, writable.
            #[inline(always)]
            pub fn slice_mut(bytes: &mut [u8]) -> &mut [$block] {
                let whole = bytes.len() - bytes.len() % $bytes;
                bytemuck::try_cast_slice_mut(&mut bytes[..whole]).unwrap_or(&mut [])
            }

            #[doc = concat!("Reads a block from the first ", $n, " bytes of `b` (`None` when shorter).")]
            pub fn read(b: &[u8]) -> Option<$block> {
                $block::slice(b).first().copied()
            }

            #[doc = concat!("Writes the block into the first ", $n, " bytes of `out` (nothing when shorter).")]
            pub fn write(&self, out: &mut [u8]) {
                if let Some(b) = $block::slice_mut(out).first_mut() {
                    *b = *self;
                }
            }
        }
    };
}

block_io!(BlockQ8_0, Q8_0_BLOCK_BYTES, 34);

impl BlockQ8_0 {
    /// The scale as f32.
    pub fn scale(&self) -> f32 {
        half::f16::from_le_bytes(self.d).to_f32()
    }
}

block_io!(BlockQ4_0, Q4_0_BLOCK_BYTES, 18);

impl BlockQ4_0 {
    /// The scale as f32.
    pub fn scale(&self) -> f32 {
        half::f16::from_le_bytes(self.d).to_f32()
    }

    /// Signed quant of element `i` (0..32): nibble − 8, in -8..=7.
    pub fn quant(&self, i: usize) -> i32 {
        let byte = self.qs[i % (QK / 2)];
        let nibble = if i < QK / 2 { byte & 0x0f } else { byte >> 4 };
        i32::from(nibble) - 8
    }
}

block_io!(BlockQ4_16, Q4_16_BLOCK_BYTES, 20);

impl BlockQ4_16 {
    /// The scale of element `i` (0..32) as f32.
    pub fn scale(&self, i: usize) -> f32 {
        half::f16::from_le_bytes(self.d[(i / QK4_16) & 1]).to_f32()
    }

    /// Signed quant of element `i` (0..32): nibble − 8, in -8..=7.
    pub fn quant(&self, i: usize) -> i32 {
        let byte = self.qs[i % (QK / 2)];
        let nibble = if i < QK / 2 { byte & 0x0f } else { byte >> 4 };
        i32::from(nibble) - 8
    }
}

/// Storage type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum DType {
    /// IEEE binary32, little-endian.
    F32,
    /// IEEE binary16, little-endian.
    F16,
    /// Blocks of 32 values: f16 scale + 32 × i8 (34 bytes, ggml `block_q8_0`); [`BlockQ8_0`].
    Q8_0,
    /// Blocks of 32 values: f16 scale + 16 bytes of nibbles (18 bytes, ggml `block_q4_0`); [`BlockQ4_0`].
    Q4_0,
    /// Blocks of 32 values: two f16 scales (one per 16 values) + 16 bytes of nibbles
    /// (20 bytes, 5 bits per value); [`BlockQ4_16`]. Not a ggml type; file format version 3.
    Q4_16,
    /// Every value 1.0, no bytes stored: an attention or FFN RMSNorm weight folded
    /// into the matrices after it (`quantize --fold-norms`). Norms only; format version 3.
    Ones,
}

impl DType {
    /// Every dtype, in declaration order.
    pub const ALL: [DType; 6] = [DType::F32, DType::F16, DType::Q8_0, DType::Q4_0, DType::Q4_16, DType::Ones];
    /// The dtypes a weight matrix may have (all but [`DType::Ones`]).
    pub const WEIGHTS: [DType; 5] = [DType::F32, DType::F16, DType::Q8_0, DType::Q4_0, DType::Q4_16];

    /// Bytes used by one row of `cols` values. Block types pad each row with
    /// zeros to a whole number of 32-value blocks: `ceil(cols / 32) × block bytes`.
    pub fn row_bytes(self, cols: usize) -> Option<usize> {
        match self {
            DType::F32 => cols.checked_mul(4),
            DType::F16 => cols.checked_mul(2),
            DType::Q8_0 => cols.div_ceil(QK).checked_mul(Q8_0_BLOCK_BYTES),
            DType::Q4_0 => cols.div_ceil(QK).checked_mul(Q4_0_BLOCK_BYTES),
            DType::Q4_16 => cols.div_ceil(QK).checked_mul(Q4_16_BLOCK_BYTES),
            DType::Ones => Some(0),
        }
    }

    /// True for the block-quantized types, whose matmuls quantize their input to q8 blocks.
    pub fn is_quantized(self) -> bool {
        matches!(self, DType::Q8_0 | DType::Q4_0 | DType::Q4_16)
    }

    /// Values sharing one scale: 32 for q8_0 and q4_0, 16 for q4_16 (`None` for f32 and f16).
    pub fn group_size(self) -> Option<usize> {
        match self {
            DType::Q8_0 | DType::Q4_0 => Some(QK),
            DType::Q4_16 => Some(QK4_16),
            DType::F32 | DType::F16 | DType::Ones => None,
        }
    }

    /// Bytes of one 32-value block of a block type (`None` for f32 and f16).
    pub fn block_bytes(self) -> Option<usize> {
        match self {
            DType::Q8_0 => Some(Q8_0_BLOCK_BYTES),
            DType::Q4_0 => Some(Q4_0_BLOCK_BYTES),
            DType::Q4_16 => Some(Q4_16_BLOCK_BYTES),
            DType::F32 | DType::F16 | DType::Ones => None,
        }
    }

    /// Lower-case name as used on the command line (`f32`, `f16`, `q8_0`, `q4_0`, `q4_16`; `ones` in reports).
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::Q8_0 => "q8_0",
            DType::Q4_0 => "q4_0",
            DType::Q4_16 => "q4_16",
            DType::Ones => "ones",
        }
    }

    /// Parses a name as printed by [`DType::name`].
    pub fn from_name(name: &str) -> Option<DType> {
        DType::ALL.into_iter().find(|d| d.name() == name)
    }
}
