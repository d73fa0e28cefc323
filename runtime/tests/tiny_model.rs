//! A tiny synthetic model written with the std writer and run end to end:
//! small enough for Miri, and a check that the writer and reader agree.

use microlm::format::{Config, DType, TensorKind};
use microlm::write::{encode_tensor, write_model, ModelSpec, Vocab};
use microlm::{Generation, KvDtype, Model, Sampler, SamplerConfig, Session, Step};

/// Special tokens, 256 byte tokens, then single letters and a few merges.
fn vocab() -> Vocab {
    let mut pieces: Vec<Vec<u8>> = vec![b"<unk>".to_vec(), b"\n<s>\n".to_vec(), b"\n</s>\n".to_vec()];
    pieces.extend((0..=255u8).map(|b| format!("<0x{b:02X}>").into_bytes()));
    pieces.extend([" ", "a", "b", "c", " a", "ab", " ab", "ca"].map(|s| s.as_bytes().to_vec()));
    let scores = (0..pieces.len()).map(|i| if i < 259 { 0.0 } else { -(i as f32) }).collect();
    Vocab { pieces, scores }
}

fn config() -> Config {
    Config {
        dim: 8,
        hidden_dim: 12,
        n_layers: 2,
        n_heads: 2,
        n_kv_heads: 1,
        vocab_size: 267,
        seq_len: 6,
        norm_eps: 1e-5,
        rope_theta: 10000.0,
        bos_id: 1,
        eos_id: 2,
        shared_classifier: false,
    }
}

fn build(dtype: DType) -> Vec<u32> {
    let vocab = vocab();
    let mut dtypes = [dtype; 12];
    dtypes[TensorKind::AttnNorm.index()] = DType::F32;
    dtypes[TensorKind::FfnNorm.index()] = DType::F32;
    dtypes[TensorKind::FinalNorm.index()] = DType::F32;
    let spec = ModelSpec { name: "tiny", source: "test", config: config(), dtypes, vocab: &vocab };
    let bytes = write_model(&spec, |e| {
        let n = (e.rows * e.cols) as usize;
        let values: Vec<f32> =
            (0..n).map(|i| ((i * 7 + e.kind.index() * 3 + e.layer as usize) % 11) as f32 / 11.0 - 0.45).collect();
        Ok(encode_tensor(e.dtype, &values))
    })
    .unwrap();
    let mut words = vec![0u32; bytes.len().div_ceil(4)];
    bytemuck::cast_slice_mut::<u32, u8>(&mut words)[..bytes.len()].copy_from_slice(&bytes);
    words.push(bytes.len() as u32);
    words
}

fn run(dtype: DType) -> Vec<u32> {
    let mut words = build(dtype);
    let len = words.pop().unwrap() as usize;
    let bytes = &bytemuck::cast_slice::<u32, u8>(&words)[..len];
    let model = Model::parse(bytes).unwrap();
    assert_eq!(*model.config(), config());
    assert_eq!(model.tensors().count(), config().tensor_count());

    let tok = model.tokenizer();
    let mut prompt = [0u32; 16];
    let n = tok.encode(b"abca", true, false, &mut prompt).unwrap();
    // BOS, then " ab" (merged from " ", "a", "b") and "ca".
    assert_eq!(&prompt[..n], &[1, 265, 266]);

    let plan = model.plan(6, KvDtype::F32).unwrap();
    let mut arena = vec![0u32; plan.total / 4];
    let mut session = Session::new(&model, bytemuck::cast_slice_mut(&mut arena), 6, KvDtype::F32).unwrap();
    let mut sampler =
        Sampler::new(SamplerConfig { temperature: 0.9, top_p: 0.8, seed: 5, ..Default::default() }, 267).unwrap();
    let mut generation = Generation::new(&session, &prompt[..n], 0).unwrap();
    let mut ids = vec![1];
    while let Step::Token { token, .. } = generation.step(&mut session, &mut sampler).unwrap() {
        ids.push(token);
    }
    // BOS plus one token per position, at most the 6 positions of the context.
    assert!(ids.len() <= 7);
    ids
}

#[test]
fn tiny_model_round_trips_and_generates() {
    let a = run(DType::F32);
    assert_eq!(&a[..3], &[1, 265, 266]);
    // The same seed gives the same tokens.
    assert_eq!(run(DType::F32), a);
    run(DType::F16);
}
