//! GGUF v3 reader (ggml's model format, see ggml `docs/gguf.md`) and the
//! llama-architecture importer built on it.
//!
//! The reader treats every byte as hostile: each count and length is checked
//! against the bytes that remain before anything is allocated from it, so a
//! file of n bytes never makes the reader hold more than O(n) memory (at most
//! one 32-byte [`Value`] per metadata byte, for an array of u8, and at most
//! [`MAX_ARRAY_ELEMENTS`] of them) or O(n log n) time. The classes of the 2024 GGUF advisories (ggml PR #709: string and
//! array lengths, counts, dimensions, types, alignment, offsets) are each
//! refused with their own message (`tests/tests/gguf.rs`); nested arrays are
//! refused outright rather than bounded in depth.
//!
//! Status: the reader and the exact dequantization of F32, F16, BF16, Q8_0,
//! Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K and Q6_K are tested
//! (`tests/tests/gguf.rs`: every tensor of llama.cpp's tiny-random-llama
//! files against the reference statistics). `microlm convert model.gguf`
//! imports architecture `llama` through the config, tensor-name and
//! vocabulary functions below (`tests/tests/gguf_convert.rs`).
//!
//! Tensor names follow llama.cpp (`token_embd`, `blk.N.attn_q`, ...,
//! `output_norm`, `output`); shapes are ggml's `ne = [cols, rows]`. llama.cpp
//! stores q and k rows for adjacent-pair RoPE (its converter undoes the HF
//! `rotate_half` permutation), which is microlm's order: no permutation here.

use std::collections::HashSet;

use anyhow::{bail, ensure, Context, Result};
use microlm::format::{Config, TensorKind};
use microlm::write::Vocab;

/// "GGUF" as the first four bytes.
pub const MAGIC: [u8; 4] = *b"GGUF";
/// Default tensor data alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Largest accepted `general.alignment`.
pub const MAX_ALIGNMENT: u64 = 1 << 16;
/// Most metadata array elements in one file, all arrays together (2^24: a
/// 256k-token vocabulary's tokens, scores, types and merges fit many times).
/// Each element is held as one 32-byte [`Value`], so this bounds the metadata
/// at 512 MiB however large the file is.
pub const MAX_ARRAY_ELEMENTS: u64 = 1 << 24;
/// Most dimensions a GGUF tensor may have (ggml `GGML_MAX_DIMS`).
pub const MAX_DIMS: u32 = 4;

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Types 0..=7 and 10..=12 as signed/unsigned 64-bit integers.
    U(u64),
    /// Signed integer types.
    I(i64),
    /// float32 / float64.
    F(f64),
    /// bool (type 7).
    Bool(bool),
    /// UTF-8 string (type 8), kept as bytes.
    Str(Vec<u8>),
    /// Array (type 9) of one non-array element type.
    Array(Vec<Value>),
}

impl Value {
    fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U(v) => Some(v),
            Value::I(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }
    fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F(v) => Some(v),
            Value::U(v) => Some(v as f64),
            Value::I(v) => Some(v as f64),
            _ => None,
        }
    }
}

/// ggml tensor types this reader knows (id, name, values per block, bytes per block).
const TYPES: [(u32, &str, usize, usize); 13] = [
    (0, "F32", 1, 4),
    (1, "F16", 1, 2),
    (2, "Q4_0", 32, 18),
    (3, "Q4_1", 32, 20),
    (6, "Q5_0", 32, 22),
    (7, "Q5_1", 32, 24),
    (8, "Q8_0", 32, 34),
    (9, "Q8_1", 32, 36),
    (10, "Q2_K", 256, 84),
    (11, "Q3_K", 256, 110),
    (12, "Q4_K", 256, 144),
    (13, "Q5_K", 256, 176),
    (14, "Q6_K", 256, 210),
];
/// BF16 (id 30).
const BF16: (u32, &str, usize, usize) = (30, "BF16", 1, 2);

fn type_info(id: u32) -> Option<(u32, &'static str, usize, usize)> {
    TYPES.iter().copied().chain([BF16]).find(|t| t.0 == id)
}

/// One tensor's description and where its bytes lie in the file.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    /// GGUF tensor name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// ggml shape, fastest-varying dimension first (`ne[0]` = row length).
    pub dims: Vec<u64>,
    /// ggml type id.
    pub ty: u32,
    /// ggml type name.
    pub type_name: &'static str,
    /// Absolute byte range of the data in the file.
    pub start: usize,
    /// Bytes of data.
    pub len: usize,
}

