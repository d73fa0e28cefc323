//! Importer for Hugging Face `LlamaForCausalLM` folders: `config.json`,
//! `model.safetensors` (or shards listed in `model.safetensors.index.json`),
//! `tokenizer.json` (SentencePiece-style BPE with byte fallback) and
//! `tokenizer_config.json`.
//!
//! HF stores the q and k projection rows for `rotate_half` RoPE (the two
//! halves of each head rotate together); microlm rotates adjacent pairs, so
//! the rows are permuted back at import, as llama.cpp's `convert_hf_to_gguf.py`
//! `permute` undoes it (with the KV head count for k).

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use microlm::format::{Config, TensorKind};
use microlm::write::Vocab;
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

/// Largest safetensors JSON header accepted (100 MB, the `safetensors` crate's own limit).
const MAX_HEADER: u64 = 100_000_000;

/// A converted folder: configuration, vocabulary and f32 tensors by kind and layer.
#[derive(Debug)]
pub struct HfModel {
    /// Hyper-parameters from `config.json`.
    pub config: Config,
    /// Pieces (U+2581 turned back into spaces) and merge scores.
    pub vocab: Vocab,
    tensors: Vec<(TensorKind, usize, Vec<f32>)>,
}

impl HfModel {
    /// The f32 values of `kind` in `layer` (row-major, shape `Config::shape(kind)`).
    pub fn tensor(&self, kind: TensorKind, layer: usize) -> Option<&[f32]> {
        let kind =
            if kind == TensorKind::Classifier && self.config.shared_classifier { TensorKind::Embedding } else { kind };
        self.tensors.iter().find(|(k, l, _)| *k == kind && *l == layer).map(|(_, _, v)| v.as_slice())
    }
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))
}

fn usize_field(cfg: &Value, name: &str) -> Result<usize> {
    let v = cfg
        .get(name)
        .and_then(Value::as_u64)
        .with_context(|| format!("config.json: {name} is missing or not a positive integer"))?;
    ensure!(v > 0 && v <= 1 << 24, "config.json: {name} = {v} is out of range");
    Ok(v as usize)
}

/// Reads `config.json`, refusing settings the runtime does not implement.
pub fn read_config(cfg: &Value) -> Result<Config> {
    if let Some(a) = cfg.get("architectures").and_then(Value::as_array) {
        ensure!(
            a.iter().any(|v| v.as_str() == Some("LlamaForCausalLM")),
            "config.json: architectures {a:?} is not LlamaForCausalLM"
        );
    }
    if let Some(rs) = cfg.get("rope_scaling") {
        ensure!(rs.is_null(), "config.json: rope_scaling {rs} is not supported (plain RoPE only)");
    }
    for name in ["attention_bias", "mlp_bias"] {
        ensure!(cfg.get(name).and_then(Value::as_bool) != Some(true), "config.json: {name} = true is not supported");
    }
    let act = cfg.get("hidden_act").and_then(Value::as_str).unwrap_or("silu");
    ensure!(act == "silu", "config.json: hidden_act {act:?} is not supported (silu only)");
    let dim = usize_field(cfg, "hidden_size")?;
    let n_heads = usize_field(cfg, "num_attention_heads")?;
    let n_kv_heads =
        if cfg.get("num_key_value_heads").is_some() { usize_field(cfg, "num_key_value_heads")? } else { n_heads };
    ensure!(
        dim % n_heads == 0 && n_heads % n_kv_heads == 0,
        "config.json: num_attention_heads {n_heads} must divide hidden_size {dim} and num_key_value_heads {n_kv_heads} must divide it"
    );
    if let Some(hd) = cfg.get("head_dim").filter(|v| !v.is_null()) {
        ensure!(
            hd.as_u64() == Some((dim / n_heads) as u64),
            "config.json: head_dim {hd} differs from hidden_size / num_attention_heads = {}",
            dim / n_heads
        );
    }
    let float = |name: &str, default: f64| -> Result<f32> {
        let v = match cfg.get(name) {
            None => default,
            Some(v) => v.as_f64().with_context(|| format!("config.json: {name} is not a number"))?,
        };
        let f = v as f32;
        ensure!(f.is_finite() && f > 0.0, "config.json: {name} = {v} cannot be stored (needs a positive finite f32)");
        Ok(f)
    };
    let id = |name: &str, default: u32| -> Result<u32> {
        match cfg.get(name) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v
                .as_u64()
                .and_then(|v| u32::try_from(v).ok())
                .with_context(|| format!("config.json: {name} {v} is not a single token id")),
        }
    };
    Ok(Config {
        dim,
        hidden_dim: usize_field(cfg, "intermediate_size")?,
        n_layers: usize_field(cfg, "num_hidden_layers")?,
        n_heads,
        n_kv_heads,
        vocab_size: usize_field(cfg, "vocab_size")?,
        seq_len: usize_field(cfg, "max_position_embeddings")?,
        norm_eps: float("rms_norm_eps", 1e-6)?,
        rope_theta: float("rope_theta", 10000.0)?,
        bos_id: id("bos_token_id", 1)?,
        eos_id: id("eos_token_id", 2)?,
        shared_classifier: cfg.get("tie_word_embeddings").and_then(Value::as_bool).unwrap_or(false),
    })
}

