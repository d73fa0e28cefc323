//! Writes seed corpora for the fuzz targets: a tiny valid model (small enough
//! for fast mutation), the real stories260K model and tokenizers, and tiny
//! llama2.c checkpoints of both versions, small GGUF files and a small safetensors file.
//!
//! Usage: cargo run --release --bin make_seeds -- CORPUS_DIR STORIES_MLM

use std::path::{Path, PathBuf};

use microlm::format::{Config, DType, TensorKind};
use microlm::write::{encode_tensor, write_model, ModelSpec, Vocab};

/// Deterministic pseudo-random weights in [-0.5, 0.5).
fn weights(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}

fn tiny_config() -> Config {
    Config {
        dim: 8,
        hidden_dim: 12,
        n_layers: 1,
        n_heads: 2,
        n_kv_heads: 1,
        vocab_size: 300,
        seq_len: 8,
        norm_eps: 1e-5,
        rope_theta: 10000.0,
        bos_id: 1,
        eos_id: 2,
        shared_classifier: true,
    }
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn main() {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [corpus, stories] = &args[..] else {
        eprintln!("usage: make_seeds CORPUS_DIR STORIES_MLM");
        std::process::exit(2);
    };
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/models");
    let tok_path = shared.join("tok512.bin");
    let tok = microlm_cli::llama2c::read_tokenizer(&std::fs::read(&tok_path).unwrap(), &tok_path).unwrap();

    // A tiny model with the first 300 pieces of the 512 vocabulary, in f32 and f16.
    let cfg = tiny_config();
    let vocab = Vocab { pieces: tok.pieces[..300].to_vec(), scores: tok.scores[..300].to_vec() };
    for dtype in [DType::F32, DType::F16] {
        let mut dtypes = [dtype; 12];
        for k in TensorKind::ALL.into_iter().filter(|k| k.is_norm()) {
            dtypes[k.index()] = DType::F32;
        }
        let spec = ModelSpec { name: "tiny", source: "test", config: cfg, dtypes, vocab: &vocab };
        let bytes = write_model(&spec, |e| {
            let n = (e.rows * e.cols) as usize;
            Ok(encode_tensor(e.dtype, &weights(n, u64::from(e.layer) * 16 + e.kind.index() as u64)))
        })
        .unwrap();
        write(&corpus.join("parse_forward"), &format!("tiny-{}.mlm", dtype.name()), &bytes);
    }
    write(&corpus.join("parse_forward"), "stories260K.mlm", &std::fs::read(stories).unwrap());

    // Tokenizer: selector byte + text.
    for (i, text) in ["\x00Once upon a time", "\x01naïve café — 日本語 🙂", "\x02tabs\tand  spaces", "\x03\u{fffd}\x7f"]
        .iter()
        .enumerate()
    {
        write(&corpus.join("tokenizer"), &format!("text{i}"), text.as_bytes());
    }

    // llama2.c: tiny legacy (shared classifier) and version 1 checkpoints, plus a tokenizer file.
    let dims = [8i32, 12, 1, 2, 1, 300, 8];
    let c = tiny_config();
    let floats = |n: usize| weights(n, 7).iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>();
    let per_model = c.vocab_size * c.dim
        + c.n_layers * (2 * c.dim + 2 * c.dim * c.dim + 2 * c.kv_dim() * c.dim + 3 * c.hidden_dim * c.dim)
        + c.dim;
    let mut legacy: Vec<u8> = dims.iter().flat_map(|d| d.to_le_bytes()).collect();
    legacy.extend(floats(per_model + c.seq_len * c.head_size()));
    write(&corpus.join("llama2c_import"), "legacy.bin", &legacy);
    let mut v1 = Vec::new();
    v1.extend(0x616b_3432u32.to_le_bytes());
    v1.extend(1i32.to_le_bytes());
    v1.extend(dims.iter().flat_map(|d| d.to_le_bytes()));
    v1.push(1);
    v1.resize(256, 0);
    v1.extend(floats(per_model));
    write(&corpus.join("llama2c_import"), "v1.bin", &v1);
    write(&corpus.join("llama2c_import"), "tok512.bin", &std::fs::read(&tok_path).unwrap());

    // GGUF: the test writer's valid file (F32 and Q8_0 tensors), as version 2, and with one
    // tensor of each other block type the reader dequantizes.
    use microlm_tests::gguf_writer::{valid_metadata, valid_tensors};
    let gguf = valid_tensors();
    write(&corpus.join("gguf_reader"), "valid.gguf", &gguf.build());
    let mut v2 = gguf.clone();
    v2.version = 2;
    write(&corpus.join("gguf_reader"), "valid-v2.gguf", &v2.build());
    for (ty, blck, bsize) in [
        (1u32, 1u64, 2usize),
        (30, 1, 2),
        (2, 32, 18),
        (3, 32, 20),
        (6, 32, 22),
        (7, 32, 24),
        (12, 256, 144),
        (13, 256, 176),
        (14, 256, 210),
    ] {
        let mut w = valid_metadata();
        w.tensor("t", &[blck, 2], ty, 0);
        w.data = (0..2 * bsize).map(|i| (i * 37 % 251) as u8).collect();
        write(&corpus.join("gguf_reader"), &format!("type{ty}.gguf"), &w.build());
    }

    // safetensors: two small F32 tensors.
    let header = br#"{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"b":{"dtype":"F16","shape":[4],"data_offsets":[16,24]}}"#;
    let mut st = (header.len() as u64).to_le_bytes().to_vec();
    st.extend_from_slice(header);
    st.extend((0..24u8).map(|i| i * 7));
    write(&corpus.join("safetensors_header"), "small.safetensors", &st);
    eprintln!("seeds written to {}", corpus.display());
}