impl TensorInfo {
    /// Number of values.
    pub fn n_values(&self) -> usize {
        self.dims.iter().product::<u64>() as usize
    }
}

/// A parsed GGUF file: metadata and tensor table, data left in the caller's bytes.
#[derive(Debug)]
pub struct Gguf<'a> {
    /// File version (2 or 3).
    pub version: u32,
    /// Metadata in file order.
    pub kv: Vec<(String, Value)>,
    /// Tensors in file order.
    pub tensors: Vec<TensorInfo>,
    /// Alignment used for the data section.
    pub alignment: u64,
    /// Start of the tensor data section.
    pub data_offset: usize,
    bytes: &'a [u8],
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
    /// Array elements read so far.
    elements: u64,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.b.len() - self.at
    }
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        ensure!(n <= self.remaining(), "GGUF: {what} needs {n} bytes at offset {}, the file ends first", self.at);
        let s = &self.b[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }
    fn u8(&mut self, w: &str) -> Result<u8> {
        Ok(self.take(1, w)?[0])
    }
    fn u32(&mut self, w: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4, w)?.try_into()?))
    }
    fn u64(&mut self, w: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8, w)?.try_into()?))
    }
    /// A length-prefixed string; the length is checked against the file before use.
    fn string(&mut self, what: &str) -> Result<&'a [u8]> {
        let len = self.u64(what)?;
        ensure!(
            len <= self.remaining() as u64,
            "GGUF: {what} string length {len} exceeds the {} bytes left in the file",
            self.remaining()
        );
        self.take(len as usize, what)
    }
    fn scalar(&mut self, ty: u32, what: &str) -> Result<Value> {
        Ok(match ty {
            0 => Value::U(u64::from(self.u8(what)?)),
            1 => Value::I(i64::from(self.u8(what)? as i8)),
            2 => Value::U(u64::from(u16::from_le_bytes(self.take(2, what)?.try_into()?))),
            3 => Value::I(i64::from(i16::from_le_bytes(self.take(2, what)?.try_into()?))),
            4 => Value::U(u64::from(self.u32(what)?)),
            5 => Value::I(i64::from(self.u32(what)? as i32)),
            6 => Value::F(f64::from(f32::from_le_bytes(self.take(4, what)?.try_into()?))),
            7 => match self.u8(what)? {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                v => bail!("GGUF: {what}: bool value {v} is neither 0 nor 1"),
            },
            8 => Value::Str(self.string(what)?.to_vec()),
            10 => Value::U(self.u64(what)?),
            11 => Value::I(self.u64(what)? as i64),
            12 => Value::F(f64::from_le_bytes(self.take(8, what)?.try_into()?)),
            9 => bail!("GGUF: {what}: nested arrays (an array of arrays) are refused"),
            t => bail!("GGUF: {what}: unknown metadata value type {t}"),
        })
    }
    fn value(&mut self, ty: u32, what: &str) -> Result<Value> {
        if ty != 9 {
            return self.scalar(ty, what);
        }
        let elem = self.u32(what)?;
        let n = self.u64(what)?;
        // Smallest encoding of one element: 1 byte (u8/i8/bool), 8 (string length).
        let min = match elem {
            0 | 1 | 7 => 1u64,
            2 | 3 => 2,
            4..=6 => 4,
            8 | 10..=12 => 8,
            9 => bail!("GGUF: {what}: nested arrays (an array of arrays) are refused"),
            t => bail!("GGUF: {what}: unknown array element type {t}"),
        };
        ensure!(
            n.checked_mul(min).is_some_and(|b| b <= self.remaining() as u64),
            "GGUF: {what}: array of {n} elements cannot fit in the {} bytes left in the file",
            self.remaining()
        );
        self.elements += n;
        ensure!(
            self.elements <= MAX_ARRAY_ELEMENTS,
            "GGUF: {what}: metadata arrays hold more than {MAX_ARRAY_ELEMENTS} elements in total"
        );
        let mut out = Vec::with_capacity(n as usize);
        for _ in 0..n {
            out.push(self.scalar(elem, what)?);
        }
        Ok(Value::Array(out))
    }
}

