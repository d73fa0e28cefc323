//! Error values, one small `Copy` enum per layer.
//!
//! Every enum implements `Display` (one clear line) and, behind the `defmt`
//! feature, `defmt::Format`, so a board can log it without formatting code.

use core::fmt;

/// Why a model file was rejected by [`Model::parse`](crate::Model::parse).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum FormatError {
    /// The file is shorter than its fixed preamble and trailer.
    TooShort {
        /// Length of the file in bytes.
        len: usize,
    },
    /// The file does not start with the `.mlm` magic bytes.
    BadMagic,
    /// The file was written by another format version.
    UnsupportedVersion {
        /// Version the file declares.
        found: u32,
        /// Version this build reads.
        supported: u32,
    },
    /// The preamble sets flag bits this reader does not know.
    UnknownFlags {
        /// The flags word of the preamble.
        flags: u32,
    },
    /// The buffer does not start on a 4-byte boundary, so tensors cannot be read in place.
    Misaligned,
    /// The CRC32 stored at the end of the file does not match its contents.
    ChecksumMismatch {
        /// CRC32 stored in the trailer.
        stored: u32,
        /// CRC32 of the bytes before the trailer.
        computed: u32,
    },
    /// The header length points past the end of the file.
    HeaderOutOfBounds {
        /// Header length from the preamble.
        header_len: u32,
        /// Length of the file in bytes.
        file_len: usize,
    },
    /// The postcard-encoded header or tensor table does not decode.
    HeaderDecode,
    /// Bytes are left over after the tensor table inside the header.
    HeaderTrailingBytes,
    /// The architecture id is not one this runtime implements.
    UnsupportedArch,
    /// A dimension is zero or too large for this target.
    BadDimension {
        /// The offending header field.
        field: Field,
    },
    /// `n_heads` does not divide `dim`, or `n_kv_heads` does not divide `n_heads`.
    BadHeads {
        /// Query heads.
        n_heads: u32,
        /// Key/value heads.
        n_kv_heads: u32,
        /// Model width.
        dim: u32,
    },
    /// The head size is odd, so RoPE pairs do not fit.
    OddHeadSize {
        /// `dim / n_heads`.
        head_size: u32,
    },
    /// The RMSNorm epsilon or RoPE base is not a finite positive number.
    BadFloatParam {
        /// The offending header field.
        field: Field,
    },
    /// A special token id (BOS, EOS) is not below `vocab_size`.
    BadSpecialToken {
        /// The special token id.
        id: u32,
        /// Vocabulary size from the header.
        vocab_size: u32,
    },
    /// The vocabulary is too small to hold the 3 special and 256 byte-fallback tokens.
    VocabTooSmall {
        /// Vocabulary size from the header.
        vocab_size: u32,
    },
    /// The tensor table has the wrong number of entries for this configuration.
    TensorCount {
        /// Entries the configuration needs.
        expected: u32,
        /// Entries in the table.
        found: u32,
    },
    /// Entry `index` names another tensor than the canonical order expects there.
    TensorOrder {
        /// Index of the entry in the tensor table.
        index: u32,
    },
    /// Entry `index` has a shape that does not match the configuration.
    TensorShape {
        /// Index of the entry in the tensor table.
        index: u32,
    },
    /// Entry `index` has a dtype not allowed for its kind, or different from others of its kind.
    TensorDtype {
        /// Index of the entry in the tensor table.
        index: u32,
    },
    /// Entry `index` has a byte length that does not match its dtype and shape.
    TensorLength {
        /// Index of the entry in the tensor table.
        index: u32,
    },
    /// Entry `index` is not at its canonical 32-byte aligned offset.
    TensorOffset {
        /// Index of the entry in the tensor table.
        index: u32,
    },
    /// Entry `index` reaches past the end of the tensor data.
    TensorOutOfBounds {
        /// Index of the entry in the tensor table.
        index: u32,
    },
    /// The tokenizer section lies outside the file or overlaps other sections.
    TokenizerOutOfBounds,
    /// The tokenizer section's internal tables are inconsistent.
    TokenizerTables,
    /// A vocabulary piece is empty or longer than the declared maximum.
    TokenizerPiece {
        /// Token id of the piece.
        id: u32,
    },
    /// The sorted-vocabulary index is not strictly sorted (unsorted or duplicate pieces).
    TokenizerIndex {
        /// Position in the sorted index.
        position: u32,
    },
    /// The tokenizer section declares a kind this runtime does not know.
    TokenizerKind {
        /// The kind word at the start of the section.
        kind: u32,
    },
    /// The byte-level BPE section names an unknown pre-tokenizer.
    TokenizerPreTokenizer {
        /// The stored pre-tokenizer id.
        id: u32,
    },
    /// The byte-level BPE section sets flag bits this reader does not know.
    TokenizerFlags {
        /// The stored flags word.
        flags: u32,
    },
    /// A token type is not one of ggml's types 0..=6.
    TokenizerTokenType {
        /// Token id.
        id: u32,
        /// The stored type.
        ty: u8,
    },
    /// A special id (unknown, padding, end of turn) or byte-token id is out of range or wrong.
    TokenizerSpecialId {
        /// The stored id.
        id: u32,
    },
    /// The byte table does not map byte `byte` to a one-byte piece holding it.
    TokenizerByteToken {
        /// The byte value.
        byte: u8,
    },
    /// Merge `index` (in table order) is out of range, out of order, or its result is not the concatenation.
    TokenizerMerge {
        /// Position in the merge table.
        index: u32,
    },
    /// Entry `index` of the special-token list has a wrong type, id or order.
    TokenizerSpecial {
        /// Position in the special-token list.
        index: u32,
    },
    /// Arithmetic on a header value overflowed.
    Overflow,
}

