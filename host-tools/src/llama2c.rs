//! Importers for llama2.c checkpoints (legacy version 0, version 1 float and
//! version 2 int8 exports) and its `tokenizer.bin` vocabulary format.

use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use microlm::format::{Config, TensorKind};
use microlm::write::Vocab;

/// Magic of versioned llama2.c exports: "ak42" as a little-endian u32.
pub const MAGIC: u32 = 0x616b_3432;
/// Size of the header of versioned exports.
const VERSIONED_HEADER: usize = 256;

/// A checkpoint's configuration and f32 tensors, keyed by kind and layer.
#[derive(Debug)]
pub struct Checkpoint {
    /// Hyper-parameters (llama2.c defaults for eps, RoPE base, BOS/EOS).
    pub config: Config,
    /// Format version found in the file (0 = legacy).
    pub version: u32,
    tensors: Vec<(TensorKind, usize, Vec<f32>)>,
    /// Version 2 only: the int8 values and group scales each weight matrix was stored as.
    int8: Vec<(TensorKind, usize, Int8Tensor)>,
}

/// A tensor as llama2.c `runq.c` stores it: int8 values, one f32 scale per
/// group of `group_size` consecutive values of the flattened tensor.
#[derive(Debug)]
pub struct Int8Tensor {
    /// Quantized values (rows × cols, row-major).
    pub q: Vec<i8>,
    /// Scales, one per group: value i = `q[i] × scales[i / group_size]`.
    pub scales: Vec<f32>,
    /// Values per group.
    pub group_size: usize,
}

impl Int8Tensor {
    /// The f32 values the file stands for.
    pub fn dequantize(&self) -> Vec<f32> {
        self.q.iter().enumerate().map(|(i, &q)| f32::from(q) * self.scales[i / self.group_size]).collect()
    }
}

impl Checkpoint {
    /// For version 2 files: tensor `kind` in `layer` as stored (int8 + group scales).
    pub fn int8(&self, kind: TensorKind, layer: usize) -> Option<&Int8Tensor> {
        let kind =
            if kind == TensorKind::Classifier && self.config.shared_classifier { TensorKind::Embedding } else { kind };
        self.int8.iter().find(|(k, l, _)| *k == kind && *l == layer).map(|(_, _, t)| t)
    }

    /// The f32 values of tensor `kind` in `layer` (layer 0 outside the layers).
    pub fn tensor(&self, kind: TensorKind, layer: usize) -> Option<&[f32]> {
        let kind =
            if kind == TensorKind::Classifier && self.config.shared_classifier { TensorKind::Embedding } else { kind };
        self.tensors.iter().find(|(k, l, _)| *k == kind && *l == layer).map(|(_, _, v)| v.as_slice())
    }
}

fn i32_at(bytes: &[u8], at: usize) -> Result<i32> {
    let b = bytes.get(at..at + 4).context("file too short for its header")?;
    Ok(i32::from_le_bytes(b.try_into()?))
}

/// Reads the 7 header integers and checks they describe a model this runtime can hold.
fn read_dims(bytes: &[u8], at: usize) -> Result<[i32; 7]> {
    let mut d = [0i32; 7];
    for (i, v) in d.iter_mut().enumerate() {
        *v = i32_at(bytes, at + 4 * i)?;
    }
    Ok(d)
}

fn config_from(d: [i32; 7], shared: bool) -> Result<Config> {
    let names = ["dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"];
    let mut u = [0usize; 7];
    for i in 0..7 {
        let v = if i == 5 { i64::from(d[i].unsigned_abs()) } else { i64::from(d[i]) };
        ensure!(v > 0 && v <= 1 << 24, "llama2.c header: {} = {} is out of range", names[i], d[i]);
        u[i] = v as usize;
    }
    let cfg = Config {
        dim: u[0],
        hidden_dim: u[1],
        n_layers: u[2],
        n_heads: u[3],
        n_kv_heads: u[4],
        vocab_size: u[5],
        seq_len: u[6],
        norm_eps: 1e-5,
        rope_theta: 10000.0,
        bos_id: 1,
        eos_id: 2,
        shared_classifier: shared,
    };
    ensure!(
        cfg.dim.is_multiple_of(cfg.n_heads) && cfg.n_heads.is_multiple_of(cfg.n_kv_heads),
        "llama2.c header: n_heads {} must divide dim {} and n_kv_heads {} must divide n_heads",
        cfg.n_heads,
        cfg.dim,
        cfg.n_kv_heads
    );
    Ok(cfg)
}

