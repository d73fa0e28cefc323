//! The `.mlm` model file: layout, header types and the canonical tensor order.
//!
//! ```text
//! offset  size  field
//! 0       4     magic  b"MLM\x1a"
//! 4       4     format version (u32 LE)
//! 8       4     header length H (u32 LE)
//! 12      4     flags (u32 LE, must be 0)
//! 16      H     postcard(Header) followed by Header::tensor_count × postcard(TensorEntry)
//! ...           tokenizer section (4-byte aligned; see `tokenizer`)
//! ...           tensor data, each tensor at a 32-byte aligned offset from the file start,
//!               in canonical order (see `canonical_tensors`)
//! len-4   4     CRC32 (IEEE) of every byte before it
//! ```
//!
//! Tensors are laid out in one fixed order with one dtype per tensor *kind*
//! (each kind may have its own; norms are always f32),
//! so the reader can find any weight in O(1) without a table in RAM, and
//! `Model::parse` checks that the stored table says exactly that.

use serde::{Deserialize, Serialize};

use crate::error::FormatError;

/// First four bytes of every `.mlm` file.
pub const MAGIC: [u8; 4] = *b"MLM\x1a";
/// The format version this build writes. Version 2 starts the tokenizer section
/// with a kind word (SentencePiece or byte-level BPE); version 3 adds the q4_16
/// dtype (a version 1 or 2 file that names it is refused).
pub const VERSION: u32 = 3;
/// Longest source-format name (the string after the tensor table in version 2).
pub const MAX_SOURCE_LEN: usize = 64;
/// The oldest version this build reads: version 1 files hold a SentencePiece
/// section without the kind word and are otherwise identical.
pub const MIN_VERSION: u32 = 1;
/// Bytes before the header: magic, version, header length, flags.
pub const PREAMBLE_LEN: usize = 16;
/// Bytes after the data: the CRC32.
pub const TRAILER_LEN: usize = 4;
/// Alignment of every tensor's offset from the start of the file.
pub const TENSOR_ALIGN: usize = 32;

/// Model architecture.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Arch {
    /// Llama 2: RMSNorm, RoPE (llama2.c pairing), grouped-query attention, SwiGLU.
    Llama,
}

pub use crate::dtype::DType;

/// What a tensor is. The declaration order is the order inside a layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum TensorKind {
    /// Token embedding table, (vocab_size, dim).
    Embedding,
    /// Attention RMSNorm weight, (dim).
    AttnNorm,
    /// Query projection, (dim, dim).
    Wq,
    /// Key projection, (kv_dim, dim).
    Wk,
    /// Value projection, (kv_dim, dim).
    Wv,
    /// Attention output projection, (dim, dim).
    Wo,
    /// FFN RMSNorm weight, (dim).
    FfnNorm,
    /// FFN gate projection, (hidden_dim, dim).
    W1,
    /// FFN down projection, (dim, hidden_dim).
    W2,
    /// FFN up projection, (hidden_dim, dim).
    W3,
    /// Final RMSNorm weight, (dim).
    FinalNorm,
    /// Output classifier, (vocab_size, dim); absent when shared with the embedding.
    Classifier,
}

impl TensorKind {
    /// Every kind, in declaration order.
    pub const ALL: [TensorKind; 12] = [
        TensorKind::Embedding,
        TensorKind::AttnNorm,
        TensorKind::Wq,
        TensorKind::Wk,
        TensorKind::Wv,
        TensorKind::Wo,
        TensorKind::FfnNorm,
        TensorKind::W1,
        TensorKind::W2,
        TensorKind::W3,
        TensorKind::FinalNorm,
        TensorKind::Classifier,
    ];
    /// The kinds repeated in every layer, in file order.
    pub const PER_LAYER: [TensorKind; 9] = [
        TensorKind::AttnNorm,
        TensorKind::Wq,
        TensorKind::Wk,
        TensorKind::Wv,
        TensorKind::Wo,
        TensorKind::FfnNorm,
        TensorKind::W1,
        TensorKind::W2,
        TensorKind::W3,
    ];

    /// Index into [`TensorKind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// Short name used by `inspect` and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            TensorKind::Embedding => "embedding",
            TensorKind::AttnNorm => "attn_norm",
            TensorKind::Wq => "wq",
            TensorKind::Wk => "wk",
            TensorKind::Wv => "wv",
            TensorKind::Wo => "wo",
            TensorKind::FfnNorm => "ffn_norm",
            TensorKind::W1 => "w1",
            TensorKind::W2 => "w2",
            TensorKind::W3 => "w3",
            TensorKind::FinalNorm => "final_norm",
            TensorKind::Classifier => "classifier",
        }
    }

    /// Parses a name as printed by [`TensorKind::name`].
    pub fn from_name(name: &str) -> Option<TensorKind> {
        TensorKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Norm weights are vectors and always stored as f32.
    pub fn is_norm(self) -> bool {
        matches!(self, TensorKind::AttnNorm | TensorKind::FfnNorm | TensorKind::FinalNorm)
    }

    /// Whether this kind repeats per layer.
    pub fn is_per_layer(self) -> bool {
        TensorKind::PER_LAYER.contains(&self)
    }
}

