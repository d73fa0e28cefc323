//! Writing `.mlm` files (host only, feature `std`): the tokenizer section, the
//! tensor encodings and the whole file with its CRC32.

extern crate alloc;
use alloc::{collections::BTreeMap, string::String, vec, vec::Vec};

use half::f16;

use crate::bpe::{PreTokenizer, FLAG_ADD_BOS, TYPE_MAX, TYPE_NORMAL, TYPE_USER_DEFINED};
use crate::error::FormatError;
use crate::format::{
    align_up, canonical_tensors, Arch, Config, DType, Header, KindDtypes, Layout, TensorEntry, TokenizerHeader, MAGIC,
    PREAMBLE_LEN, VERSION,
};
use crate::tokenizer::{KIND_BPE, KIND_SENTENCEPIECE};

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
    /// The GGUF pre-tokenizer name is not one the byte-level BPE tokenizer implements.
    UnknownPreTokenizer { name: String },
    /// A normal token's string holds a character outside GPT-2's byte-to-unicode map.
    NotByteLevel { id: u32 },
    /// A token type is outside ggml's 0..=6, or types and tokens differ in count.
    TokenType { id: u32, ty: i64 },
    /// Token types and tokens differ in count.
    TypeCount { types: usize, tokens: usize },
    /// The byte table's entry for `byte` is not a token with that one-byte piece.
    MissingByteToken { byte: u8 },
    /// Merge `rank` is not `"a b"` of two tokens whose concatenation is a token.
    BadMerge { rank: u32 },
    /// An optional special id (unknown, padding, end of turn) is out of range.
    SpecialId { id: u32 },
    /// A section table has more entries than a u32 counts.
    TooLarge,
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
            WriteError::UnknownPreTokenizer { name } => write!(
                f,
                "pre-tokenizer {name:?} is not supported (byte-level BPE implements \"gpt-2\" and \"smollm\")"
            ),
            WriteError::NotByteLevel { id } => {
                write!(f, "token {id} is not a byte-level (GPT-2 byte-to-unicode) string")
            }
            WriteError::TokenType { id, ty } => write!(f, "token {id} has type {ty}, not one of ggml's types 0..=6"),
            WriteError::TypeCount { types, tokens } => write!(f, "{types} token types for {tokens} tokens"),
            WriteError::MissingByteToken { byte } => {
                write!(f, "the byte table entry for {byte:#04x} is not the token of that single byte")
            }
            WriteError::BadMerge { rank } => {
                write!(f, "merge {rank} is not two tokens separated by a space whose concatenation is a token")
            }
            WriteError::SpecialId { id } => write!(f, "special token id {id} is out of range"),
            WriteError::TooLarge => write!(f, "tokenizer tables exceed u32 counts"),
        }
    }
}

impl core::error::Error for WriteError {}

impl From<FormatError> for WriteError {
    fn from(e: FormatError) -> Self {
        WriteError::Format(e)
    }
}

/// Builds a version 2 SentencePiece tokenizer section (the kind word, then the layout in
/// the `tokenizer` module docs); returns it and the longest piece length.
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
    let mut out = Vec::with_capacity(16 + 12 * n + blob_len);
    out.extend_from_slice(&KIND_SENTENCEPIECE.to_le_bytes());
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

/// A byte-level BPE vocabulary ready to be written (see the `bpe` module docs).
#[derive(Clone, Debug, PartialEq)]
pub struct BpeVocab {
    /// Raw piece bytes per token id (GPT-2's byte-to-unicode mapping undone).
    pub pieces: Vec<Vec<u8>>,
    /// ggml token type per id (1 normal, 2 unknown, 3 control, 4 user-defined, ...).
    pub types: Vec<u8>,
    /// Merges in rank order (rank = index): (left id, right id, result id).
    pub merges: Vec<(u32, u32, u32)>,
    /// Token id of each byte's one-byte piece, `u32::MAX` for a byte the vocabulary
    /// lacks (SmolLM2 has no token for bytes never found in UTF-8 text, among others).
    pub byte_ids: Vec<u32>,
    /// How text is split into words.
    pub pre: PreTokenizer,
    /// Whether BOS is added to encoded text (GGUF `tokenizer.ggml.add_bos_token`).
    pub add_bos: bool,
    /// Unknown-token id, if any.
    pub unk_id: Option<u32>,
    /// Padding-token id, if any.
    pub pad_id: Option<u32>,
    /// End-of-turn id, if any.
    pub eot_id: Option<u32>,
}

