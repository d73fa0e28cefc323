//! Quantized weights end to end: the CLI's convert / quantize / eval, llama2.c
//! version 2 (int8) import, arena planning and the reader's dtype checks.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use microlm::format::TensorKind;
use microlm::{DType, Model, Session};
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn shared() -> PathBuf {
    root().join("../shared")
}

fn model_path(name: &str) -> PathBuf {
    shared().join("models").join(name)
}

fn dev_text() -> PathBuf {
    shared().join("data/tinystories_dev.txt")
}

/// target/<profile> of this test build.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent().and_then(Path::parent).expect("target/<profile>/deps").to_path_buf()
}

/// The `microlm` binary of this profile, built once if missing.
fn cli() -> PathBuf {
    static BUILD: Mutex<()> = Mutex::new(());
    let dir = profile_dir();
    let bin = dir.join("microlm");
    let _guard = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    if !bin.is_file() {
        let mut cmd = microlm_tests::cargo();
        cmd.current_dir(root()).args(["build", "-p", "microlm-cli"]);
        if dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        assert!(cmd.status().expect("run cargo build").success(), "building microlm-cli failed");
    }
    bin
}

/// Runs `microlm args...`; returns (exit code, stdout, stderr).
fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(cli()).args(args).output().expect("run microlm");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn run_ok(args: &[&str]) -> (String, String) {
    let (code, out, err) = run(args);
    assert_eq!(code, 0, "microlm {args:?} failed:\n{err}");
    (out, err)
}

fn last_json(stdout: &str) -> Value {
    serde_json::from_str(stdout.lines().last().expect("some stdout")).expect("JSON last line")
}

fn scratch(name: &str) -> PathBuf {
    let dir = profile_dir().join("test-files").join("quant");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(format!("{}-{name}", std::process::id()))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// stories260K converted with extra convert flags (cached per flag set).
fn converted(tag: &str, flags: &[&str]) -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let out = scratch(&format!("{tag}.mlm"));
    if !out.is_file() {
        let (bin, tok) = (model_path("stories260K.bin"), model_path("tok512.bin"));
        let mut args = vec!["convert", s(&bin), "--tokenizer", s(&tok), "-o", s(&out)];
        args.extend_from_slice(flags);
        run_ok(&args);
    }
    out
}

fn f32_model() -> PathBuf {
    converted("f32", &[])
}

fn read_aligned(path: &Path) -> Vec<u32> {
    let bytes = std::fs::read(path).unwrap();
    let mut words = vec![0u32; bytes.len().div_ceil(4) + 1];
    bytemuck::cast_slice_mut::<u32, u8>(&mut words)[..bytes.len()].copy_from_slice(&bytes);
    words.push(bytes.len() as u32);
    words
}

fn bytes_of(words: &[u32]) -> &[u8] {
    let len = *words.last().unwrap() as usize;
    &bytemuck::cast_slice::<u32, u8>(words)[..len]
}

/// The weights of stories260K (llama2.c legacy layout), as (kind, layer) → values.
struct Legacy {
    dims: [usize; 7],
    tensors: Vec<(TensorKind, usize, Vec<f32>)>,
}

fn read_legacy() -> Legacy {
    let b = std::fs::read(model_path("stories260K.bin")).unwrap();
    let i = |k: usize| i32::from_le_bytes(b[4 * k..4 * k + 4].try_into().unwrap());
    let dims: [usize; 7] = std::array::from_fn(|k| i(k).unsigned_abs() as usize);
    assert!(i(5) > 0, "stories260K shares its classifier");
    let [dim, hidden, layers, heads, kv_heads, vocab, _] = dims;
    let kv_dim = dim / heads * kv_heads;
    let mut at = 28usize;
    let mut take = |n: usize| -> Vec<f32> {
        let v = b[at..at + 4 * n].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        at += 4 * n;
        v
    };
    let mut tensors = vec![(TensorKind::Embedding, 0, take(vocab * dim))];
    let sizes = [
        (TensorKind::AttnNorm, dim),
        (TensorKind::Wq, dim * dim),
        (TensorKind::Wk, kv_dim * dim),
        (TensorKind::Wv, kv_dim * dim),
        (TensorKind::Wo, dim * dim),
        (TensorKind::FfnNorm, dim),
        (TensorKind::W1, hidden * dim),
        (TensorKind::W2, dim * hidden),
        (TensorKind::W3, hidden * dim),
    ];
    for (kind, n) in sizes {
        for l in 0..layers {
            tensors.push((kind, l, take(n)));
        }
    }
    tensors.push((TensorKind::FinalNorm, 0, take(dim)));
    Legacy { dims, tensors }
}

