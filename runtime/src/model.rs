//! `Model::parse`: a checked, zero-copy view of a `.mlm` file.
//!
//! After `parse` returns `Ok`, every tensor and tokenizer accessor reads
//! in-bounds data: each count, shape, offset and length was checked with
//! checked arithmetic against the configuration and the file length.

use crate::error::{FormatError, PlanError, SessionError};
use crate::format::{
    canonical_tensors, read_u32, Config, DType, Header, KindDtypes, Layout, TensorEntry, TensorKind, MAGIC,
    MAX_SOURCE_LEN, MIN_VERSION, PREAMBLE_LEN, TRAILER_LEN, VERSION,
};
use crate::kernels::Matrix;
use crate::kv::KvDtype;
use crate::plan::Plan;
use crate::tokenizer::Tokenizer;

/// Whether `parse` verifies the file's CRC32.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Checksum {
    /// Compute the CRC32 of the whole file and compare (the default).
    Verify,
    /// Skip only the CRC (for files verified once, e.g. at flash time); every structural check still runs.
    Skip,
}

/// A parsed model: configuration, tokenizer and weight views into the file bytes.
#[derive(Clone, Copy, Debug)]
pub struct Model<'a> {
    bytes: &'a [u8],
    name: &'a str,
    config: Config,
    dtypes: KindDtypes,
    layout: Layout,
    /// Per tensor kind (by `TensorKind::index`): its shape, dtype and byte length, so
    /// `matrix` looks them up instead of deriving them on every call.
    views: [KindView; 12],
    tokenizer: Tokenizer<'a>,
    /// The format the file was converted from (`llama2.c`, `gguf`, `huggingface`; "" in version 1 files).
    source: &'a str,
    /// The encoded tensor table, kept for `tensors()`.
    table: &'a [u8],
    /// Byte length of the tokenizer section.
    tokenizer_len: usize,
    crc: u32,
}

/// The shape, dtype and byte length of every tensor of one kind.
#[derive(Clone, Copy, Debug)]
struct KindView {
    dtype: DType,
    rows: usize,
    cols: usize,
    len: usize,
}