/// HF tensor name of `kind` in `layer`.
fn hf_name(kind: TensorKind, layer: usize) -> String {
    let l = format!("model.layers.{layer}.");
    match kind {
        TensorKind::Embedding => "model.embed_tokens.weight".into(),
        TensorKind::FinalNorm => "model.norm.weight".into(),
        TensorKind::Classifier => "lm_head.weight".into(),
        TensorKind::AttnNorm => l + "input_layernorm.weight",
        TensorKind::FfnNorm => l + "post_attention_layernorm.weight",
        TensorKind::Wq => l + "self_attn.q_proj.weight",
        TensorKind::Wk => l + "self_attn.k_proj.weight",
        TensorKind::Wv => l + "self_attn.v_proj.weight",
        TensorKind::Wo => l + "self_attn.o_proj.weight",
        TensorKind::W1 => l + "mlp.gate_proj.weight",
        TensorKind::W2 => l + "mlp.down_proj.weight",
        TensorKind::W3 => l + "mlp.up_proj.weight",
    }
}

/// Bytes per value of a safetensors dtype name (the `safetensors` crate's `Dtype`).
fn dtype_size(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" => 1,
        "I16" | "U16" | "F16" | "BF16" => 2,
        "I32" | "U32" | "F32" => 4,
        "I64" | "U64" | "F64" => 8,
        _ => return None,
    })
}