impl Legacy {
    fn get(&self, kind: TensorKind, layer: usize) -> &[f32] {
        &self.tensors.iter().find(|(k, l, _)| *k == kind && *l == layer).unwrap().2
    }
}

/// llama2.c export.py `quantize_q80`: groups of `gs` over the flattened tensor,
/// scale = max|w| / 127, q = round(w / scale).
fn quantize_q80(w: &[f32], gs: usize) -> (Vec<i8>, Vec<f32>) {
    let mut q = Vec::with_capacity(w.len());
    let mut scales = Vec::new();
    for g in w.chunks(gs) {
        let wmax = g.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let scale = wmax / 127.0;
        scales.push(scale);
        // torch.round rounds half to even.
        q.extend(g.iter().map(|&v| if scale == 0.0 { 0 } else { (v / scale).round_ties_even() as i8 }));
    }
    (q, scales)
}

/// Writes stories260K as a llama2.c version 2 (runq.c) file with group size `gs`.
fn write_v2(path: &Path, gs: usize) -> Vec<(TensorKind, usize, Vec<i8>, Vec<f32>)> {
    let m = read_legacy();
    let mut out = Vec::new();
    out.extend_from_slice(&0x616b_3432u32.to_le_bytes());
    out.extend_from_slice(&2i32.to_le_bytes());
    for d in m.dims {
        out.extend_from_slice(&(d as i32).to_le_bytes());
    }
    out.push(1); // shared classifier
    out.extend_from_slice(&(gs as i32).to_le_bytes());
    out.resize(256, 0);
    let layers = m.dims[2];
    let f32s = |out: &mut Vec<u8>, v: &[f32]| v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
    for kind in [TensorKind::AttnNorm, TensorKind::FfnNorm] {
        for l in 0..layers {
            f32s(&mut out, m.get(kind, l));
        }
    }
    f32s(&mut out, m.get(TensorKind::FinalNorm, 0));
    let mut order = vec![(TensorKind::Embedding, 0)];
    for kind in
        [TensorKind::Wq, TensorKind::Wk, TensorKind::Wv, TensorKind::Wo, TensorKind::W1, TensorKind::W2, TensorKind::W3]
    {
        order.extend((0..layers).map(|l| (kind, l)));
    }
    let mut stored = Vec::new();
    for (kind, l) in order {
        let (q, sc) = quantize_q80(m.get(kind, l), gs);
        out.extend(q.iter().map(|&v| v as u8));
        f32s(&mut out, &sc);
        stored.push((kind, l, q, sc));
    }
    std::fs::write(path, out).unwrap();
    stored
}

fn eval_json(model: &Path, extra: &[&str]) -> Value {
    let text = dev_text();
    let mut args = vec!["eval", s(model), "--text", s(&text), "--json"];
    args.extend_from_slice(extra);
    last_json(&run_ok(&args).0)
}

#[test]
fn convert_q8_0_meets_its_targets_on_a_slice() {
    let f32m = f32_model();
    let q8 = converted("q8_0", &["--dtype", "q8_0"]);
    let j = eval_json(&q8, &["--reference", s(&f32m), "--max-tokens", "400"]);
    assert_eq!(j["tokens"], 400);
    let (ppl, ref_ppl) = (j["perplexity"].as_f64().unwrap(), j["reference_perplexity"].as_f64().unwrap());
    let kl = j["kl_divergence"].as_f64().unwrap();
    let top1 = j["top1_agreement"].as_f64().unwrap();
    // Loose bounds (the full-text figures are +0.1% and 0.0009): a broken kernel fails all of them.
    assert!(ppl > 1.0 && ppl < ref_ppl * 1.02, "q8_0 perplexity {ppl} vs f32 {ref_ppl}");
    assert!((0.0..0.005).contains(&kl), "KL {kl}");
    assert!(top1 > 95.0, "top-1 agreement {top1}");
    assert!(j["greedy_common_prefix"].as_u64().unwrap() >= 16, "{j}");
}

#[test]
fn eval_json_without_reference_has_perplexity_and_tokens_only() {
    let j = eval_json(&f32_model(), &["--max-tokens", "120", "--ctx", "64"]);
    assert_eq!(j["tokens"], 120);
    assert_eq!(j["ctx"], 64);
    let ppl = j["perplexity"].as_f64().unwrap();
    assert!(ppl > 1.5 && ppl < 20.0, "{ppl}");
    assert!(j.get("kl_divergence").is_none() && j.get("top1_agreement").is_none());
    // A model against itself: zero divergence, full agreement.
    let j = eval_json(&f32_model(), &["--max-tokens", "50", "--reference", s(&f32_model())]);
    assert_eq!(j["kl_divergence"].as_f64().unwrap(), 0.0);
    assert_eq!(j["top1_agreement"].as_f64().unwrap(), 100.0);
    assert_eq!(j["greedy_common_prefix"], 256);
}