/// The postcard-encoded header that follows the preamble.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Header<'a> {
    /// Free-form model name (e.g. the source file's stem).
    pub name: &'a str,
    /// Architecture.
    pub arch: Arch,
    /// Model width.
    pub dim: u32,
    /// FFN inner width.
    pub hidden_dim: u32,
    /// Number of transformer layers.
    pub n_layers: u32,
    /// Number of query heads.
    pub n_heads: u32,
    /// Number of key/value heads (grouped-query attention when < n_heads).
    pub n_kv_heads: u32,
    /// Vocabulary size.
    pub vocab_size: u32,
    /// Maximum context the model was trained for.
    pub seq_len: u32,
    /// RMSNorm epsilon (1e-5 for llama2.c models).
    pub norm_eps: f32,
    /// RoPE base (10000 for llama2.c models).
    pub rope_theta: f32,
    /// Beginning-of-sequence token id.
    pub bos_id: u32,
    /// End-of-sequence token id.
    pub eos_id: u32,
    /// True when the classifier reuses the embedding table.
    pub shared_classifier: bool,
    /// Where the tokenizer section lives.
    pub tokenizer: TokenizerHeader,
    /// Number of `TensorEntry` records after the header.
    pub tensor_count: u32,
}

/// Location and size of the tokenizer section.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenizerHeader {
    /// Offset from the start of the file (4-byte aligned).
    pub offset: u64,
    /// Length of the section in bytes.
    pub length: u64,
    /// Length of the longest piece in bytes.
    pub max_piece_len: u32,
}

/// One row of the tensor table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct TensorEntry {
    /// What the tensor is.
    pub kind: TensorKind,
    /// Layer index (0 for tensors outside the layers).
    pub layer: u32,
    /// Storage type.
    pub dtype: DType,
    /// Number of rows (1 for vectors).
    pub rows: u32,
    /// Number of columns (values per row).
    pub cols: u32,
    /// Byte offset from the start of the file.
    pub offset: u64,
    /// Byte length.
    pub length: u64,
}

/// Model hyper-parameters, checked and converted to `usize`.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Config {
    /// Model width.
    pub dim: usize,
    /// FFN inner width.
    pub hidden_dim: usize,
    /// Transformer layers.
    pub n_layers: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads.
    pub n_kv_heads: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Maximum context.
    pub seq_len: usize,
    /// RMSNorm epsilon.
    pub norm_eps: f32,
    /// RoPE base.
    pub rope_theta: f32,
    /// BOS token id.
    pub bos_id: u32,
    /// EOS token id.
    pub eos_id: u32,
    /// Classifier shares the embedding table.
    pub shared_classifier: bool,
}

impl Config {
    /// Width of one attention head.
    pub fn head_size(&self) -> usize {
        self.dim / self.n_heads
    }

    /// Width of the key/value projections.
    pub fn kv_dim(&self) -> usize {
        self.head_size() * self.n_kv_heads
    }

    /// (rows, cols) of a tensor kind under this configuration.
    pub fn shape(&self, kind: TensorKind) -> (usize, usize) {
        match kind {
            TensorKind::Embedding | TensorKind::Classifier => (self.vocab_size, self.dim),
            TensorKind::AttnNorm | TensorKind::FfnNorm | TensorKind::FinalNorm => (1, self.dim),
            TensorKind::Wq | TensorKind::Wo => (self.dim, self.dim),
            TensorKind::Wk | TensorKind::Wv => (self.kv_dim(), self.dim),
            TensorKind::W1 | TensorKind::W3 => (self.hidden_dim, self.dim),
            TensorKind::W2 => (self.dim, self.hidden_dim),
        }
    }

    /// Number of tensors in a file for this configuration.
    pub fn tensor_count(&self) -> usize {
        2 + 9 * self.n_layers + usize::from(!self.shared_classifier)
    }