/// Bytes GPT-2's `bytes_to_unicode` (GPT-2 `encoder.py`) maps to themselves:
/// printable Latin-1. The 68 others map, in increasing order, to U+0100 on.
fn gpt2_printable(b: u32) -> bool {
    matches!(b, 0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF)
}

/// The byte of a GPT-2 byte-to-unicode character (the inverse of `bytes_to_unicode`).
fn gpt2_byte(c: char) -> Option<u8> {
    let cp = c as u32;
    if cp < 256 {
        return gpt2_printable(cp).then_some(cp as u8);
    }
    (0..=255u32).filter(|&b| !gpt2_printable(b)).nth((cp - 256) as usize).map(|b| b as u8)
}

/// The GPT-2 byte-to-unicode character of one byte.
fn gpt2_char(b: u8) -> char {
    let b = u32::from(b);
    let cp = if gpt2_printable(b) { b } else { 256 + (0..b).filter(|&x| !gpt2_printable(x)).count() as u32 };
    char::from_u32(cp).unwrap_or(char::REPLACEMENT_CHARACTER)
}

impl BpeVocab {
    /// Builds the vocabulary from a GGUF `gpt2` tokenizer (`tokenizer.ggml.tokens`,
    /// `.merges`, `.token_type` (empty: all normal), `.pre`, `.add_bos_token`), as
    /// llama.cpp reads it: normal tokens are byte-to-unicode strings turned back into
    /// bytes, other types keep their text; merges `"a b"` name tokens by their strings
    /// (the last id of a repeated string, as llama.cpp's map keeps) and a repeated pair
    /// keeps its first rank. A byte with no one-byte token gets `u32::MAX`. Errors:
    /// an unknown pre-tokenizer name, a merge whose halves or concatenation are not
    /// tokens, a normal token outside the byte map, an empty piece, a bad type.
    pub fn from_gpt2(
        tokens: &[Vec<u8>],
        merges: &[Vec<u8>],
        token_types: &[i64],
        pre: &str,
        add_bos: bool,
    ) -> Result<BpeVocab, WriteError> {
        let pre = PreTokenizer::from_name(pre).ok_or_else(|| WriteError::UnknownPreTokenizer { name: pre.into() })?;
        if !token_types.is_empty() && token_types.len() != tokens.len() {
            return Err(WriteError::TypeCount { types: token_types.len(), tokens: tokens.len() });
        }
        let mut types = Vec::with_capacity(tokens.len());
        let mut pieces = Vec::with_capacity(tokens.len());
        let mut by_string: BTreeMap<&[u8], u32> = BTreeMap::new();
        for (i, t) in tokens.iter().enumerate() {
            let id = u32::try_from(i).map_err(|_| WriteError::TooLarge)?;
            let ty = token_types.get(i).copied().unwrap_or(i64::from(TYPE_NORMAL));
            let ty = u8::try_from(ty).ok().filter(|&t| t <= TYPE_MAX).ok_or(WriteError::TokenType { id, ty })?;
            types.push(ty);
            by_string.insert(t, id);
            let piece = if ty == TYPE_NORMAL {
                let s = core::str::from_utf8(t).map_err(|_| WriteError::NotByteLevel { id })?;
                s.chars().map(gpt2_byte).collect::<Option<Vec<u8>>>().ok_or(WriteError::NotByteLevel { id })?
            } else if ty == TYPE_USER_DEFINED || ty == 2 || ty == 3 {
                t.clone()
            } else {
                // Unused / byte / undefined tokens: decoded when they are byte-level strings.
                core::str::from_utf8(t)
                    .ok()
                    .and_then(|s| s.chars().map(gpt2_byte).collect::<Option<Vec<u8>>>())
                    .unwrap_or_else(|| t.clone())
            };
            if piece.is_empty() {
                return Err(WriteError::EmptyPiece { id });
            }
            pieces.push(piece);
        }
        let mut byte_ids = Vec::with_capacity(256);
        let mut utf8 = [0u8; 4];
        for b in 0..=255u8 {
            let s = gpt2_char(b).encode_utf8(&mut utf8).as_bytes();
            byte_ids.push(by_string.get(s).copied().unwrap_or(u32::MAX));
        }
        let mut seen = BTreeMap::new();
        let mut rules = Vec::with_capacity(merges.len());
        let mut joined = Vec::new();
        for (rank, m) in merges.iter().enumerate() {
            let rank = u32::try_from(rank).map_err(|_| WriteError::TooLarge)?;
            let bad = WriteError::BadMerge { rank };
            // llama.cpp splits at the first space after the first byte.
            let split = m.iter().skip(1).position(|&c| c == b' ').map(|p| p + 1).ok_or(bad.clone())?;
            let (a, b) = (&m[..split], &m[split + 1..]);
            let left = *by_string.get(a).ok_or(bad.clone())?;
            let right = *by_string.get(b).ok_or(bad.clone())?;
            joined.clear();
            joined.extend_from_slice(a);
            joined.extend_from_slice(b);
            let result = *by_string.get(&joined[..]).ok_or(bad)?;
            if seen.insert((left, right), rank).is_none() {
                rules.push((left, right, result));
            }
        }
        Ok(BpeVocab { pieces, types, merges: rules, byte_ids, pre, add_bos, unk_id: None, pad_id: None, eot_id: None })
    }
}