/// Names a header field in [`FormatError`] values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Field {
    /// `dim`, the model width.
    Dim,
    /// `hidden_dim`, the FFN width.
    HiddenDim,
    /// `n_layers`.
    Layers,
    /// `n_heads`.
    Heads,
    /// `n_kv_heads`.
    KvHeads,
    /// `vocab_size`.
    VocabSize,
    /// `seq_len`, the longest context.
    SeqLen,
    /// `norm_eps`, the RMSNorm epsilon.
    NormEps,
    /// `rope_theta`, the RoPE base.
    RopeTheta,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Field::Dim => "dim",
            Field::HiddenDim => "hidden_dim",
            Field::Layers => "n_layers",
            Field::Heads => "n_heads",
            Field::KvHeads => "n_kv_heads",
            Field::VocabSize => "vocab_size",
            Field::SeqLen => "seq_len",
            Field::NormEps => "norm_eps",
            Field::RopeTheta => "rope_theta",
        })
    }
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use FormatError::*;
        match *self {
            TooShort { len } => write!(f, "file too short ({len} bytes) to be a model file"),
            BadMagic => write!(f, "not a microlm model file (bad magic)"),
            UnsupportedVersion { found, supported } => write!(
                f,
                "unsupported format version {found} (this build reads version {supported}); re-convert the model"
            ),
            UnknownFlags { flags } => write!(f, "unknown flag bits {flags:#x} in the preamble"),
            Misaligned => write!(f, "model buffer is not 4-byte aligned"),
            ChecksumMismatch { stored, computed } => write!(
                f,
                "checksum mismatch: file says {stored:#010x}, contents give {computed:#010x} (corrupt or truncated file)"
            ),
            HeaderOutOfBounds { header_len, file_len } => write!(
                f,
                "header length {header_len} does not fit in a {file_len}-byte file"
            ),
            HeaderDecode => write!(f, "header does not decode"),
            HeaderTrailingBytes => write!(f, "header has trailing bytes after the tensor table"),
            UnsupportedArch => write!(f, "unsupported model architecture"),
            BadDimension { field } => write!(f, "header field {field} is zero or too large"),
            BadHeads { n_heads, n_kv_heads, dim } => write!(
                f,
                "bad head counts: n_heads {n_heads} must divide dim {dim} and n_kv_heads {n_kv_heads} must divide n_heads"
            ),
            OddHeadSize { head_size } => write!(f, "head size {head_size} is odd; RoPE needs pairs"),
            BadFloatParam { field } => write!(f, "header field {field} is not a finite positive number"),
            BadSpecialToken { id, vocab_size } => write!(
                f,
                "special token id {id} is out of range for vocabulary size {vocab_size}"
            ),
            VocabTooSmall { vocab_size } => write!(
                f,
                "vocabulary size {vocab_size} is below 259 (3 special + 256 byte tokens)"
            ),
            TensorCount { expected, found } => {
                write!(f, "tensor table has {found} entries, the configuration needs {expected}")
            }
            TensorOrder { index } => write!(f, "tensor {index} is not the tensor expected at that position"),
            TensorShape { index } => write!(f, "tensor {index} has a shape that does not match the configuration"),
            TensorDtype { index } => write!(f, "tensor {index} has a dtype not allowed for its kind"),
            TensorLength { index } => write!(f, "tensor {index} has a byte length that does not match its shape"),
            TensorOffset { index } => write!(f, "tensor {index} is not at its aligned canonical offset"),
            TensorOutOfBounds { index } => write!(f, "tensor {index} extends past the end of the file"),
            TokenizerOutOfBounds => write!(f, "tokenizer section lies outside the file"),
            TokenizerTables => write!(f, "tokenizer tables are inconsistent"),
            TokenizerPiece { id } => write!(f, "tokenizer piece {id} is empty or too long"),
            TokenizerIndex { position } => write!(
                f,
                "sorted vocabulary index is not strictly increasing at position {position}"
            ),
            TokenizerKind { kind } => write!(f, "tokenizer kind {kind} is not known (0 = SentencePiece, 1 = byte-level BPE)"),
            TokenizerPreTokenizer { id } => write!(f, "tokenizer pre-tokenizer id {id} is not known (0 = gpt-2, 1 = smollm)"),
            TokenizerFlags { flags } => write!(f, "tokenizer flags {flags:#x} set unknown bits"),
            TokenizerTokenType { id, ty } => write!(f, "token {id} has type {ty}, not one of ggml's types 0..=6"),
            TokenizerSpecialId { id } => write!(f, "tokenizer special token id {id} is out of range"),
            TokenizerByteToken { byte } => write!(f, "tokenizer byte table entry {byte:#04x} is not the one-byte piece of that byte"),
            TokenizerMerge { index } => write!(f, "tokenizer merge {index} is out of range, out of order, or not the concatenation of its pair"),
            TokenizerSpecial { index } => write!(f, "tokenizer special-token list entry {index} has a wrong type, id or order"),
            Overflow => write!(f, "arithmetic overflow in header values"),
        }
    }
}