/// Checks the raw safetensors layout (huggingface/safetensors `README.md`:
/// u64 LE header length, JSON header, data area) before the crate parses it:
/// the header length must lie inside the file and below 100 MB (the crate's limit); each
/// tensor's dtype must be known and its shape's value count times the dtype
/// size (without overflow) must equal its `data_offsets` span; the spans must
/// tile the data area in order, without overlap or gap. `path` names the file
/// in the one-line error.
pub fn check_layout(bytes: &[u8], path: &Path) -> Result<()> {
    let p = path.display();
    ensure!(bytes.len() >= 8, "{p}: {} bytes, too short for a safetensors header", bytes.len());
    let n = u64::from_le_bytes(bytes[..8].try_into()?);
    ensure!(n <= MAX_HEADER, "{p}: JSON header of {n} bytes exceeds the {MAX_HEADER}-byte limit");
    ensure!(8 + n <= bytes.len() as u64, "{p}: header length {n} runs past the end of the {}-byte file", bytes.len());
    let header: serde_json::Map<String, Value> = serde_json::from_slice(&bytes[8..8 + n as usize])
        .with_context(|| format!("{p}: safetensors header is not a JSON object"))?;
    let mut spans = Vec::new();
    for (name, t) in &header {
        if name == "__metadata__" {
            continue;
        }
        // Shown escaped: a newline in a name must not split the one-line error.
        let name = name.escape_debug().to_string();
        let offs = t
            .get("data_offsets")
            .and_then(Value::as_array)
            .with_context(|| format!("{p}: tensor {name} has no data_offsets"))?;
        let (Some(a), Some(b)) = (offs.first().and_then(Value::as_u64), offs.get(1).and_then(Value::as_u64)) else {
            bail!("{p}: tensor {name} has malformed data_offsets");
        };
        ensure!(a <= b, "{p}: tensor {name} has data_offsets {a}..{b} out of order");
        let dtype =
            t.get("dtype").and_then(Value::as_str).with_context(|| format!("{p}: tensor {name} has no dtype"))?;
        let size = dtype_size(dtype).with_context(|| format!("{p}: tensor {name} has unknown dtype {dtype:?}"))?;
        let shape = t
            .get("shape")
            .and_then(Value::as_array)
            .and_then(|s| s.iter().map(Value::as_u64).collect::<Option<Vec<u64>>>())
            .with_context(|| format!("{p}: tensor {name} has no shape of non-negative integers"))?;
        let need = shape
            .iter()
            .try_fold(size, |acc, &d| acc.checked_mul(d))
            .with_context(|| format!("{p}: tensor {name}: shape {shape:?} of {dtype} overflows a 64-bit byte count"))?;
        ensure!(
            need == b - a,
            "{p}: tensor {name}: shape {shape:?} of {dtype} needs {need} bytes, its data_offsets {a}..{b} hold {}",
            b - a
        );
        spans.push((a, b, name));
    }
    spans.sort();
    let data = bytes.len() as u64 - 8 - n;
    let mut end = 0u64;
    for (a, b, name) in &spans {
        ensure!(*a >= end, "{p}: tensor {name} (bytes {a}..{b}) overlaps the previous tensor ending at {end}");
        ensure!(*a == end, "{p}: gap of {} bytes before tensor {name}", a - end);
        end = *b;
    }
    ensure!(end == data, "{p}: tensors cover {end} bytes but the data area has {data}");
    Ok(())
}

/// f32 values of a safetensors tensor (F32, F16 or BF16), checked against `shape`.
fn to_f32(t: &safetensors::tensor::TensorView<'_>, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
    ensure!(t.shape() == shape, "tensor {name} has shape {:?}, expected {shape:?}", t.shape());
    let d = t.data();
    let (size, conv): (usize, fn(&[u8]) -> f32) = match t.dtype() {
        Dtype::F32 => (4, |c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        Dtype::F16 => (2, |c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()),
        Dtype::BF16 => (2, |c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()),
        other => bail!("tensor {name} has dtype {other:?}; only F32, F16 and BF16 are supported"),
    };
    let n: usize = shape.iter().product();
    ensure!(d.len() == n * size, "tensor {name} has {} bytes, its shape and dtype need {}", d.len(), n * size);
    Ok(d.chunks_exact(size).map(conv).collect())
}

/// Undoes HF's `rotate_half` row order for a q (`heads` = query heads) or k
/// (`heads` = KV heads) projection of `rows` × `cols`: within each head, row
/// `2i` comes from row `i` and row `2i + 1` from row `i + head_size / 2`.
pub fn unpermute(w: &[f32], heads: usize, rows: usize, cols: usize) -> Vec<f32> {
    let hs = rows / heads;
    let mut out = vec![0.0f32; w.len()];
    for h in 0..heads {
        for i in 0..hs / 2 {
            for (dst, src) in [(2 * i, i), (2 * i + 1, i + hs / 2)] {
                let (d, s) = ((h * hs + dst) * cols, (h * hs + src) * cols);
                out[d..d + cols].copy_from_slice(&w[s..s + cols]);
            }
        }
    }
    out
}

/// The safetensors files of `dir`: `model.safetensors`, or the shards named in `model.safetensors.index.json`.
fn weight_files(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        let v = read_json(&index)?;
        let map = v
            .get("weight_map")
            .and_then(Value::as_object)
            .context("model.safetensors.index.json: no weight_map object")?;
        let mut files: Vec<String> = Vec::new();
        for (name, f) in map {
            let f = f.as_str().with_context(|| format!("model.safetensors.index.json: {name} maps to a non-string"))?;
            ensure!(
                !f.contains(['/', '\\']) && f != "..",
                "model.safetensors.index.json: shard {f:?} is not a file name in the folder"
            );
            if !files.iter().any(|x| x == f) {
                files.push(f.into());
            }
        }
        return Ok(files.into_iter().map(|f| dir.join(f)).collect());
    }
    let single = dir.join("model.safetensors");
    ensure!(single.exists(), "{}: no model.safetensors or model.safetensors.index.json", dir.display());
    Ok(vec![single])
}