/// Parses a GGUF v2/v3 header, metadata and tensor table and checks every tensor's data range.
pub fn parse(bytes: &[u8]) -> Result<Gguf<'_>> {
    let mut r = Reader { b: bytes, at: 0, elements: 0 };
    ensure!(r.take(4, "magic")? == MAGIC, "not a GGUF file (magic is not \"GGUF\")");
    let version = r.u32("version")?;
    ensure!(version == 2 || version == 3, "GGUF version {version} is not supported (2 and 3 are)");
    let n_tensors = r.u64("tensor count")?;
    let n_kv = r.u64("metadata count")?;
    // Each KV needs at least 8 (key length) + 4 (type) + 1 bytes; each tensor info at least 8 + 4 + 4 + 8.
    ensure!(
        n_kv.checked_mul(13).is_some_and(|b| b <= r.remaining() as u64),
        "GGUF: metadata count {n_kv} cannot fit in a {}-byte file",
        bytes.len()
    );
    ensure!(
        n_tensors.checked_mul(24).is_some_and(|b| b <= r.remaining() as u64),
        "GGUF: tensor count {n_tensors} cannot fit in a {}-byte file",
        bytes.len()
    );
    let mut kv: Vec<(String, Value)> = Vec::with_capacity(n_kv as usize);
    let mut keys: HashSet<&[u8]> = HashSet::with_capacity(n_kv as usize);
    for i in 0..n_kv {
        let raw_key = r.string("metadata key")?;
        ensure!(!raw_key.is_empty(), "GGUF: metadata key {i} is empty");
        let key =
            String::from_utf8(raw_key.to_vec()).with_context(|| format!("GGUF: metadata key {i} is not UTF-8"))?;
        // Keys and names are shown escaped: a newline in one must not split the one-line error.
        let shown = key.escape_debug().to_string();
        ensure!(keys.insert(raw_key), "GGUF: duplicate metadata key {shown}");
        let ty = r.u32("metadata type")?;
        // The spec types general.alignment as uint32 (type 4), as ggml requires.
        ensure!(
            key != "general.alignment" || ty == 4,
            "GGUF: general.alignment has value type {ty}, the spec requires uint32 (type 4)"
        );
        let v = r.value(ty, &shown)?;
        kv.push((key, v));
    }
    let alignment = match kv.iter().find(|(k, _)| k == "general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some((_, v)) => {
            let a = v.as_u64().context("GGUF: general.alignment is not an integer")?;
            ensure!(
                a != 0 && a.is_power_of_two() && a <= MAX_ALIGNMENT,
                "GGUF: general.alignment {a} must be a power of two in 1..={MAX_ALIGNMENT}"
            );
            a
        }
    };
    let mut raw = Vec::with_capacity(n_tensors as usize);
    let mut names: HashSet<&[u8]> = HashSet::with_capacity(n_tensors as usize);
    for i in 0..n_tensors {
        let raw_name = r.string("tensor name")?;
        let name =
            String::from_utf8(raw_name.to_vec()).with_context(|| format!("GGUF: tensor name {i} is not UTF-8"))?;
        let shown = name.escape_debug().to_string();
        ensure!(names.insert(raw_name), "GGUF: duplicate tensor name {shown}");
        let nd = r.u32("tensor dimensions")?;
        ensure!((1..=MAX_DIMS).contains(&nd), "GGUF: tensor {shown} has {nd} dimensions (1..={MAX_DIMS} allowed)");
        let mut dims = Vec::with_capacity(nd as usize);
        for _ in 0..nd {
            dims.push(r.u64("tensor dimension")?);
        }
        let ty = r.u32("tensor type")?;
        let offset = r.u64("tensor offset")?;
        raw.push((name, dims, ty, offset));
    }
    let data_offset = (r.at as u64).div_ceil(alignment) * alignment;
    let mut tensors: Vec<TensorInfo> = Vec::with_capacity(raw.len());
    for (name, dims, ty, offset) in raw {
        let shown = name.escape_debug().to_string();
        let (_, type_name, blck, bsize) =
            type_info(ty).with_context(|| format!("GGUF: tensor {shown} has unknown type id {ty}"))?;
        let mut n: u64 = 1;
        for &d in &dims {
            ensure!(d > 0, "GGUF: tensor {shown} has a zero dimension {dims:?}");
            n = n.checked_mul(d).with_context(|| format!("GGUF: tensor {shown}: dimensions {dims:?} overflow"))?;
        }
        ensure!(n <= bytes.len() as u64 * 8, "GGUF: tensor {shown}: {n} values cannot be stored in this file");
        ensure!(
            dims[0] % blck as u64 == 0,
            "GGUF: tensor {shown}: row length {} is not a multiple of the {type_name} block size {blck}",
            dims[0]
        );
        let len = n / blck as u64 * bsize as u64;
        ensure!(offset % alignment == 0, "GGUF: tensor {shown}: offset {offset} is not aligned to {alignment}");
        let file = bytes.len() as u64;
        let start = data_offset.checked_add(offset).filter(|&s| s <= file).with_context(|| {
            format!("GGUF: tensor {shown}: data offset {offset} lies past the end of the {file}-byte file")
        })?;
        ensure!(
            len <= file - start,
            "GGUF: tensor {shown}: {len} bytes of data at offset {offset} run past the end of the {file}-byte file"
        );
        tensors.push(TensorInfo { name, dims, ty, type_name, start: start as usize, len: len as usize });
    }
    // Overlaps, by start: each range must end before the next one begins.
    let mut by_start: Vec<&TensorInfo> = tensors.iter().collect();
    by_start.sort_by_key(|t| t.start);
    for w in by_start.windows(2) {
        ensure!(
            w[0].start + w[0].len <= w[1].start,
            "GGUF: tensors {} (bytes {}..{}) and {} (from byte {}) overlap",
            w[0].name.escape_debug(),
            w[0].start,
            w[0].start + w[0].len,
            w[1].name.escape_debug(),
            w[1].start
        );
    }
    Ok(Gguf { version, kv, tensors, alignment, data_offset: data_offset as usize, bytes })
}