/// Errors from planning memory and running the forward pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SessionError {
    /// The arena handed to [`Session::new`](crate::Session::new) is smaller than the plan.
    ArenaTooSmall {
        /// Bytes the plan needs.
        needed: usize,
        /// Bytes handed in.
        given: usize,
    },
    /// The arena does not start on a 4-byte boundary.
    ArenaMisaligned,
    /// The requested context is zero or longer than the model's `seq_len`.
    BadContext {
        /// Context length asked for.
        requested: usize,
        /// The model's `seq_len`.
        max: usize,
    },
    /// A position at or past the context length was requested.
    ContextFull {
        /// Context length of the session.
        ctx_len: usize,
    },
    /// A token id is not below the vocabulary size.
    TokenOutOfRange {
        /// The token id.
        token: u32,
        /// Vocabulary size of the model.
        vocab_size: usize,
    },
    /// The prompt has more tokens than the context holds.
    PromptTooLong {
        /// Tokens in the prompt.
        tokens: usize,
        /// Context length of the session.
        ctx_len: usize,
    },
    /// The prompt is empty (it must at least hold BOS).
    EmptyPrompt,
    /// The q8 activation scratch handed to a quantized matvec holds fewer bytes than its input needs.
    ScratchTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes handed in.
        given: usize,
    },
    /// Window mode needs fewer attention sinks than context positions.
    BadWindow {
        /// Attention sinks asked for.
        sinks: usize,
        /// Context length of the session.
        ctx_len: usize,
    },
    /// A tensor view could not be formed; unreachable for a parsed model.
    Internal,
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use SessionError::*;
        match *self {
            ArenaTooSmall { needed, given } => {
                write!(f, "arena too small: needs {needed} bytes, given {given}")
            }
            ArenaMisaligned => write!(f, "arena is not 4-byte aligned"),
            BadContext { requested, max } => {
                write!(f, "context length {requested} must be between 1 and the model's seq_len {max}")
            }
            ContextFull { ctx_len } => write!(f, "context full ({ctx_len} positions)"),
            TokenOutOfRange { token, vocab_size } => {
                write!(f, "token id {token} out of range for vocabulary size {vocab_size}")
            }
            PromptTooLong { tokens, ctx_len } => {
                write!(f, "prompt is {tokens} tokens, longer than the context of {ctx_len}")
            }
            EmptyPrompt => write!(f, "prompt token list is empty (it must start with BOS)"),
            ScratchTooSmall { needed, given } => {
                write!(f, "activation scratch too small for a quantized matmul: needs {needed} bytes, given {given}")
            }
            BadWindow { sinks, ctx_len } => {
                write!(
                    f,
                    "window mode with {sinks} attention sinks needs a context longer than {sinks} (got {ctx_len})"
                )
            }
            Internal => write!(f, "internal error: tensor view out of range"),
        }
    }
}

