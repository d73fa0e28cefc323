//! Writing `.mlm` files (host only, feature `std`): the tokenizer section, the
//! tensor encodings and the whole file with its CRC32.

extern crate alloc;
use alloc::{string::String, vec, vec::Vec};

use half::f16;

use crate::error::FormatError;
use crate::format::{
    align_up, canonical_tensors, Arch, Config, DType, Header, KindDtypes, Layout, TensorEntry, TokenizerHeader, MAGIC,
    PREAMBLE_LEN, VERSION,
};

/// A vocabulary as read from a tokenizer file: one piece and score per id.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Vocab {
    /// Piece bytes per token id.
    pub pieces: Vec<Vec<u8>>,
    /// Merge score per token id.
    pub scores: Vec<f32>,
}

/// Why a file could not be written.
#[allow(missing_docs)] // fields are named for what they hold
#[derive(Clone, Debug, PartialEq)]
pub enum WriteError {
    /// Two tokens share the same piece, so lookups would be ambiguous.
    DuplicatePiece { first: u32, second: u32 },
    /// A piece is empty.
    EmptyPiece { id: u32 },
    /// A token's merge score is NaN or infinite.
    NonFiniteScore { id: u32, score: f32 },
    /// Pieces and scores differ in count, or do not match the config's vocab_size.
    VocabSize { pieces: usize, scores: usize, vocab_size: usize },
    /// A tensor's data has the wrong number of values.
    TensorSize { kind: &'static str, layer: u32, expected: usize, found: usize },
    /// The configuration or sizes are out of range.
    Format(FormatError),
}

impl core::fmt::Display for WriteError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            WriteError::DuplicatePiece { first, second } => {
                write!(f, "tokens {first} and {second} have the same piece")
            }
            WriteError::EmptyPiece { id } => write!(f, "token {id} has an empty piece"),
            WriteError::NonFiniteScore { id, score } => write!(f, "token {id} has a non-finite score {score}"),
            WriteError::VocabSize { pieces, scores, vocab_size } => {
                write!(f, "tokenizer has {pieces} pieces and {scores} scores, the model's vocab_size is {vocab_size}")
            }
            WriteError::TensorSize { kind, layer, expected, found } => {
                write!(f, "tensor {kind} (layer {layer}) has {found} values, expected {expected}")
            }
            WriteError::Format(e) => e.fmt(f),
        }
    }
}

impl core::error::Error for WriteError {}

impl From<FormatError> for WriteError {
    fn from(e: FormatError) -> Self {
        WriteError::Format(e)
    }
}

/// Builds the tokenizer section (see `tokenizer` module docs); returns it and the longest piece length.
pub fn tokenizer_section(vocab: &Vocab) -> Result<(Vec<u8>, u32), WriteError> {
    let n = vocab.pieces.len();
    if vocab.scores.len() != n {
        return Err(WriteError::VocabSize { pieces: n, scores: vocab.scores.len(), vocab_size: n });
    }
    if let Some(id) = vocab.pieces.iter().position(|p| p.is_empty()) {
        return Err(WriteError::EmptyPiece { id: id as u32 });
    }
    if let Some(id) = vocab.scores.iter().position(|s| !s.is_finite()) {
        return Err(WriteError::NonFiniteScore { id: id as u32, score: vocab.scores[id] });
    }
    let mut sorted: Vec<u32> = (0..n as u32).collect();
    sorted.sort_by(|&a, &b| vocab.pieces[a as usize].cmp(&vocab.pieces[b as usize]));
    for w in sorted.windows(2) {
        if vocab.pieces[w[0] as usize] == vocab.pieces[w[1] as usize] {
            return Err(WriteError::DuplicatePiece { first: w[0].min(w[1]), second: w[0].max(w[1]) });
        }
    }
    let blob_len: usize = vocab.pieces.iter().map(Vec::len).sum();
    let mut out = Vec::with_capacity(12 + 12 * n + blob_len);
    out.extend_from_slice(&(n as u32).to_le_bytes());
    out.extend_from_slice(&(blob_len as u32).to_le_bytes());
    for s in &vocab.scores {
        out.extend_from_slice(&s.to_le_bytes());
    }
    let mut at = 0u32;
    out.extend_from_slice(&at.to_le_bytes());
    for p in &vocab.pieces {
        at += p.len() as u32;
        out.extend_from_slice(&at.to_le_bytes());
    }
    for id in &sorted {
        out.extend_from_slice(&id.to_le_bytes());
    }
    for p in &vocab.pieces {
        out.extend_from_slice(p);
    }
    let max = vocab.pieces.iter().map(Vec::len).max().unwrap_or(0) as u32;
    Ok((out, max))
}

/// Encodes `values` (rows × cols, row-major f32) as `dtype` bytes. Block
/// types treat `values` as one row; use [`crate::quant::encode_rows`] for matrices.
pub fn encode_tensor(dtype: DType, values: &[f32]) -> Vec<u8> {
    match dtype {
        DType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        DType::F16 => values.iter().flat_map(|&v| f16::from_f32(v).to_le_bytes()).collect(),
        DType::Q8_0 | DType::Q4_0 => crate::quant::encode_rows(dtype, values.len(), values, None),
    }
}