/// Reads a `tokenizer.json` BPE model with byte fallback into pieces and scores.
///
/// Pieces are the vocab strings with U+2581 as a space (microlm's tokenizer,
/// like llama2.c's, prepends and splits on plain spaces). Scores follow the
/// merges' ranks, so the llama2.c greedy best-score merge applies merges in
/// the BPE model's order: a piece made by merge `r` scores `-r`; every other
/// piece scores below all merges (`-(merges + id)`).
pub fn read_tokenizer(tok: &Value, vocab_size: usize) -> Result<Vocab> {
    let model = tok.get("model").context("tokenizer.json: no model")?;
    let kind = model.get("type").and_then(Value::as_str).unwrap_or("");
    ensure!(kind == "BPE", "tokenizer.json: model type {kind:?} is not supported (BPE only)");
    let byte_level = |v: Option<&Value>| v.is_some_and(|v| v.to_string().contains("\"ByteLevel\""));
    if byte_level(tok.get("pre_tokenizer")) || byte_level(tok.get("decoder")) {
        bail!("tokenizer.json: ByteLevel (GPT-2 style) BPE is not supported yet");
    }
    ensure!(
        model.get("byte_fallback").and_then(Value::as_bool) == Some(true),
        "tokenizer.json: BPE without byte_fallback is not supported (SentencePiece-style vocabularies only)"
    );
    let vocab =
        model.get("vocab").and_then(Value::as_object).context("tokenizer.json: model.vocab is not an object")?;
    let mut pieces: Vec<Option<Vec<u8>>> = vec![None; vocab_size];
    for (piece, id) in vocab {
        let id = id.as_u64().filter(|&i| (i as usize) < vocab_size).with_context(|| {
            format!("tokenizer.json: piece {piece:?} has id {id}, outside the vocab_size {vocab_size}")
        })? as usize;
        ensure!(pieces[id].is_none(), "tokenizer.json: id {id} appears twice in model.vocab");
        pieces[id] = Some(piece.replace('\u{2581}', " ").into_bytes());
    }
    let mut scores: Vec<f32> = Vec::with_capacity(vocab_size);
    let merges = model.get("merges").and_then(Value::as_array).context("tokenizer.json: model.merges is not a list")?;
    let mut rank: HashMap<String, usize> = HashMap::new();
    for (r, m) in merges.iter().enumerate() {
        let joined = match m {
            Value::String(s) => s.split_once(' ').map(|(a, b)| format!("{a}{b}")),
            Value::Array(p) if p.len() == 2 => p[0].as_str().zip(p[1].as_str()).map(|(a, b)| format!("{a}{b}")),
            _ => None,
        }
        .with_context(|| format!("tokenizer.json: merge {r} is malformed"))?;
        rank.entry(joined).or_insert(r);
    }
    let mut out = Vocab::default();
    let by_piece: HashMap<&str, usize> =
        vocab.iter().filter_map(|(p, i)| Some((p.as_str(), i.as_u64()? as usize))).collect();
    let mut rank_of = vec![None; vocab_size];
    for (p, r) in &rank {
        if let Some(&i) = by_piece.get(p.as_str()) {
            rank_of[i] = Some(*r);
        }
    }
    for (id, p) in pieces.into_iter().enumerate() {
        let p = p.with_context(|| format!("tokenizer.json: no piece for id {id} (vocab_size {vocab_size})"))?;
        out.pieces.push(p);
        scores.push(match rank_of[id] {
            Some(r) => -(r as f32),
            None => -((merges.len() + id) as f32),
        });
    }
    out.scores = scores;
    Ok(out)
}