    /// Checks and converts header values.
    pub fn from_header(h: &Header<'_>) -> Result<Config, FormatError> {
        use crate::error::Field;
        // Every dimension must be non-zero and small enough that later products stay in range.
        let dim = |v: u32, field: Field| -> Result<usize, FormatError> {
            if v == 0 || v > (1 << 24) {
                return Err(FormatError::BadDimension { field });
            }
            usize::try_from(v).map_err(|_| FormatError::BadDimension { field })
        };
        let n_layers = if h.n_layers == 0 || h.n_layers > 4096 {
            return Err(FormatError::BadDimension { field: Field::Layers });
        } else {
            h.n_layers as usize
        };
        let cfg = Config {
            dim: dim(h.dim, Field::Dim)?,
            hidden_dim: dim(h.hidden_dim, Field::HiddenDim)?,
            n_layers,
            n_heads: dim(h.n_heads, Field::Heads)?,
            n_kv_heads: dim(h.n_kv_heads, Field::KvHeads)?,
            vocab_size: dim(h.vocab_size, Field::VocabSize)?,
            seq_len: dim(h.seq_len, Field::SeqLen)?,
            norm_eps: h.norm_eps,
            rope_theta: h.rope_theta,
            bos_id: h.bos_id,
            eos_id: h.eos_id,
            shared_classifier: h.shared_classifier,
        };
        if !cfg.dim.is_multiple_of(cfg.n_heads) || !cfg.n_heads.is_multiple_of(cfg.n_kv_heads) {
            return Err(FormatError::BadHeads { n_heads: h.n_heads, n_kv_heads: h.n_kv_heads, dim: h.dim });
        }
        if !cfg.head_size().is_multiple_of(2) {
            return Err(FormatError::OddHeadSize { head_size: cfg.head_size() as u32 });
        }
        for (v, field) in [(cfg.norm_eps, Field::NormEps), (cfg.rope_theta, Field::RopeTheta)] {
            if !(v.is_finite() && v > 0.0) {
                return Err(FormatError::BadFloatParam { field });
            }
        }
        if cfg.vocab_size < 259 {
            return Err(FormatError::VocabTooSmall { vocab_size: h.vocab_size });
        }
        for id in [h.bos_id, h.eos_id] {
            if id as usize >= cfg.vocab_size {
                return Err(FormatError::BadSpecialToken { id, vocab_size: h.vocab_size });
            }
        }
        Ok(cfg)
    }
}

/// One dtype per tensor kind, indexed by [`TensorKind::index`].
pub type KindDtypes = [DType; 12];

/// Rounds `v` up to a multiple of `align` (a power of two).
pub fn align_up(v: usize, align: usize) -> Option<usize> {
    Some(v.checked_add(align - 1)? & !(align - 1))
}

/// Where each tensor of a model lives: computed from the configuration and
/// per-kind dtypes alone, so both the writer and the reader derive the same one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Layout {
    /// Offset of the embedding table.
    pub embedding: usize,
    /// Offset of layer 0's first tensor.
    pub layers: usize,
    /// Bytes from one layer's first tensor to the next one's.
    pub layer_stride: usize,
    /// Offset of each per-layer kind inside a layer, indexed by `TensorKind::index`.
    pub in_layer: [usize; 12],
    /// Offset of the final norm.
    pub final_norm: usize,
    /// Offset of the classifier (equals `embedding` when shared).
    pub classifier: usize,
    /// First byte after the last tensor.
    pub end: usize,
}

impl Layout {
    /// Lays out tensors from `data_start` on; `None` on overflow.
    pub fn new(cfg: &Config, dtypes: &KindDtypes, data_start: usize) -> Option<Layout> {
        let size = |kind: TensorKind| -> Option<usize> {
            let (rows, cols) = cfg.shape(kind);
            dtypes[kind.index()].row_bytes(cols)?.checked_mul(rows)
        };
        let embedding = align_up(data_start, TENSOR_ALIGN)?;
        let layers = align_up(embedding.checked_add(size(TensorKind::Embedding)?)?, TENSOR_ALIGN)?;
        let mut in_layer = [0usize; 12];
        let mut at = 0usize;
        for kind in TensorKind::PER_LAYER {
            in_layer[kind.index()] = at;
            at = align_up(at.checked_add(size(kind)?)?, TENSOR_ALIGN)?;
        }
        let layer_stride = at;
        let final_norm = layers.checked_add(layer_stride.checked_mul(cfg.n_layers)?)?;
        let after_norm = align_up(final_norm.checked_add(size(TensorKind::FinalNorm)?)?, TENSOR_ALIGN)?;
        let (classifier, end) = if cfg.shared_classifier {
            (embedding, final_norm.checked_add(size(TensorKind::FinalNorm)?)?)
        } else {
            (after_norm, after_norm.checked_add(size(TensorKind::Classifier)?)?)
        };
        Some(Layout { embedding, layers, layer_stride, in_layer, final_norm, classifier, end })
    }