/// Sequential f32 reader over the weight area with exact size accounting.
struct Floats<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Floats<'_> {
    fn take(&mut self, n: usize, what: &str) -> Result<Vec<f32>> {
        let len = n.checked_mul(4).context("tensor size overflows")?;
        let end = self.at.checked_add(len).context("tensor size overflows")?;
        let Some(b) = self.bytes.get(self.at..end) else {
            bail!("checkpoint is truncated: {what} needs bytes {}..{end}, the file has {}", self.at, self.bytes.len());
        };
        self.at = end;
        Ok(b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
    }

    /// `n` int8 values followed by `n / group_size` f32 scales (llama2.c `quantize_q80` output).
    fn take_int8(&mut self, n: usize, group_size: usize, what: &str) -> Result<Int8Tensor> {
        ensure!(
            n.is_multiple_of(group_size),
            "version 2 checkpoint: {what} has {n} values, not a multiple of the group size {group_size}"
        );
        let end = self.at.checked_add(n).context("tensor size overflows")?;
        let Some(b) = self.bytes.get(self.at..end) else {
            bail!("checkpoint is truncated: {what} needs bytes {}..{end}, the file has {}", self.at, self.bytes.len());
        };
        let q = b.iter().map(|&v| v as i8).collect();
        self.at = end;
        let scales = self.take(n / group_size, what)?;
        if let Some(bad) = scales.iter().position(|s| !s.is_finite()) {
            bail!("version 2 checkpoint: {what} has a non-finite scale at group {bad}");
        }
        Ok(Int8Tensor { q, scales, group_size })
    }
}

/// Parses the rest of a version 2 (int8, `runq.c`) export after its header:
/// f32 norms (all attention norms, all FFN norms, the final norm), then each
/// weight matrix as int8 values followed by its f32 group scales, in the order
/// embedding, wq, wk, wv, wo, w1, w2, w3 (each over all layers), classifier.
fn read_version2(c: &Config, group_size: usize, r: &mut Floats<'_>) -> Result<Checkpoint> {
    let mut tensors = Vec::new();
    let mut int8 = Vec::new();
    for kind in [TensorKind::AttnNorm, TensorKind::FfnNorm] {
        for l in 0..c.n_layers {
            tensors.push((kind, l, r.take(c.dim, kind.name())?));
        }
    }
    tensors.push((TensorKind::FinalNorm, 0, r.take(c.dim, "norm")?));
    let mut quantized = |kind: TensorKind, layer: usize, r: &mut Floats<'_>| -> Result<()> {
        let (rows, cols) = c.shape(kind);
        let t = r.take_int8(rows * cols, group_size, kind.name())?;
        tensors.push((kind, layer, t.dequantize()));
        int8.push((kind, layer, t));
        Ok(())
    };
    quantized(TensorKind::Embedding, 0, r)?;
    for kind in
        [TensorKind::Wq, TensorKind::Wk, TensorKind::Wv, TensorKind::Wo, TensorKind::W1, TensorKind::W2, TensorKind::W3]
    {
        for l in 0..c.n_layers {
            quantized(kind, l, r)?;
        }
    }
    if !c.shared_classifier {
        quantized(TensorKind::Classifier, 0, r)?;
    }
    Ok(Checkpoint { config: *c, version: 2, tensors, int8 })
}