impl<'a> Gguf<'a> {
    /// A metadata value by key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.kv.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
    fn req_u64(&self, key: &str) -> Result<u64> {
        self.get(key)
            .with_context(|| format!("GGUF: metadata {key} is missing"))?
            .as_u64()
            .with_context(|| format!("GGUF: metadata {key} is not a non-negative integer"))
    }
    fn str(&self, key: &str) -> Result<String> {
        match self.get(key) {
            Some(Value::Str(s)) => Ok(String::from_utf8_lossy(s).into_owned()),
            Some(_) => bail!("GGUF: metadata {key} is not a string"),
            None => bail!("GGUF: metadata {key} is missing"),
        }
    }
    /// A tensor by name.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }
    /// The raw bytes of a tensor.
    pub fn data(&self, t: &TensorInfo) -> &'a [u8] {
        &self.bytes[t.start..t.start + t.len]
    }
}

/// ggml's reference dequantization of `bytes` (type `ty`, `n` values).
///
/// Errors: an unknown type id, or `bytes` not exactly `n` values of the type
/// (checked before anything is allocated).
pub fn dequantize(ty: u32, bytes: &[u8], n: usize) -> Result<Vec<f32>> {
    let (_, name, blck, bsize) = type_info(ty).with_context(|| format!("GGUF: unknown tensor type id {ty}"))?;
    ensure!(
        n.is_multiple_of(blck) && (n / blck).checked_mul(bsize) == Some(bytes.len()),
        "GGUF: {} bytes of {name} do not hold {n} values ({bsize} bytes per {blck})",
        bytes.len()
    );
    let h = |b: &[u8], i: usize| half::f16::from_le_bytes([b[i], b[i + 1]]).to_f32();
    let mut out = Vec::with_capacity(n);
    match ty {
        0 => out.extend(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))),
        1 => out.extend(bytes.chunks_exact(2).map(|c| h(c, 0))),
        30 => {
            out.extend(bytes.chunks_exact(2).map(|c| f32::from_bits(u32::from(u16::from_le_bytes([c[0], c[1]])) << 16)))
        }
        2 => {
            for b in bytes.chunks_exact(18) {
                let d = h(b, 0);
                let q = &b[2..];
                out.extend((0..16).map(|j| f32::from(q[j] as i8 & 0x0f) - 8.0).map(|v| v * d));
                out.extend((0..16).map(|j| f32::from((q[j] >> 4) as i8) - 8.0).map(|v| v * d));
            }
        }
        3 => {
            for b in bytes.chunks_exact(20) {
                let (d, m) = (h(b, 0), h(b, 2));
                let q = &b[4..];
                out.extend((0..16).map(|j| f32::from(q[j] & 0x0f) * d + m));
                out.extend((0..16).map(|j| f32::from(q[j] >> 4) * d + m));
            }
        }
        6 | 7 => {
            let (bs, off) = if ty == 6 { (22, 2) } else { (24, 4) };
            for b in bytes.chunks_exact(bs) {
                let d = h(b, 0);
                let m = if ty == 7 { h(b, 2) } else { 0.0 };
                let qh = u32::from_le_bytes(b[off..off + 4].try_into()?);
                let q = &b[off + 4..];
                let sub = if ty == 6 { 16.0 } else { 0.0 };
                let v = |j: usize, hi: bool| {
                    let (lo, bit) =
                        if hi { (q[j] >> 4, (qh >> (j + 12)) & 0x10) } else { (q[j] & 0x0f, ((qh >> j) << 4) & 0x10) };
                    (f32::from(lo | bit as u8) - sub) * d + m
                };
                out.extend((0..16).map(|j| v(j, false)));
                out.extend((0..16).map(|j| v(j, true)));
            }
        }
        8 => {
            for b in bytes.chunks_exact(34) {
                let d = h(b, 0);
                out.extend(b[2..].iter().map(|&q| f32::from(q as i8) * d));
            }
        }
        12 | 13 => {
            let bs = if ty == 12 { 144 } else { 176 };
            for b in bytes.chunks_exact(bs) {
                let (d, dmin) = (h(b, 0), h(b, 2));
                let scales = &b[4..16];
                let (qh, qs) = if ty == 13 { (&b[16..48], &b[48..]) } else { (&b[0..0], &b[16..]) };
                let sm = |j: usize| -> (u8, u8) {
                    if j < 4 {
                        (scales[j] & 63, scales[j + 4] & 63)
                    } else {
                        (
                            (scales[j + 4] & 0xf) | ((scales[j - 4] >> 6) << 4),
                            (scales[j + 4] >> 4) | ((scales[j] >> 6) << 4),
                        )
                    }
                };
                for g in 0..4 {
                    let q = &qs[g * 32..g * 32 + 32];
                    for half in 0..2 {
                        let (sc, m) = sm(2 * g + half);
                        let (d1, m1) = (d * f32::from(sc), dmin * f32::from(m));
                        for l in 0..32 {
                            let mut v = if half == 0 { q[l] & 0xf } else { q[l] >> 4 };
                            if ty == 13 && qh[l] & (1 << (2 * g + half)) != 0 {
                                v += 16;
                            }
                            out.push(d1 * f32::from(v) - m1);
                        }
                    }
                }
            }
        }
        14 => {
            for b in bytes.chunks_exact(210) {
                let (ql, qh, sc) = (&b[0..128], &b[128..192], &b[192..208]);
                let d = h(b, 208);
                let mut y = [0f32; 256];
                for n in 0..2 {
                    let (ql, qh, sc, y) = (&ql[n * 64..], &qh[n * 32..], &sc[n * 8..], &mut y[n * 128..]);
                    for l in 0..32 {
                        let is = l / 16;
                        let q1 = i32::from((ql[l] & 0xf) | ((qh[l] & 3) << 4)) - 32;
                        let q2 = i32::from((ql[l + 32] & 0xf) | (((qh[l] >> 2) & 3) << 4)) - 32;
                        let q3 = i32::from((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                        let q4 = i32::from((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                        y[l] = d * f32::from(sc[is] as i8) * q1 as f32;
                        y[l + 32] = d * f32::from(sc[is + 2] as i8) * q2 as f32;
                        y[l + 64] = d * f32::from(sc[is + 4] as i8) * q3 as f32;
                        y[l + 96] = d * f32::from(sc[is + 6] as i8) * q4 as f32;
                    }
                }
                out.extend_from_slice(&y);
            }
        }
        _ => bail!("GGUF: tensor type {name} cannot be imported"),
    }
    ensure!(out.len() == n, "GGUF: dequantized {} values, expected {n}", out.len());
    Ok(out)
}

/// GGUF tensor name of microlm tensor `kind` in `layer`.
pub fn tensor_name(kind: TensorKind, layer: usize) -> String {
    let blk = |s: &str| format!("blk.{layer}.{s}.weight");
    match kind {
        TensorKind::Embedding => "token_embd.weight".into(),
        TensorKind::AttnNorm => blk("attn_norm"),
        TensorKind::Wq => blk("attn_q"),
        TensorKind::Wk => blk("attn_k"),
        TensorKind::Wv => blk("attn_v"),
        TensorKind::Wo => blk("attn_output"),
        TensorKind::FfnNorm => blk("ffn_norm"),
        TensorKind::W1 => blk("ffn_gate"),
        TensorKind::W2 => blk("ffn_down"),
        TensorKind::W3 => blk("ffn_up"),
        TensorKind::FinalNorm => "output_norm.weight".into(),
        TensorKind::Classifier => "output.weight".into(),
    }
}

/// The model configuration from `llama.*` metadata; `output.weight` absent = tied classifier.
pub fn llama_config(g: &Gguf<'_>) -> Result<Config> {
    let arch = g.str("general.architecture")?;
    ensure!(arch == "llama", "GGUF architecture {arch} is not supported (llama is)");
    let u = |k: &str| -> Result<usize> {
        let v = g.req_u64(&format!("llama.{k}"))?;
        ensure!((1..=1 << 24).contains(&v), "GGUF: llama.{k} = {v} is out of range");
        Ok(v as usize)
    };
    let tokens = match g.get("tokenizer.ggml.tokens") {
        Some(Value::Array(a)) => a.len(),
        _ => bail!("GGUF: tokenizer.ggml.tokens is missing or not an array"),
    };
    let f = |k: &str, d: f64| -> Result<f64> {
        match g.get(k) {
            None => Ok(d),
            Some(v) => v.as_f64().with_context(|| format!("GGUF: {k} is not a number")),
        }
    };
    let id = |k: &str, d: u64| -> Result<u32> {
        let v = match g.get(k) {
            None => d,
            Some(v) => v.as_u64().with_context(|| format!("GGUF: {k} is not an integer"))?,
        };
        ensure!(v < tokens as u64, "GGUF: {k} = {v} is outside the vocabulary of {tokens}");
        Ok(v as u32)
    };
    let n_heads = u("attention.head_count")?;
    let cfg = Config {
        dim: u("embedding_length")?,
        hidden_dim: u("feed_forward_length")?,
        n_layers: u("block_count")?,
        n_heads,
        n_kv_heads: g.get("llama.attention.head_count_kv").map_or(Ok(n_heads), |_| u("attention.head_count_kv"))?,
        vocab_size: tokens,
        seq_len: u("context_length")?,
        norm_eps: f("llama.attention.layer_norm_rms_epsilon", 1e-5)? as f32,
        rope_theta: f("llama.rope.freq_base", 10000.0)? as f32,
        bos_id: id("tokenizer.ggml.bos_token_id", 1)?,
        eos_id: id("tokenizer.ggml.eos_token_id", 2)?,
        shared_classifier: g.tensor("output.weight").is_none(),
    };
    ensure!(
        cfg.dim.is_multiple_of(cfg.n_heads) && cfg.n_heads.is_multiple_of(cfg.n_kv_heads),
        "GGUF: head_count {} must divide embedding_length {} and head_count_kv {} must divide head_count",
        cfg.n_heads,
        cfg.dim,
        cfg.n_kv_heads
    );
    ensure!(cfg.norm_eps.is_finite() && cfg.norm_eps > 0.0, "GGUF: rms epsilon {} must be positive", cfg.norm_eps);
    ensure!(
        cfg.rope_theta.is_finite() && cfg.rope_theta > 0.0,
        "GGUF: rope.freq_base {} must be positive",
        cfg.rope_theta
    );
    if let Some(v) = g.get("llama.rope.dimension_count") {
        let rd = v.as_u64().context("GGUF: llama.rope.dimension_count is not an integer")?;
        ensure!(
            rd == cfg.head_size() as u64,
            "GGUF: partial RoPE (dimension_count {rd} of head size {}) is not supported",
            cfg.head_size()
        );
    }
    if let Some(v) = g.get("llama.rope.scaling.type") {
        ensure!(*v == Value::Str(b"none".to_vec()), "GGUF: RoPE scaling is not supported");
    }
    Ok(cfg)
}

/// Vocabulary parts of a `gpt2` (byte-level BPE) tokenizer, for a BPE-capable runtime.
#[derive(Debug)]
pub struct Gpt2Vocab {
    /// Token strings (byte-level, GPT-2's byte-to-unicode mapping).
    pub tokens: Vec<Vec<u8>>,
    /// Merge rules `"a b"`, highest priority first.
    pub merges: Vec<Vec<u8>>,
    /// ggml token types (1 normal, 3 control, ...), empty when absent.
    pub token_types: Vec<i64>,
    /// `tokenizer.ggml.pre`, e.g. `smollm`, empty when absent.
    pub pre: String,
}

fn str_array(g: &Gguf<'_>, key: &str) -> Result<Vec<Vec<u8>>> {
    match g.get(key) {
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| match v {
                Value::Str(s) => Ok(s.clone()),
                _ => bail!("GGUF: {key} holds a non-string"),
            })
            .collect(),
        _ => bail!("GGUF: {key} is missing or not an array"),
    }
}

/// Extracts a `gpt2` tokenizer's tokens, merges, token types and pre-tokenizer name.
pub fn gpt2_vocab(g: &Gguf<'_>) -> Result<Gpt2Vocab> {
    let token_types = match g.get("tokenizer.ggml.token_type") {
        Some(Value::Array(a)) => a.iter().map(|v| v.as_f64().map_or(0, |f| f as i64)).collect(),
        _ => Vec::new(),
    };
    Ok(Gpt2Vocab {
        tokens: str_array(g, "tokenizer.ggml.tokens")?,
        merges: str_array(g, "tokenizer.ggml.merges")?,
        token_types,
        pre: g.str("tokenizer.ggml.pre").unwrap_or_default(),
    })
}

/// A `llama` (SentencePiece) tokenizer as microlm pieces: U+2581 becomes a space
/// (llama2.c's tokenizer.bin convention), `<0xNN>` byte pieces stay as written.
pub fn llama_vocab(g: &Gguf<'_>) -> Result<Vocab> {
    let model = g.str("tokenizer.ggml.model")?;
    match model.as_str() {
        "llama" => {}
        "gpt2" => bail!("tokenizer gpt2 is not supported yet"),
        m => bail!("GGUF tokenizer {m} is not supported (llama is)"),
    }
    if let Some(Value::Bool(false)) = g.get("tokenizer.ggml.add_bos_token") {
        bail!("GGUF: tokenizer.ggml.add_bos_token is false; microlm always starts with BOS");
    }
    let tokens = str_array(g, "tokenizer.ggml.tokens")?;
    let scores: Vec<f32> = match g.get("tokenizer.ggml.scores") {
        Some(Value::Array(a)) => a.iter().map(|v| v.as_f64().unwrap_or(f64::NAN) as f32).collect(),
        _ => bail!("GGUF: tokenizer.ggml.scores is missing"),
    };
    ensure!(scores.len() == tokens.len(), "GGUF: {} scores for {} tokens", scores.len(), tokens.len());
    if let Some(i) = scores.iter().position(|s| !s.is_finite()) {
        bail!("GGUF: token {i} has a non-finite score");
    }
    let mut vocab = Vocab::default();
    for (i, t) in tokens.into_iter().enumerate() {
        let s = String::from_utf8(t).with_context(|| format!("GGUF: token {i} is not UTF-8"))?;
        let p = s.replace('\u{2581}', " ").into_bytes();
        ensure!(!p.is_empty(), "GGUF: token {i} is empty");
        vocab.pieces.push(p);
    }
    vocab.scores = scores;
    Ok(vocab)
}

/// The values of microlm tensor `kind` in `layer`, dequantized exactly, after
/// checking that the GGUF tensor has microlm's `rows` × `cols` shape
/// (ggml `ne = [cols, rows]`; `[cols]` for a norm vector).
pub fn tensor_values(g: &Gguf<'_>, kind: TensorKind, layer: usize, rows: usize, cols: usize) -> Result<Vec<f32>> {
    let t = shaped_tensor(g, kind, layer, rows, cols)?;
    dequantize(t.ty, g.data(t), t.n_values()).with_context(|| format!("GGUF: tensor {}", t.name))
}

/// The raw ggml blocks of microlm tensor `kind` in `layer` when the file
/// stores it as ggml type `ty` (and with the expected shape): Q8_0 and Q4_0
/// blocks are byte-identical to microlm's, so they are copied as they are.
pub fn tensor_blocks<'a>(
    g: &Gguf<'a>,
    kind: TensorKind,
    layer: usize,
    rows: usize,
    cols: usize,
    ty: u32,
) -> Option<&'a [u8]> {
    let t = shaped_tensor(g, kind, layer, rows, cols).ok()?;
    (t.ty == ty).then(|| g.data(t))
}