impl<'a> Model<'a> {
    /// Parses and fully checks a model file, including its CRC32.
    pub fn parse(bytes: &'a [u8]) -> Result<Model<'a>, FormatError> {
        Self::parse_with(bytes, Checksum::Verify)
    }

    /// Parses a model file, optionally skipping only the CRC32.
    pub fn parse_with(bytes: &'a [u8], checksum: Checksum) -> Result<Model<'a>, FormatError> {
        if bytes.len() < PREAMBLE_LEN + TRAILER_LEN {
            return Err(FormatError::TooShort { len: bytes.len() });
        }
        if bytes[..4] != MAGIC {
            return Err(FormatError::BadMagic);
        }
        let word = |at| read_u32(bytes, at).ok_or(FormatError::TooShort { len: bytes.len() });
        let version = word(4)?;
        if !(MIN_VERSION..=VERSION).contains(&version) {
            return Err(FormatError::UnsupportedVersion { found: version, supported: VERSION });
        }
        let header_len = word(8)?;
        let flags = word(12)?;
        if flags != 0 {
            return Err(FormatError::UnknownFlags { flags });
        }
        if bytes.as_ptr().align_offset(4) != 0 {
            return Err(FormatError::Misaligned);
        }
        let body_len = bytes.len() - TRAILER_LEN;
        let stored_crc = word(body_len)?;
        if checksum == Checksum::Verify {
            let computed = crate::format::crc32(&bytes[..body_len]);
            if computed != stored_crc {
                return Err(FormatError::ChecksumMismatch { stored: stored_crc, computed });
            }
        }
        let header_end = (header_len as usize)
            .checked_add(PREAMBLE_LEN)
            .filter(|&end| end <= body_len)
            .ok_or(FormatError::HeaderOutOfBounds { header_len, file_len: bytes.len() })?;
        let header_bytes = &bytes[PREAMBLE_LEN..header_end];

        let (header, table): (Header<'a>, &'a [u8]) =
            postcard::take_from_bytes(header_bytes).map_err(|_| FormatError::HeaderDecode)?;
        let config = Config::from_header(&header)?;
        let expected = config.tensor_count();
        if header.tensor_count as usize != expected {
            return Err(FormatError::TensorCount { expected: expected as u32, found: header.tensor_count });
        }

        // Tokenizer section: after the header, 4-byte aligned, before the tensors.
        let tok = header.tokenizer;
        let tok_start = usize::try_from(tok.offset).map_err(|_| FormatError::TokenizerOutOfBounds)?;
        let tok_end = usize::try_from(tok.length)
            .ok()
            .and_then(|len| tok_start.checked_add(len))
            .ok_or(FormatError::TokenizerOutOfBounds)?;
        if tok_start < header_end || tok_start % 4 != 0 || tok_end > body_len {
            return Err(FormatError::TokenizerOutOfBounds);
        }
        let parse_section = if version == 1 { Tokenizer::parse_v1 } else { Tokenizer::parse };
        let tokenizer = parse_section(
            &bytes[tok_start..tok_end],
            config.vocab_size,
            tok.max_piece_len as usize,
            config.bos_id,
            config.eos_id,
        )?;

        // Per-kind dtypes come from the first entry of each kind; the table must then equal the canonical one.
        let dtypes = Self::kind_dtypes(table, expected, version)?;
        let layout = Layout::new(&config, &dtypes, tok_end).ok_or(FormatError::Overflow)?;
        let mut rest = table;
        for (index, canonical) in canonical_tensors(&config, &dtypes, &layout).enumerate() {
            let index = index as u32;
            let canonical = canonical.ok_or(FormatError::Overflow)?;
            let (entry, tail): (TensorEntry, &[u8]) =
                postcard::take_from_bytes(rest).map_err(|_| FormatError::HeaderDecode)?;
            rest = tail;
            Self::check_entry(&entry, &canonical, index, body_len)?;
        }
        let table = &table[..table.len() - rest.len()];
        // Version 2 ends the header with the format the model was converted from.
        let source = if version >= 2 {
            let (source, tail): (&'a str, &'a [u8]) =
                postcard::take_from_bytes(rest).map_err(|_| FormatError::HeaderDecode)?;
            if source.len() > MAX_SOURCE_LEN {
                return Err(FormatError::HeaderDecode);
            }
            rest = tail;
            source
        } else {
            ""
        };
        if !rest.is_empty() {
            return Err(FormatError::HeaderTrailingBytes);
        }
        if layout.end > body_len {
            return Err(FormatError::TensorOutOfBounds { index: expected as u32 - 1 });
        }

        let mut views = [KindView { dtype: DType::F32, rows: 0, cols: 0, len: 0 }; 12];
        for kind in TensorKind::ALL {
            let (rows, cols) = config.shape(kind);
            let dtype = dtypes[kind.index()];
            // Every kind in the file was laid out without overflow; a kind the file lacks
            // (a shared classifier) gets a length no slice has.
            let len = dtype.row_bytes(cols).and_then(|rb| rb.checked_mul(rows)).unwrap_or(usize::MAX);
            views[kind.index()] = KindView { dtype, rows, cols, len };
        }

        Ok(Model {
            bytes,
            name: header.name,
            source,
            config,
            dtypes,
            layout,
            views,
            tokenizer,
            table,
            tokenizer_len: tok_end - tok_start,
            crc: stored_crc,
        })
    }

    /// Reads the dtype of each kind from its first table entry; norms must be f32
    /// (attention and FFN norms may be ones), and q4_16 and ones need format version 3.
    fn kind_dtypes(table: &[u8], count: usize, version: u32) -> Result<KindDtypes, FormatError> {
        let mut dtypes = [DType::F32; 12];
        let mut seen = [false; 12];
        let mut rest = table;
        for index in 0..count {
            let (entry, tail): (TensorEntry, &[u8]) =
                postcard::take_from_bytes(rest).map_err(|_| FormatError::HeaderDecode)?;
            rest = tail;
            let k = entry.kind.index();
            // Norms are f32, or (attention and FFN norms, version 3) ones; weights are not ones.
            let allowed = match entry.kind {
                TensorKind::AttnNorm | TensorKind::FfnNorm => matches!(entry.dtype, DType::F32 | DType::Ones),
                TensorKind::FinalNorm => entry.dtype == DType::F32,
                _ => entry.dtype != DType::Ones,
            };
            if !allowed || version < 3 && matches!(entry.dtype, DType::Q4_16 | DType::Ones) {
                return Err(FormatError::TensorDtype { index: index as u32 });
            }
            if !seen[k] {
                seen[k] = true;
                dtypes[k] = entry.dtype;
            }
        }
        Ok(dtypes)
    }

    /// Compares one stored entry with its canonical counterpart, naming the first difference.
    fn check_entry(e: &TensorEntry, c: &TensorEntry, index: u32, body_len: usize) -> Result<(), FormatError> {
        if (e.kind, e.layer) != (c.kind, c.layer) {
            return Err(FormatError::TensorOrder { index });
        }
        if e.dtype != c.dtype {
            return Err(FormatError::TensorDtype { index });
        }
        if (e.rows, e.cols) != (c.rows, c.cols) {
            return Err(FormatError::TensorShape { index });
        }
        if e.length != c.length {
            return Err(FormatError::TensorLength { index });
        }
        if e.offset != c.offset {
            return Err(FormatError::TensorOffset { index });
        }
        let end = e.offset.checked_add(e.length).ok_or(FormatError::Overflow)?;
        if end > body_len as u64 {
            return Err(FormatError::TensorOutOfBounds { index });
        }
        Ok(())
    }

    /// The model's hyper-parameters.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The model name stored in the header.
    pub fn name(&self) -> &'a str {
        self.name
    }

    /// The format the model was converted from: `llama2.c`, `gguf` or
    /// `huggingface` (empty for version 1 files, which do not record it).
    pub fn source(&self) -> &'a str {
        self.source
    }