/// Parses a llama2.c checkpoint: legacy, version 1 (f32) or version 2 (int8, `runq.c`).
///
/// Version 2 header: magic, i32 version = 2, 7 × i32 dims, u8 shared_classifier,
/// i32 group_size, zero padding to 256 bytes.
pub fn read_checkpoint(bytes: &[u8]) -> Result<Checkpoint> {
    ensure!(bytes.len() >= 28, "file is {} bytes, too short to be a llama2.c checkpoint", bytes.len());
    let magic = u32::from_le_bytes(bytes[..4].try_into()?);
    let (config, version, mut r) = if magic == MAGIC {
        let version = i32_at(bytes, 4)?;
        ensure!(version == 1 || version == 2, "unknown llama2.c checkpoint version {version}");
        let dims = read_dims(bytes, 8)?;
        ensure!(dims[5] > 0, "llama2.c header: vocab_size {} must be positive", dims[5]);
        let shared = *bytes.get(36).context("file too short for its header")? != 0;
        ensure!(bytes.len() >= VERSIONED_HEADER, "file too short for a version {version} header");
        let config = config_from(dims, shared)?;
        let mut r = Floats { bytes, at: VERSIONED_HEADER };
        if version == 2 {
            let gs = i32_at(bytes, 37)?;
            ensure!(gs > 0 && gs <= 1 << 20, "version 2 checkpoint: group size {gs} is out of range");
            let ckpt = read_version2(&config, gs as usize, &mut r)?;
            ensure!(
                r.at == bytes.len(),
                "checkpoint has {} bytes after the last tensor: the header does not describe this file",
                bytes.len() as i64 - r.at as i64
            );
            return Ok(ckpt);
        }
        (config, 1, r)
    } else {
        // Legacy: a negative vocab_size means a separate classifier follows.
        let dims = read_dims(bytes, 0)?;
        (config_from(dims, dims[5] > 0)?, 0, Floats { bytes, at: 28 })
    };
    let c = config;
    let (dim, hidden, layers, vocab, kv_dim) = (c.dim, c.hidden_dim, c.n_layers, c.vocab_size, c.kv_dim());
    let mut tensors = Vec::new();
    let per_layer = |r: &mut Floats<'_>, kind: TensorKind, tensors: &mut Vec<(TensorKind, usize, Vec<f32>)>| {
        let (rows, cols) = c.shape(kind);
        for l in 0..layers {
            tensors.push((kind, l, r.take(rows * cols, kind.name())?));
        }
        Ok::<_, anyhow::Error>(())
    };
    if version == 0 {
        tensors.push((TensorKind::Embedding, 0, r.take(vocab * dim, "token_embedding")?));
        per_layer(&mut r, TensorKind::AttnNorm, &mut tensors)?;
        for kind in [TensorKind::Wq, TensorKind::Wk, TensorKind::Wv, TensorKind::Wo, TensorKind::FfnNorm] {
            per_layer(&mut r, kind, &mut tensors)?;
        }
        for kind in [TensorKind::W1, TensorKind::W2, TensorKind::W3] {
            per_layer(&mut r, kind, &mut tensors)?;
        }
        tensors.push((TensorKind::FinalNorm, 0, r.take(dim, "rms_final")?));
        // Two legacy RoPE tables (seq_len × head_size/2 each) that the runtime recomputes.
        r.take(c.seq_len * c.head_size(), "freq_cis tables")?;
    } else {
        per_layer(&mut r, TensorKind::AttnNorm, &mut tensors)?;
        per_layer(&mut r, TensorKind::FfnNorm, &mut tensors)?;
        tensors.push((TensorKind::FinalNorm, 0, r.take(dim, "norm")?));
        tensors.push((TensorKind::Embedding, 0, r.take(vocab * dim, "tok_embeddings")?));
        for kind in [TensorKind::Wq, TensorKind::Wk, TensorKind::Wv, TensorKind::Wo, TensorKind::W1, TensorKind::W2] {
            per_layer(&mut r, kind, &mut tensors)?;
        }
        per_layer(&mut r, TensorKind::W3, &mut tensors)?;
    }
    if !c.shared_classifier {
        tensors.push((TensorKind::Classifier, 0, r.take(vocab * dim, "classifier")?));
    }
    ensure!(
        r.at == bytes.len(),
        "checkpoint has {} bytes after the last tensor: the header (dim {dim}, hidden {hidden}, layers {layers}, \
         kv_dim {kv_dim}, vocab {vocab}) does not describe this file",
        bytes.len() - r.at
    );
    Ok(Checkpoint { config, version, tensors, int8: Vec::new() })
}

/// Parses llama2.c's `tokenizer.bin`: i32 max_token_length, then per token f32 score, i32 length, bytes.
pub fn read_tokenizer(bytes: &[u8], path: &Path) -> Result<Vocab> {
    let max_len = i32_at(bytes, 0).with_context(|| format!("{}: not a llama2.c tokenizer", path.display()))?;
    ensure!(max_len > 0, "{}: max_token_length {max_len} must be positive", path.display());
    let mut vocab = Vocab::default();
    let mut at = 4usize;
    while at < bytes.len() {
        let id = vocab.pieces.len();
        let head = bytes
            .get(at..at + 8)
            .with_context(|| format!("{}: truncated at token {id} (offset {at})", path.display()))?;
        let score = f32::from_le_bytes(head[..4].try_into()?);
        ensure!(score.is_finite(), "{}: token {id} has a non-finite score {score}", path.display());
        let len = i32::from_le_bytes(head[4..].try_into()?);
        ensure!(len > 0 && len <= max_len, "{}: token {id} has length {len}, outside 1..={max_len}", path.display());
        let piece = bytes
            .get(at + 8..at + 8 + len as usize)
            .with_context(|| format!("{}: truncated in token {id}", path.display()))?;
        vocab.pieces.push(piece.to_vec());
        vocab.scores.push(score);
        at += 8 + len as usize;
    }
    Ok(vocab)
}