    /// Offset of tensor `kind` in `layer` (layer is ignored outside the layers).
    pub fn offset(&self, kind: TensorKind, layer: usize) -> Option<usize> {
        match kind {
            TensorKind::Embedding => Some(self.embedding),
            TensorKind::FinalNorm => Some(self.final_norm),
            TensorKind::Classifier => Some(self.classifier),
            _ => {
                self.layers.checked_add(self.layer_stride.checked_mul(layer)?)?.checked_add(self.in_layer[kind.index()])
            }
        }
    }
}

/// The canonical tensor table for a configuration, in file order.
pub fn canonical_tensors<'c>(
    cfg: &'c Config,
    dtypes: &'c KindDtypes,
    layout: &'c Layout,
) -> impl Iterator<Item = Option<TensorEntry>> + 'c {
    let head = core::iter::once((TensorKind::Embedding, 0));
    let layers = (0..cfg.n_layers).flat_map(|l| TensorKind::PER_LAYER.into_iter().map(move |k| (k, l)));
    let tail = core::iter::once((TensorKind::FinalNorm, 0))
        .chain((!cfg.shared_classifier).then_some((TensorKind::Classifier, 0)));
    head.chain(layers).chain(tail).map(move |(kind, layer)| {
        let (rows, cols) = cfg.shape(kind);
        let dtype = dtypes[kind.index()];
        let length = dtype.row_bytes(cols)?.checked_mul(rows)?;
        Some(TensorEntry {
            kind,
            layer: u32::try_from(layer).ok()?,
            dtype,
            rows: u32::try_from(rows).ok()?,
            cols: u32::try_from(cols).ok()?,
            offset: layout.offset(kind, layer)? as u64,
            length: length as u64,
        })
    })
}

/// The file checksum: CRC-32 (IEEE 802.3 / zlib, polynomial 0x04C11DB7 reflected).
/// Bare-metal targets use a 1 KiB table to spare flash (with the feature
/// `compact`, a 64-byte one: [`crc32_nibbles`]); hosts a 16 KiB one for speed.
/// All give the same value.
#[cfg(all(target_os = "none", not(feature = "compact")))]
const CRC32: crc::Crc<u32, crc::Table<1>> = crc::Crc::<u32, crc::Table<1>>::new(&crc::CRC_32_ISO_HDLC);
/// The file checksum (see the bare-metal definition).
#[cfg(not(target_os = "none"))]
const CRC32: crc::Crc<u32, crc::Table<16>> = crc::Crc::<u32, crc::Table<16>>::new(&crc::CRC_32_ISO_HDLC);

/// CRC-32 of `bytes`, as stored in a model file's trailer.
pub fn crc32(bytes: &[u8]) -> u32 {
    #[cfg(all(target_os = "none", feature = "compact"))]
    return crc32_nibbles(bytes);
    #[cfg(not(all(target_os = "none", feature = "compact")))]
    return CRC32.checksum(bytes);
}

/// [`crc32`] four bits at a time from a 16-entry table (64 bytes of flash
/// against 1 KiB; two table steps per byte): the bare-metal checksum with the feature `compact`.
#[cfg(any(all(target_os = "none", feature = "compact"), test))]
fn crc32_nibbles(bytes: &[u8]) -> u32 {
    // Entry i: the reflected CRC register after shifting the four bits of i out.
    const TABLE: [u32; 16] = {
        let mut table = [0u32; 16];
        let mut i = 0;
        while i < 16 {
            let mut c = i as u32;
            let mut bit = 0;
            while bit < 4 {
                c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
                bit += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        crc = TABLE[(crc & 15) as usize] ^ (crc >> 4);
        crc = TABLE[(crc & 15) as usize] ^ (crc >> 4);
    }
    !crc
}

/// Reads a little-endian u32 at `at`, or `None` past the end.
pub(crate) fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

#[cfg(test)]
mod tests {
    #[test]
    fn crc32_is_the_standard_check_value() {
        // The CRC-32 catalogue's check value for "123456789".
        assert_eq!(super::crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(super::crc32(b""), 0);
    }

    #[test]
    fn crc32_nibbles_equals_crc32() {
        assert_eq!(super::crc32_nibbles(b"123456789"), 0xCBF4_3926);
        // Every length up to 300 over bytes that take every value.
        let mut bytes = [0u8; 300];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = ((i as u32).wrapping_mul(2_654_435_761) >> 13) as u8;
        }
        for len in 0..=bytes.len() {
            assert_eq!(super::crc32_nibbles(&bytes[..len]), super::crc32(&bytes[..len]), "{len}");
        }
    }
}