fn shaped_tensor<'g>(
    g: &'g Gguf<'_>,
    kind: TensorKind,
    layer: usize,
    rows: usize,
    cols: usize,
) -> Result<&'g TensorInfo> {
    let name = tensor_name(kind, layer);
    let t = g.tensor(&name).with_context(|| format!("GGUF: tensor {name} is missing"))?;
    let want: Vec<u64> = if kind.is_norm() { vec![cols as u64] } else { vec![cols as u64, rows as u64] };
    // Trailing dimensions of 1 are the same shape.
    let mut dims = t.dims.clone();
    while dims.len() > want.len() && dims.last() == Some(&1) {
        dims.pop();
    }
    ensure!(dims == want, "GGUF: tensor {name} has shape {:?}, the config needs {want:?}", t.dims);
    Ok(t)
}

/// ggml type ids of the types whose blocks microlm stores as they are.
pub const TYPE_F32: u32 = 0;
/// ggml `GGML_TYPE_Q4_0`.
pub const TYPE_Q4_0: u32 = 2;
/// ggml `GGML_TYPE_Q8_0`.
pub const TYPE_Q8_0: u32 = 8;

/// Checks that every tensor of the file is one the llama architecture uses:
/// a tensor microlm would ignore (e.g. `rope_freqs.weight`, llama 3's RoPE
/// scaling factors) changes the model, so it is refused by name.
pub fn check_llama_tensors(g: &Gguf<'_>, cfg: &Config) -> Result<()> {
    let mut known = std::collections::HashSet::new();
    for kind in TensorKind::ALL {
        if kind.is_per_layer() {
            for l in 0..cfg.n_layers {
                known.insert(tensor_name(kind, l));
            }
        } else {
            known.insert(tensor_name(kind, 0));
        }
    }
    for t in &g.tensors {
        ensure!(
            known.contains(&t.name),
            "GGUF: tensor {} is not part of a llama model microlm can run (unsupported feature)",
            t.name
        );
    }
    Ok(())
}