impl BpeVocab {
    /// The vocabulary of a parsed tokenizer, to write it again (requantization).
    pub fn from_tokenizer(t: &crate::bpe::BpeTokenizer<'_>) -> BpeVocab {
        let n = t.vocab_size() as u32;
        let mut merges: Vec<(u32, u32, u32, u32)> = t.merges().collect();
        merges.sort_by_key(|&(l, r, rank, _)| (rank, l, r));
        BpeVocab {
            pieces: (0..n).map(|id| t.piece(id).unwrap_or_default().to_vec()).collect(),
            types: (0..n).map(|id| t.token_type(id).unwrap_or(TYPE_NORMAL)).collect(),
            merges: merges.into_iter().map(|(l, r, _, res)| (l, r, res)).collect(),
            byte_ids: (0..=255u8).map(|b| t.byte_id(b).unwrap_or(u32::MAX)).collect(),
            pre: t.pre_tokenizer(),
            add_bos: t.add_bos(),
            unk_id: t.unk_id(),
            pad_id: t.pad_id(),
            eot_id: t.eot_id(),
        }
    }
}

/// Builds a version 2 byte-level BPE tokenizer section (the kind word, then the
/// layout in the `bpe` module docs); returns it and the longest piece length.
/// Checks what the reader checks, so a written section always parses.
pub fn bpe_tokenizer_section(v: &BpeVocab) -> Result<(Vec<u8>, u32), WriteError> {
    let n = v.pieces.len();
    let n32 = u32::try_from(n).map_err(|_| WriteError::TooLarge)?;
    if v.types.len() != n {
        return Err(WriteError::TypeCount { types: v.types.len(), tokens: n });
    }
    if let Some(id) = v.pieces.iter().position(Vec::is_empty) {
        return Err(WriteError::EmptyPiece { id: id as u32 });
    }
    if let Some(id) = v.types.iter().position(|&t| t > TYPE_MAX) {
        return Err(WriteError::TokenType { id: id as u32, ty: i64::from(v.types[id]) });
    }
    for id in [v.unk_id, v.pad_id, v.eot_id].into_iter().flatten() {
        if id >= n32 {
            return Err(WriteError::SpecialId { id });
        }
    }
    if v.byte_ids.len() != 256 {
        return Err(WriteError::MissingByteToken { byte: v.byte_ids.len().min(255) as u8 });
    }
    for (b, &id) in v.byte_ids.iter().enumerate() {
        if id != u32::MAX && v.pieces.get(id as usize).map(Vec::as_slice) != Some(&[b as u8][..]) {
            return Err(WriteError::MissingByteToken { byte: b as u8 });
        }
    }
    let piece = |id: u32| v.pieces.get(id as usize);
    let mut merges: Vec<(u32, u32, u32, u32)> = Vec::with_capacity(v.merges.len());
    let mut seen = BTreeMap::new();
    for (rank, &(l, r, res)) in v.merges.iter().enumerate() {
        let rank = u32::try_from(rank).map_err(|_| WriteError::TooLarge)?;
        let bad = WriteError::BadMerge { rank };
        let (a, b, c) = (piece(l).ok_or(bad.clone())?, piece(r).ok_or(bad.clone())?, piece(res).ok_or(bad.clone())?);
        if c.len() != a.len() + b.len() || c[..a.len()] != a[..] || c[a.len()..] != b[..] {
            return Err(bad);
        }
        if seen.insert((l, r), rank).is_some() {
            return Err(bad);
        }
        merges.push((l, r, rank, res));
    }
    merges.sort_unstable_by_key(|&(l, r, _, _)| (l, r));
    let is_special = |t: u8| matches!(t, 2..=4);
    let mut specials: Vec<u32> = (0..n32).filter(|&id| is_special(v.types[id as usize])).collect();
    specials.sort_by_key(|&id| (core::cmp::Reverse(v.pieces[id as usize].len()), id));
    let blob_len: usize = v.pieces.iter().map(Vec::len).sum();
    let u32_of = |x: usize| u32::try_from(x).map_err(|_| WriteError::TooLarge);
    let mut out = Vec::with_capacity(40 + 4 * (n + 1) + 1024 + 16 * merges.len() + 4 * specials.len() + n + blob_len);
    let put = |out: &mut Vec<u8>, w: u32| out.extend_from_slice(&w.to_le_bytes());
    put(&mut out, KIND_BPE);
    put(&mut out, n32);
    put(&mut out, u32_of(merges.len())?);
    put(&mut out, u32_of(specials.len())?);
    put(&mut out, v.pre.id());
    put(&mut out, if v.add_bos { FLAG_ADD_BOS } else { 0 });
    for id in [v.unk_id, v.pad_id, v.eot_id] {
        put(&mut out, id.unwrap_or(u32::MAX));
    }
    put(&mut out, u32_of(blob_len)?);
    let mut at = 0u32;
    put(&mut out, at);
    for p in &v.pieces {
        at += p.len() as u32;
        put(&mut out, at);
    }
    for &id in &v.byte_ids {
        put(&mut out, id);
    }
    for &(l, r, rank, res) in &merges {
        for w in [l, r, rank, res] {
            put(&mut out, w);
        }
    }
    for &id in &specials {
        put(&mut out, id);
    }
    out.extend_from_slice(&v.types);
    for p in &v.pieces {
        out.extend_from_slice(p);
    }
    let max = v.pieces.iter().map(Vec::len).max().unwrap_or(0) as u32;
    Ok((out, max))
}