/// Why [`plan_from_header`](crate::plan_from_header) could not plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum PlanError {
    /// The preamble or header is not valid.
    Format(FormatError),
    /// The context length is not valid for the model.
    Session(SessionError),
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlanError::Format(e) => e.fmt(f),
            PlanError::Session(e) => e.fmt(f),
        }
    }
}

/// Invalid sampler settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SamplerError {
    /// Temperature is NaN, infinite or negative.
    Temperature,
    /// top-p is NaN or outside (0, 1].
    TopP,
    /// top-k is larger than the vocabulary.
    TopK {
        /// The `top_k` asked for.
        top_k: usize,
        /// Vocabulary size of the model.
        vocab_size: usize,
    },
    /// min-p is NaN or outside [0, 1].
    MinP,
    /// A zero seed would freeze the xorshift generator.
    ZeroSeed,
    /// The candidate scratch is smaller than the vocabulary.
    Scratch {
        /// Candidates needed (the vocabulary size).
        needed: usize,
        /// Candidates handed in.
        given: usize,
    },
    /// A logit handed to the sampler is NaN or infinite.
    NonFiniteLogit {
        /// The first such logit's index.
        index: usize,
    },
}

impl fmt::Display for SamplerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use SamplerError::*;
        match *self {
            Temperature => write!(f, "temperature must be a finite number >= 0"),
            TopP => write!(f, "top-p must be in (0, 1]"),
            TopK { top_k, vocab_size } => {
                write!(f, "top-k {top_k} is larger than the vocabulary ({vocab_size})")
            }
            MinP => write!(f, "min-p must be in [0, 1]"),
            ZeroSeed => write!(f, "seed must be non-zero"),
            Scratch { needed, given } => {
                write!(f, "sampler scratch holds {given} candidates, needs {needed}")
            }
            NonFiniteLogit { index } => write!(f, "logit {index} is not a finite number"),
        }
    }
}

/// Errors from encoding text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum TokenizerError {
    /// The output slice cannot hold the tokens before merging.
    OutputTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes handed in.
        given: usize,
    },
}

impl fmt::Display for TokenizerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            TokenizerError::OutputTooSmall { needed, given } => {
                write!(f, "token buffer too small: encoding needs {needed} slots, given {given}")
            }
        }
    }
}

// `core::error::Error` on every target (stable since Rust 1.81), so `?` into
// `Box<dyn Error>` / anyhow works on hosts and a firmware can walk `source()`.
impl core::error::Error for FormatError {}
impl core::error::Error for SessionError {}
impl core::error::Error for SamplerError {}
impl core::error::Error for TokenizerError {}

impl core::error::Error for PlanError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            PlanError::Format(e) => Some(e),
            PlanError::Session(e) => Some(e),
        }
    }
}