/// The most common ggml type among the weight matrices (not the norms), by
/// value count: what the file was quantized to.
pub fn dominant_type(g: &Gguf<'_>) -> Option<&'static str> {
    let mut counts: Vec<(&'static str, usize)> = Vec::new();
    for t in g.tensors.iter().filter(|t| t.dims.iter().filter(|&&d| d > 1).count() >= 2) {
        match counts.iter_mut().find(|(n, _)| *n == t.type_name) {
            Some(c) => c.1 += t.n_values(),
            None => counts.push((t.type_name, t.n_values())),
        }
    }
    counts.into_iter().max_by_key(|c| c.1).map(|c| c.0)
}

/// A `gpt2` tokenizer as a microlm byte-level BPE vocabulary (`microlm::write::BpeVocab`):
/// pieces, merges and types from [`gpt2_vocab`], `tokenizer.ggml.add_bos_token`
/// (absent: false, as llama.cpp's BPE default) and the optional unknown, padding and
/// end-of-turn ids. An unknown pre-tokenizer name is an error.
pub fn gpt2_bpe_vocab(g: &Gguf<'_>) -> Result<microlm::write::BpeVocab> {
    let model = g.str("tokenizer.ggml.model")?;
    ensure!(model == "gpt2", "GGUF tokenizer {model} is not a byte-level BPE (gpt2) tokenizer");
    let v = gpt2_vocab(g)?;
    let add_bos = matches!(g.get("tokenizer.ggml.add_bos_token"), Some(Value::Bool(true)));
    let mut bpe = microlm::write::BpeVocab::from_gpt2(&v.tokens, &v.merges, &v.token_types, &v.pre, add_bos)
        .map_err(|e| anyhow::anyhow!("GGUF: {e}"))?;
    let n = bpe.pieces.len() as u64;
    let id = |key: &str| -> Result<Option<u32>> {
        match g.get(key) {
            None => Ok(None),
            Some(v) => {
                let id = v.as_u64().with_context(|| format!("GGUF: {key} is not an integer"))?;
                ensure!(id < n, "GGUF: {key} {id} is out of range for {n} tokens");
                Ok(Some(id as u32))
            }
        }
    };
    bpe.unk_id = id("tokenizer.ggml.unknown_token_id")?;
    bpe.pad_id = id("tokenizer.ggml.padding_token_id")?;
    bpe.eot_id = id("tokenizer.ggml.eot_token_id")?;
    Ok(bpe)
}