    /// The tokenizer stored in the file.
    pub fn tokenizer(&self) -> &Tokenizer<'a> {
        &self.tokenizer
    }

    /// The dtype of tensors of `kind`.
    pub fn dtype(&self, kind: TensorKind) -> DType {
        self.dtypes[kind.index()]
    }

    /// Total file length in bytes.
    pub fn file_len(&self) -> usize {
        self.bytes.len()
    }

    /// Byte length of the tokenizer section.
    pub fn tokenizer_len(&self) -> usize {
        self.tokenizer_len
    }

    /// The CRC32 stored in the file.
    pub fn crc32(&self) -> u32 {
        self.crc
    }

    /// The tensor table in file order.
    pub fn tensors(&self) -> impl Iterator<Item = TensorEntry> + 'a {
        let mut rest = self.table;
        core::iter::from_fn(move || {
            let (entry, tail) = postcard::take_from_bytes::<TensorEntry>(rest).ok()?;
            rest = tail;
            Some(entry)
        })
    }

    /// A weight matrix (or a 1-row vector for norms) viewed in place.
    pub fn matrix(&self, kind: TensorKind, layer: usize) -> Result<Matrix<'a>, SessionError> {
        let kind =
            if kind == TensorKind::Classifier && self.config.shared_classifier { TensorKind::Embedding } else { kind };
        let view = self.views.get(kind.index()).ok_or(SessionError::Internal)?;
        let start = self.layout.offset(kind, layer).ok_or(SessionError::Internal)?;
        let data = self.bytes.get(start..).and_then(|b| b.get(..view.len)).ok_or(SessionError::Internal)?;
        Ok(Matrix { dtype: view.dtype, rows: view.rows, cols: view.cols, data })
    }

    /// An f32 norm weight vector (dim) viewed in place.
    pub fn norm(&self, kind: TensorKind, layer: usize) -> Result<&'a [f32], SessionError> {
        let m = self.matrix(kind, layer)?;
        bytemuck::try_cast_slice(m.data).map_err(|_| SessionError::Internal)
    }

    /// Exact arena bytes needed for a session of `ctx_len` positions with a `kv` cache.
    pub fn plan(&self, ctx_len: usize, kv: KvDtype) -> Result<Plan, SessionError> {
        Plan::with_dtypes(&self.config, &self.dtypes, ctx_len, kv)
    }
}

/// The arena plan from a model file's preamble and header alone (`bytes` may be
/// the whole file or any prefix holding the header), for a build script sizing
/// a `static` arena. Checks the preamble and the configuration, not the tensors
/// or the CRC: `Model::parse` still checks everything at run time.
pub fn plan_from_header(bytes: &[u8], ctx_len: usize, kv: KvDtype) -> Result<Plan, PlanError> {
    let (config, dtypes) = header_parts(bytes).map_err(PlanError::Format)?;
    Plan::with_dtypes(&config, &dtypes, ctx_len, kv).map_err(PlanError::Session)
}

/// The configuration from a model file's preamble and header alone (see [`plan_from_header`]).
pub fn config_from_header(bytes: &[u8]) -> Result<Config, FormatError> {
    header_parts(bytes).map(|(config, _)| config)
}

/// The configuration and per-kind weight dtypes from the preamble, header and tensor table.
fn header_parts(bytes: &[u8]) -> Result<(Config, KindDtypes), FormatError> {
    let short = FormatError::TooShort { len: bytes.len() };
    let word = |at| read_u32(bytes, at).ok_or(short);
    if bytes.get(..4) != Some(&MAGIC[..]) {
        return Err(if bytes.len() < 4 { short } else { FormatError::BadMagic });
    }
    let version = word(4)?;
    if !(MIN_VERSION..=VERSION).contains(&version) {
        return Err(FormatError::UnsupportedVersion { found: version, supported: VERSION });
    }
    let header_len = word(8)?;
    let header = (header_len as usize)
        .checked_add(PREAMBLE_LEN)
        .and_then(|end| bytes.get(PREAMBLE_LEN..end))
        .ok_or(FormatError::HeaderOutOfBounds { header_len, file_len: bytes.len() })?;
    let (header, table): (Header<'_>, &[u8]) =
        postcard::take_from_bytes(header).map_err(|_| FormatError::HeaderDecode)?;
    let config = Config::from_header(&header)?;
    let dtypes = Model::kind_dtypes(table, config.tensor_count(), version)?;
    Ok((config, dtypes))
}