/// Little-endian binary16 bytes of `v` (round to nearest even), as block scales store it.
pub fn f16_bytes(v: f32) -> [u8; 2] {
    f16::from_f32(v).to_le_bytes()
}

/// Decodes `dtype` bytes of a (rows, cols) tensor back to f32.
pub fn decode_tensor(dtype: DType, rows: usize, cols: usize, bytes: &[u8]) -> Vec<f32> {
    let mut out = vec![0.0f32; rows * cols];
    let m = crate::kernels::Matrix { dtype, rows, cols, data: bytes };
    for (r, row) in out.chunks_exact_mut(cols.max(1)).enumerate() {
        m.row_to_f32(r, row);
    }
    out
}

/// Everything a model file holds, before encoding.
#[derive(Clone, Debug)]
pub struct ModelSpec<'a> {
    /// Name stored in the header.
    pub name: &'a str,
    /// Hyper-parameters (checked again by the writer).
    pub config: Config,
    /// Storage dtype per tensor kind.
    pub dtypes: KindDtypes,
    /// The tokenizer.
    pub vocab: &'a Vocab,
}

/// Writes a complete `.mlm` file. `tensor_bytes` returns the encoded bytes of
/// each tensor in canonical order; their lengths are checked.
pub fn write_model(
    spec: &ModelSpec<'_>,
    mut tensor_bytes: impl FnMut(&TensorEntry) -> Result<Vec<u8>, WriteError>,
) -> Result<Vec<u8>, WriteError> {
    let cfg = &spec.config;
    if spec.vocab.pieces.len() != cfg.vocab_size || spec.vocab.scores.len() != cfg.vocab_size {
        return Err(WriteError::VocabSize {
            pieces: spec.vocab.pieces.len(),
            scores: spec.vocab.scores.len(),
            vocab_size: cfg.vocab_size,
        });
    }
    let (tok_section, max_piece_len) = tokenizer_section(spec.vocab)?;
    let u32_of = |v: usize, field| u32::try_from(v).map_err(|_| FormatError::BadDimension { field });
    use crate::error::Field;
    let mut header = Header {
        name: spec.name,
        arch: Arch::Llama,
        dim: u32_of(cfg.dim, Field::Dim)?,
        hidden_dim: u32_of(cfg.hidden_dim, Field::HiddenDim)?,
        n_layers: u32_of(cfg.n_layers, Field::Layers)?,
        n_heads: u32_of(cfg.n_heads, Field::Heads)?,
        n_kv_heads: u32_of(cfg.n_kv_heads, Field::KvHeads)?,
        vocab_size: u32_of(cfg.vocab_size, Field::VocabSize)?,
        seq_len: u32_of(cfg.seq_len, Field::SeqLen)?,
        norm_eps: cfg.norm_eps,
        rope_theta: cfg.rope_theta,
        bos_id: cfg.bos_id,
        eos_id: cfg.eos_id,
        shared_classifier: cfg.shared_classifier,
        tokenizer: TokenizerHeader { offset: 0, length: tok_section.len() as u64, max_piece_len },
        tensor_count: cfg.tensor_count() as u32,
    };
    // Validate the configuration exactly as the reader will.
    Config::from_header(&header)?;

    // The header's size depends on the tokenizer offset, which depends on the
    // header's size: iterate until the encoding stops growing (varints settle fast).
    let mut tok_offset = 0usize;
    let (header_bytes, layout, entries) = loop {
        header.tokenizer.offset = tok_offset as u64;
        let layout_probe =
            Layout::new(cfg, &spec.dtypes, tok_offset + tok_section.len()).ok_or(FormatError::Overflow)?;
        let entries: Vec<TensorEntry> = canonical_tensors(cfg, &spec.dtypes, &layout_probe)
            .collect::<Option<Vec<_>>>()
            .ok_or(FormatError::Overflow)?;
        let mut bytes = postcard::to_allocvec(&header).map_err(|_| FormatError::HeaderDecode)?;
        for e in &entries {
            bytes.extend(postcard::to_allocvec(e).map_err(|_| FormatError::HeaderDecode)?);
        }
        let wanted = align_up(PREAMBLE_LEN + bytes.len(), 4).ok_or(FormatError::Overflow)?;
        if wanted == tok_offset {
            break (bytes, layout_probe, entries);
        }
        tok_offset = wanted;
    };

    let mut out = Vec::with_capacity(layout.end + 4);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(header_bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&header_bytes);
    out.resize(tok_offset, 0);
    out.extend_from_slice(&tok_section);
    for e in &entries {
        let bytes = tensor_bytes(e)?;
        if bytes.len() as u64 != e.length {
            return Err(WriteError::TensorSize {
                kind: e.kind.name(),
                layer: e.layer,
                expected: e.length as usize,
                found: bytes.len(),
            });
        }
        out.resize(e.offset as usize, 0);
        out.extend_from_slice(&bytes);
    }
    let crc = crate::format::crc32(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// A model name from a path-like string: the file stem.
pub fn model_name(path: &str) -> String {
    let file = path.rsplit(['/', '\\']).next().unwrap_or(path);
    file.split('.').next().unwrap_or(file).into()
}