#[test]
fn eval_bad_input_is_an_error() {
    let (code, _, err) = run(&["eval", s(&f32_model()), "--text", "/nonexistent/text.txt"]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot read text"), "{err}");
    let (code, _, err) = run(&["eval", s(&f32_model()), "--text", s(&dev_text()), "--ctx", "1"]);
    assert_eq!(code, 1);
    assert!(err.contains("--ctx"), "{err}");
}

#[test]
fn convert_with_overrides_reports_every_tensor() {
    let out = scratch("q4e8.mlm");
    let (bin, tok) = (model_path("stories260K.bin"), model_path("tok512.bin"));
    let (stdout, stderr) = run_ok(&[
        "convert",
        s(&bin),
        "--tokenizer",
        s(&tok),
        "--dtype",
        "q4_0",
        "--tensor-dtype",
        "embedding=q8_0",
        "--tensor-dtype",
        "w2=f16",
        "--json",
        "-o",
        s(&out),
    ]);
    assert!(stderr.contains("cosine") && stderr.contains("layers.4.w3"), "{stderr}");
    let j = last_json(&stdout);
    let tensors = j["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), 2 + 9 * 5);
    let find = |name: &str| tensors.iter().find(|t| t["name"] == name).unwrap();
    assert_eq!(find("embedding")["dtype"], "q8_0");
    assert_eq!(find("layers.0.wq")["dtype"], "q4_0");
    assert_eq!(find("layers.2.w2")["dtype"], "f16");
    assert_eq!(find("final_norm")["dtype"], "f32");
    assert_eq!(find("final_norm")["rmse"].as_f64().unwrap(), 0.0);
    // embedding: 512 rows × 2 blocks × 34 bytes; w1: 172 rows × 2 blocks × 18 bytes.
    assert_eq!(find("embedding")["bytes"], 512 * 2 * 34);
    assert_eq!(find("layers.1.w1")["bytes"], 172 * 2 * 18);
    for t in tensors {
        let cos = t["cosine"].as_f64().unwrap();
        assert!(cos > 0.99, "{t}");
        assert!(t["max_abs_error"].as_f64().unwrap() >= t["rmse"].as_f64().unwrap());
    }
    let words = read_aligned(&out);
    let model = Model::parse(bytes_of(&words)).unwrap();
    assert_eq!(model.dtype(TensorKind::Embedding), DType::Q8_0);
    assert_eq!(model.dtype(TensorKind::W2), DType::F16);
    assert_eq!(model.dtype(TensorKind::AttnNorm), DType::F32);
}

#[test]
fn q4_0_pads_rows_of_172_and_runs_like_f32() {
    // w2 has 172 columns: 6 blocks per row, the last one padded with 20 zeros.
    let q4 = converted("q4_0", &["--dtype", "q4_0"]);
    let words = read_aligned(&q4);
    let model = Model::parse(bytes_of(&words)).unwrap();
    let w2 = model.matrix(TensorKind::W2, 0).unwrap();
    assert_eq!((w2.rows, w2.cols, w2.data.len()), (64, 172, 64 * 6 * 18));
    let f32w = read_aligned(&f32_model());
    let reference = Model::parse(bytes_of(&f32w)).unwrap();

    let ctx = 32;
    let plan = model.plan(ctx, microlm::KvDtype::F32).unwrap();
    let f32_plan = reference.plan(ctx, microlm::KvDtype::F32).unwrap();
    assert_eq!(plan.act_quant, 6 * 72, "scratch for ceil(172/32) prepared q8 blocks");
    assert_eq!(f32_plan.act_quant, 0);
    let sum = plan.activations + plan.kv_cache + plan.logits + plan.sampler + plan.act_quant;
    assert_eq!(plan.total, sum);
    let mut small = vec![0u32; plan.total / 4];
    let too_small = bytemuck::cast_slice_mut::<u32, u8>(&mut small);
    let short = too_small.len() - 1;
    assert!(matches!(
        Session::new(&model, &mut too_small[..short], ctx, microlm::KvDtype::F32),
        Err(microlm::SessionError::ArenaTooSmall { .. })
    ));

    let mut a = vec![0u32; plan.total.div_ceil(4)];
    let mut b = vec![0u32; f32_plan.total.div_ceil(4)];
    let mut qs = Session::new(&model, bytemuck::cast_slice_mut(&mut a), ctx, microlm::KvDtype::F32).unwrap();
    let mut fs = Session::new(&reference, bytemuck::cast_slice_mut(&mut b), ctx, microlm::KvDtype::F32).unwrap();
    let tokens = [1u32, 403, 407, 261, 378, 267, 365, 347];
    let mut cos_min = 1.0f64;
    for (pos, &t) in tokens.iter().enumerate() {
        let q = qs.forward(t, pos).unwrap().to_vec();
        let f = fs.forward(t, pos).unwrap().to_vec();
        let dot: f64 = q.iter().zip(&f).map(|(&x, &y)| f64::from(x) * f64::from(y)).sum();
        let nq: f64 = q.iter().map(|&x| f64::from(x).powi(2)).sum();
        let nf: f64 = f.iter().map(|&x| f64::from(x).powi(2)).sum();
        cos_min = cos_min.min(dot / (nq.sqrt() * nf.sqrt()));
    }
    assert!(cos_min > 0.97, "q4_0 logits drift from f32: cosine {cos_min}");
}

#[test]
fn quantize_requantizes_float_files_and_refuses_quantized_ones() {
    let out = scratch("requant-q8.mlm");
    let (stdout, _) = run_ok(&["quantize", s(&f32_model()), "--dtype", "q8_0", "--json", "-o", s(&out)]);
    let j = last_json(&stdout);
    assert_eq!(j["file_bytes"].as_u64().unwrap(), std::fs::metadata(&out).unwrap().len());
    // Same bytes as converting straight from the checkpoint.
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(converted("q8_0", &["--dtype", "q8_0"])).unwrap());

    // Same dtype: tensors are copied. Another block dtype: refused with a clear error.
    let again = scratch("requant-q8-again.mlm");
    run_ok(&["quantize", s(&out), "--dtype", "q8_0", "-o", s(&again)]);
    let (code, _, err) = run(&["quantize", s(&out), "--dtype", "q4_0", "-o", s(&scratch("x.mlm"))]);
    assert_eq!(code, 1);
    assert!(err.contains("already q8_0") && err.contains("re-quantized"), "{err}");

    let f32m = f32_model();
    for (args, needle) in [
        (vec!["--dtype", "q5_0"], "invalid value 'q5_0' for '--dtype"),
        (vec!["--dtype", "q4_0", "--tensor-dtype", "final_norm=q8_0"], "always stored as f32"),
        (vec!["--dtype", "q4_0", "--tensor-dtype", "classifier=q8_0"], "shared with the embedding"),
        (vec!["--dtype", "q4_0", "--tensor-dtype", "bogus=q8_0"], "unknown tensor kind"),
        (vec!["--dtype", "q4_0", "--calibrate", "/nonexistent.txt"], "calibration text"),
    ] {
        let dst = scratch("bad.mlm");
        let mut full = vec!["quantize", s(&f32m)];
        full.extend(args);
        full.extend(["-o", s(&dst)]);
        let (code, _, err) = run(&full);
        assert_ne!(code, 0, "{full:?}");
        assert!(err.contains(needle), "{full:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn calibrated_q4_0_has_lower_output_error_than_round_to_nearest() {
    // Calibrate on the model's own kind of text, then compare both files' perplexity on a slice.
    let calib = scratch("calib.txt");
    let text = std::fs::read_to_string(dev_text()).unwrap();
    std::fs::write(&calib, &text[text.len() - 60_000..]).unwrap();
    let cal = converted("q4_0-cal", &["--dtype", "q4_0", "--calibrate", s(&calib), "--calibrate-tokens", "6000"]);
    let rtn = converted("q4_0", &["--dtype", "q4_0"]);
    let f32m = f32_model();
    let slice = ["--reference", s(&f32m), "--max-tokens", "1500"];
    let jc = eval_json(&cal, &slice);
    let jr = eval_json(&rtn, &slice);
    let (kc, kr) = (jc["kl_divergence"].as_f64().unwrap(), jr["kl_divergence"].as_f64().unwrap());
    assert!(kc < kr, "calibrated KL {kc} should beat round-to-nearest {kr}");
    assert!(std::fs::read(&cal).unwrap() != std::fs::read(&rtn).unwrap());
}

#[test]
fn llama2c_version2_import_keeps_int8_values() {
    for gs in [32usize, 64] {
        let v2 = scratch(&format!("v2-gs{gs}.bin"));
        let stored = write_v2(&v2, gs);
        let out = scratch(&format!("v2-gs{gs}.mlm"));
        let (stdout, stderr) =
            run_ok(&["convert", s(&v2), "--tokenizer", s(&model_path("tok512.bin")), "--json", "-o", s(&out)]);
        assert!(stderr.contains("version 2"), "{stderr}");
        let report = last_json(&stdout);
        let words = read_aligned(&out);
        let model = Model::parse(bytes_of(&words)).unwrap();
        assert_eq!(model.dtype(TensorKind::Wq), DType::Q8_0, "version 2 imports as q8_0 by default");
        for (kind, layer, q, scales) in &stored {
            let m = model.matrix(*kind, *layer).unwrap();
            let mut row = vec![0.0f32; m.cols];
            let mut max_err = 0.0f32;
            for r in 0..m.rows {
                m.row_to_f32(r, &mut row);
                for (c, &v) in row.iter().enumerate() {
                    let i = r * m.cols + c;
                    // The file's value with its group scale rounded to f16 (the q8_0 scale type).
                    let scale = half_round(scales[i / gs]);
                    let expect = f32::from(q[i]) * scale;
                    if m.cols.is_multiple_of(32) {
                        assert_eq!(v, expect, "{kind:?} {layer} [{r},{c}] passes through bit for bit");
                    }
                    max_err = max_err.max((v - f32::from(q[i]) * scales[i / gs]).abs());
                }
            }
            // w2 (172 columns) is dequantized and re-quantized: within one q8_0 step.
            let amax = scales.iter().fold(0.0f32, |a, &b| a.max(b)) * 127.0;
            assert!(max_err <= amax / 127.0, "{kind:?} {layer}: {max_err}");
        }
        let tensors = report["tensors"].as_array().unwrap();
        let w1 = tensors.iter().find(|t| t["name"] == "layers.0.w1").unwrap();
        assert!(w1["rmse"].as_f64().unwrap() < 1e-3, "pass-through only rounds scales to f16: {w1}");
        let j = eval_json(&out, &["--reference", s(&f32_model()), "--max-tokens", "300"]);
        assert!(j["kl_divergence"].as_f64().unwrap() < 0.01, "{j}");
    }
    // A truncated version 2 file is an error naming the problem.
    let v2 = scratch("v2-gs32.bin");
    let bytes = std::fs::read(&v2).unwrap();
    let cut = scratch("v2-cut.bin");
    std::fs::write(&cut, &bytes[..bytes.len() - 100]).unwrap();
    let (code, _, err) =
        run(&["convert", s(&cut), "--tokenizer", s(&model_path("tok512.bin")), "-o", s(&scratch("cut.mlm"))]);
    assert_eq!(code, 1);
    assert!(err.contains("truncated"), "{err}");
}

/// f32 → f16 → f32 (round to nearest even).
fn half_round(v: f32) -> f32 {
    let bytes = microlm::write::f16_bytes(v);
    let mut out = [0.0f32];
    microlm::kernels::f16::to_f32(&bytes, &mut out);
    out[0]
}

#[test]
fn reader_rejects_quantized_norms() {
    let words = read_aligned(&f32_model());
    let model = Model::parse(bytes_of(&words)).unwrap();
    let vocab = microlm::write::Vocab {
        pieces: (0..512).map(|i| model.tokenizer().piece(i).unwrap().to_vec()).collect(),
        scores: (0..512).map(|i| model.tokenizer().as_sentencepiece().unwrap().score(i)).collect(),
    };
    let mut dtypes = [DType::Q8_0; 12];
    dtypes[TensorKind::FfnNorm.index()] = DType::Q8_0;
    let spec =
        microlm::write::ModelSpec { name: "bad", source: "test", config: *model.config(), dtypes, vocab: &vocab };
    let bytes = microlm::write::write_model(&spec, |e| {
        let m = model.matrix(e.kind, e.layer as usize).unwrap();
        let values = microlm::write::decode_tensor(m.dtype, m.rows, m.cols, m.data);
        Ok(microlm::quant::encode_rows(e.dtype, m.cols, &values, None))
    })
    .unwrap();
    let mut words = vec![0u32; bytes.len().div_ceil(4)];
    bytemuck::cast_slice_mut::<u32, u8>(&mut words)[..bytes.len()].copy_from_slice(&bytes);
    let err = Model::parse(&bytemuck::cast_slice::<u32, u8>(&words)[..bytes.len()]).unwrap_err();
    assert!(matches!(err, microlm::FormatError::TensorDtype { .. }), "{err:?}");
}