/// The tokenizer a model file gets.
#[derive(Clone, Copy, Debug)]
pub enum TokenizerSpec<'a> {
    /// SentencePiece pieces and scores (llama2.c).
    SentencePiece(&'a Vocab),
    /// Byte-level BPE (GPT-2).
    Bpe(&'a BpeVocab),
}

/// Encodes `values` (rows × cols, row-major f32) as `dtype` bytes. Block
/// types treat `values` as one row; use [`crate::quant::encode_rows`] for matrices.
pub fn encode_tensor(dtype: DType, values: &[f32]) -> Vec<u8> {
    match dtype {
        DType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        DType::F16 => values.iter().flat_map(|&v| f16::from_f32(v).to_le_bytes()).collect(),
        DType::Q8_0 | DType::Q4_0 | DType::Q4_16 => crate::quant::encode_rows(dtype, values.len(), values, None),
        DType::Ones => Vec::new(),
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
    /// The format the model was converted from (`llama2.c`, `gguf`, `huggingface`).
    pub source: &'a str,
    /// Hyper-parameters (checked again by the writer).
    pub config: Config,
    /// Storage dtype per tensor kind.
    pub dtypes: KindDtypes,
    /// The tokenizer.
    pub vocab: &'a Vocab,
}

/// Writes a complete `.mlm` file with `spec.vocab` as its SentencePiece
/// tokenizer. `tensor_bytes` returns the encoded bytes of each tensor in
/// canonical order; their lengths are checked.
pub fn write_model(
    spec: &ModelSpec<'_>,
    tensor_bytes: impl FnMut(&TensorEntry) -> Result<Vec<u8>, WriteError>,
) -> Result<Vec<u8>, WriteError> {
    write_model_with(
        spec.name,
        spec.source,
        &spec.config,
        &spec.dtypes,
        TokenizerSpec::SentencePiece(spec.vocab),
        tensor_bytes,
    )
}

/// Writes a complete `.mlm` file (format `VERSION`) with either kind of tokenizer:
/// `name` goes in the header, `config` is checked as the reader checks it (its
/// `vocab_size` must equal the tokenizer's, its `bos_id`/`eos_id` are the special
/// ids), `dtypes` gives each kind's storage type, and `tensor_bytes` returns the
/// encoded bytes of each tensor in canonical order (lengths are checked).
pub fn write_model_with(
    name: &str,
    source: &str,
    config: &Config,
    dtypes: &KindDtypes,
    tokenizer: TokenizerSpec<'_>,
    mut tensor_bytes: impl FnMut(&TensorEntry) -> Result<Vec<u8>, WriteError>,
) -> Result<Vec<u8>, WriteError> {
    let cfg = config;
    if source.len() > crate::format::MAX_SOURCE_LEN {
        return Err(WriteError::Format(FormatError::HeaderDecode));
    }
    let (tok_section, max_piece_len) = match tokenizer {
        TokenizerSpec::SentencePiece(vocab) => {
            if vocab.pieces.len() != cfg.vocab_size || vocab.scores.len() != cfg.vocab_size {
                return Err(WriteError::VocabSize {
                    pieces: vocab.pieces.len(),
                    scores: vocab.scores.len(),
                    vocab_size: cfg.vocab_size,
                });
            }
            tokenizer_section(vocab)?
        }
        TokenizerSpec::Bpe(vocab) => {
            if vocab.pieces.len() != cfg.vocab_size {
                return Err(WriteError::VocabSize {
                    pieces: vocab.pieces.len(),
                    scores: vocab.types.len(),
                    vocab_size: cfg.vocab_size,
                });
            }
            bpe_tokenizer_section(vocab)?
        }
    };
    let u32_of = |v: usize, field| u32::try_from(v).map_err(|_| FormatError::BadDimension { field });
    use crate::error::Field;
    let mut header = Header {
        name,
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
        let layout_probe = Layout::new(cfg, dtypes, tok_offset + tok_section.len()).ok_or(FormatError::Overflow)?;
        let entries: Vec<TensorEntry> =
            canonical_tensors(cfg, dtypes, &layout_probe).collect::<Option<Vec<_>>>().ok_or(FormatError::Overflow)?;
        let mut bytes = postcard::to_allocvec(&header).map_err(|_| FormatError::HeaderDecode)?;
        for e in &entries {
            bytes.extend(postcard::to_allocvec(e).map_err(|_| FormatError::HeaderDecode)?);
        }
        bytes.extend(postcard::to_allocvec(source).map_err(|_| FormatError::HeaderDecode)?);
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