/// Reads a Hugging Face Llama folder into f32 tensors in microlm's RoPE order.
pub fn read_dir(dir: &Path) -> Result<HfModel> {
    let mut config = read_config(&read_json(&dir.join("config.json"))?)?;
    let tc = dir.join("tokenizer_config.json");
    if tc.exists() {
        let v = read_json(&tc)?;
        ensure!(
            v.get("add_eos_token").and_then(Value::as_bool) != Some(true),
            "tokenizer_config.json: add_eos_token = true is not supported"
        );
        ensure!(
            v.get("add_bos_token").and_then(Value::as_bool) != Some(false),
            "tokenizer_config.json: add_bos_token = false is not supported (microlm always starts with BOS)"
        );
    }
    let vocab = read_tokenizer(&read_json(&dir.join("tokenizer.json"))?, config.vocab_size)?;
    let files = weight_files(dir)?;
    let blobs: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(f).with_context(|| format!("cannot read {}", f.display())))
        .collect::<Result<_>>()?;
    let mut parsed = Vec::new();
    for (f, b) in files.iter().zip(&blobs) {
        check_layout(b, f)?;
        parsed.push(
            SafeTensors::deserialize(b).with_context(|| format!("{}: not a valid safetensors file", f.display()))?,
        );
    }
    let get = |name: &str| parsed.iter().find_map(|s| s.tensor(name).ok());
    if !config.shared_classifier && get("lm_head.weight").is_none() && get("model.embed_tokens.weight").is_some() {
        bail!("lm_head.weight is missing and tie_word_embeddings is false");
    }
    if config.shared_classifier && get("lm_head.weight").is_some() {
        // Tied in config, yet stored: keep the file's own classifier.
        config.shared_classifier = false;
    }
    let c = config;
    let mut tensors = Vec::new();
    let kinds = [TensorKind::Embedding, TensorKind::FinalNorm, TensorKind::Classifier];
    let per_layer = [
        TensorKind::AttnNorm,
        TensorKind::FfnNorm,
        TensorKind::Wq,
        TensorKind::Wk,
        TensorKind::Wv,
        TensorKind::Wo,
        TensorKind::W1,
        TensorKind::W2,
        TensorKind::W3,
    ];
    let wanted =
        kinds.iter().map(|&k| (k, 0)).chain((0..c.n_layers).flat_map(|l| per_layer.iter().map(move |&k| (k, l))));
    for (kind, layer) in wanted {
        if kind == TensorKind::Classifier && c.shared_classifier {
            continue;
        }
        let name = hf_name(kind, layer);
        let t = get(&name).with_context(|| format!("tensor {name} is missing"))?;
        let (rows, cols) = c.shape(kind);
        let shape: Vec<usize> =
            if rows == 1 || matches!(kind, TensorKind::AttnNorm | TensorKind::FfnNorm | TensorKind::FinalNorm) {
                vec![rows * cols]
            } else {
                vec![rows, cols]
            };
        let mut v = to_f32(&t, &name, &shape)?;
        if kind == TensorKind::Wq {
            v = unpermute(&v, c.n_heads, rows, cols);
        } else if kind == TensorKind::Wk {
            v = unpermute(&v, c.n_kv_heads, rows, cols);
        }
        tensors.push((kind, layer, v));
    }
    Ok(HfModel { config: c, vocab, tensors })
}
