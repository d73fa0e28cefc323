//! GPTQ and the byte budget on stories260K: calibration on the first half of
//! `tinystories_dev.txt` (`--calibrate-half first`), evaluation on a fixed slice of
//! the second half (`eval --half second --max-tokens N`), so no scored story was seen
//! during calibration.

use std::path::{Path, PathBuf};

use microlm::format::{DType, TensorKind};
use microlm::quant::encode_rows;
use microlm::write::decode_tensor;
use microlm::{KvDtype, Model, Session};
use microlm_cli::gptq::{self, Hessian};
use microlm_cli::load::ModelFile;
use microlm_tests::{converted, run_cli, scratch_dir, shared_file};

/// Tokens of the second half scored by the CLI tests.
const EVAL_TOKENS: &str = "8000";

fn dev_text() -> PathBuf {
    shared_file("data/tinystories_dev.txt")
}

/// `eval MODEL --half second --reference f32 --json`: (ΔPPL %, KL, weight bytes).
fn eval(model: &Path) -> (f64, f64, u64) {
    let f32_file = converted("f32");
    let (code, out, err) = run_cli([
        "eval".as_ref(),
        model.as_os_str(),
        "--text".as_ref(),
        dev_text().as_os_str(),
        "--half".as_ref(),
        "second".as_ref(),
        "--max-tokens".as_ref(),
        EVAL_TOKENS.as_ref(),
        "--reference".as_ref(),
        f32_file.as_os_str(),
        "--json".as_ref(),
    ]);
    assert_eq!(code, 0, "eval failed: {err}");
    let j: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    let dppl = 100.0 * (j["perplexity"].as_f64().unwrap() / j["reference_perplexity"].as_f64().unwrap() - 1.0);
    (dppl, j["kl_divergence"].as_f64().unwrap(), j["weight_bytes"].as_u64().unwrap())
}

/// `quantize f32 ARGS... --calibrate dev --calibrate-half first -o OUT`; returns stderr.
fn quantize(args: &[&str], out: &Path) -> String {
    let (f32_file, text) = (converted("f32"), dev_text());
    let mut words: Vec<&std::ffi::OsStr> = vec!["quantize".as_ref(), f32_file.as_os_str()];
    words.extend(args.iter().map(std::ffi::OsStr::new));
    words.extend(["--calibrate".as_ref(), text.as_os_str(), "--calibrate-half".as_ref(), "first".as_ref()]);
    words.extend(["-o".as_ref(), out.as_os_str()]);
    let (code, _, err) = run_cli(words);
    assert_eq!(code, 0, "quantize failed: {err}");
    err
}

/// Σ x xᵀ of every matmul input over the first stories of the calibration half.
fn hessians(model: &Model<'_>, tokens: usize) -> Vec<((TensorKind, usize), Hessian)> {
    let text = std::fs::read_to_string(dev_text()).unwrap();
    let slice = &text[..20_000];
    let tok = model.tokenizer();
    let mut ids = vec![0u32; microlm::tokenizer::Tokenizer::encode_workspace(slice.as_bytes())];
    let n = tok.encode(slice.as_bytes(), true, false, &mut ids).unwrap();
    let ctx = model.config().seq_len;
    let mut arena = vec![0u32; model.plan(ctx, KvDtype::F32).unwrap().total.div_ceil(4)];
    let mut session = Session::new(model, bytemuck::cast_slice_mut(&mut arena), ctx, KvDtype::F32).unwrap();
    let mut hs: Vec<((TensorKind, usize), Hessian)> = Vec::new();
    for (i, &t) in ids[..n.min(tokens)].iter().enumerate() {
        session
            .forward_observed(t, i % ctx, |kind, layer, x| match hs.iter_mut().find(|(k, _)| *k == (kind, layer)) {
                Some((_, h)) => h.add(x),
                None => {
                    let mut h = Hessian::new(x.len());
                    h.add(x);
                    hs.push(((kind, layer), h));
                }
            })
            .unwrap();
    }
    hs
}

#[test]
fn gptq_lowers_the_calibration_layer_output_error_against_round_to_nearest() {
    let file = ModelFile::read(&converted("f32")).unwrap();
    let model = file.parse(false).unwrap();
    let hs = hessians(&model, 2048);
    let find = |kind, layer| &hs.iter().find(|(k, _)| *k == (kind, layer)).unwrap().1;
    for dtype in [DType::Q4_0, DType::Q8_0] {
        let (mut total_rtn, mut total_gptq) = (0.0, 0.0);
        for layer in 0..model.config().n_layers {
            for (kind, input) in [
                (TensorKind::Wq, TensorKind::Wq),
                (TensorKind::Wk, TensorKind::Wq),
                (TensorKind::Wv, TensorKind::Wq),
                (TensorKind::Wo, TensorKind::Wo),
                (TensorKind::W1, TensorKind::W1),
                (TensorKind::W3, TensorKind::W1),
                (TensorKind::W2, TensorKind::W2),
            ] {
                let m = model.matrix(kind, layer).unwrap();
                let w = decode_tensor(m.dtype, m.rows, m.cols, m.data);
                let h = find(input, layer);
                let rtn = decode_tensor(dtype, m.rows, m.cols, &encode_rows(dtype, m.cols, &w, None));
                let bytes = gptq::quantize(dtype, m.rows, m.cols, &w, h, gptq::Settings::default()).unwrap();
                let g = decode_tensor(dtype, m.rows, m.cols, &bytes);
                let (e_rtn, e_g) =
                    (gptq::output_error(m.rows, m.cols, &w, &rtn, h), gptq::output_error(m.rows, m.cols, &w, &g, h));
                assert!(e_g < e_rtn, "{dtype:?} layer {layer} {}: GPTQ {e_g:.3e} vs RTN {e_rtn:.3e}", kind.name());
                (total_rtn, total_gptq) = (total_rtn + e_rtn, total_gptq + e_g);
            }
        }
        assert!(total_gptq < 0.75 * total_rtn, "{dtype:?}: GPTQ {total_gptq:.3e} vs RTN {total_rtn:.3e}");
    }
}

#[test]
fn gptq_q4_0_file_loads_runs_and_beats_the_calibrated_search() {
    let dir = scratch_dir("gptq");
    let (gptq_file, imat_file) = (dir.join("q4_0-gptq.mlm"), dir.join("q4_0-imatrix.mlm"));
    let all = ["--calibrate-tokens", "0"];
    let err =
        quantize(&[&all[..], &["--dtype", "q4_0", "--tensor-dtype", "embedding=q8_0", "--gptq"]].concat(), &gptq_file);
    assert!(err.contains("(first part)"), "{err}");
    quantize(&[&all[..], &["--dtype", "q4_0", "--tensor-dtype", "embedding=q8_0"]].concat(), &imat_file);
    let (g_dppl, g_kl, g_bytes) = eval(&gptq_file);
    let (i_dppl, i_kl, i_bytes) = eval(&imat_file);
    assert_eq!((g_bytes, i_bytes), (168_672, 168_672));
    assert!(g_dppl < i_dppl - 0.5 && g_kl < 0.85 * i_kl, "GPTQ {g_dppl:+.2}% {g_kl:.4} vs {i_dppl:+.2}% {i_kl:.4}");
    assert!(g_dppl < 6.8 && g_kl < 0.056, "GPTQ {g_dppl:+.2}% KL {g_kl:.4}");
    // The file generates text like any other.
    let (code, out, err) = run_cli([
        "generate".as_ref(),
        gptq_file.as_os_str(),
        "-n".as_ref(),
        "40".as_ref(),
        "-t".as_ref(),
        "0".as_ref(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.split_whitespace().count() > 5, "{out:?}");
}

/// `--budget 150K --fold-norms`: with the attention and FFN norms folded into
/// the matrices after them every weight fits in q4_0 (149,728 bytes), within
/// +9 % perplexity of f32; folding alone computes what the unfolded file does
/// (the same logits up to rounding), and a folded file cannot be folded again.
#[test]
fn a_150k_budget_fits_with_folded_norms() {
    let dir = scratch_dir("gptq");
    let out = dir.join("budget-150K.mlm");
    let err = quantize(&["--budget", "150K", "--fold-norms", "--gptq", "--calibrate-tokens", "0"], &out);
    assert!(err.contains("layers.0.attn_norm   ones"), "{err}");
    let (dppl, kl, bytes) = eval(&out);
    assert!(bytes <= 150_000, "{bytes} weight bytes");
    assert!(dppl < 9.0, "{dppl:+.2}% KL {kl:.4}");
    // Folding alone (f32 in, f32 out) changes the logits by rounding only.
    let folded = dir.join("f32-folded.mlm");
    let f32_file = converted("f32");
    let (code, _, err) = run_cli([
        "quantize".as_ref(),
        f32_file.as_os_str(),
        "--dtype".as_ref(),
        "f32".as_ref(),
        "--fold-norms".as_ref(),
        "-o".as_ref(),
        folded.as_os_str(),
    ]);
    assert_eq!(code, 0, "{err}");
    let (dppl, kl, bytes) = eval(&folded);
    assert_eq!(bytes, 1_040_128 - 2 * 5 * 64 * 4);
    assert!(dppl.abs() < 0.001 && kl < 1e-6, "folding alone: {dppl:+.4}% KL {kl:e}");
    // Quantizing a folded file again is refused: its norms are gone.
    let (code, _, err) = run_cli([
        "quantize".as_ref(),
        folded.as_os_str(),
        "--dtype".as_ref(),
        "q4_0".as_ref(),
        "--fold-norms".as_ref(),
        "-o".as_ref(),
        dir.join("twice.mlm").as_os_str(),
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("already folded"), "{err}");
}

/// q4_16 (a scale per 16 values) costs 5 bits per weight, q4_0 with a q8_0
/// embedding about the same bytes: GPTQ q4_16 throughout is the better file.
#[test]
fn gptq_q4_16_beats_q4_0_with_a_q8_0_embedding_at_the_same_bytes() {
    let dir = scratch_dir("gptq");
    let (q416, q40) = (dir.join("q4_16-gptq.mlm"), dir.join("q4_0-q8emb-gptq.mlm"));
    let all = ["--calibrate-tokens", "0"];
    quantize(&[&all[..], &["--dtype", "q4_16", "--gptq"]].concat(), &q416);
    quantize(&[&all[..], &["--dtype", "q4_0", "--tensor-dtype", "embedding=q8_0", "--gptq"]].concat(), &q40);
    let (a_dppl, a_kl, a_bytes) = eval(&q416);
    let (b_dppl, b_kl, b_bytes) = eval(&q40);
    assert_eq!((a_bytes, b_bytes), (168_896, 168_672));
    assert!(
        a_dppl < b_dppl - 0.5 && a_kl < 0.95 * b_kl,
        "q4_16 {a_dppl:+.2}% {a_kl:.4} vs q4_0 {b_dppl:+.2}% {b_kl:.4}"
    );
    assert!(a_dppl < 5.0 && a_kl < 0.05, "q4_16 GPTQ {a_dppl:+.2}% KL {a_kl:.4}");
}

#[test]
fn gptq_q8_0_stays_within_the_q8_0_bounds() {
    let out = scratch_dir("gptq").join("q8_0-gptq.mlm");
    quantize(&["--dtype", "q8_0", "--gptq"], &out);
    let (dppl, kl, _) = eval(&out);
    assert!(dppl.abs() <= 0.2 && kl <= 0.0012, "q8_0 GPTQ {dppl:+.3}% KL {kl:.5}");
}

#[test]
fn a_170k_budget_fits_and_holds_its_quality() {
    let dir = scratch_dir("gptq");
    let (out, svg) = (dir.join("budget-170K.mlm"), dir.join("budget-170K-tensors.svg"));
    let svg_arg = svg.to_str().unwrap();
    let err = quantize(
        &["--budget", "170K", "--gptq", "--calibrate-tokens", "0", "--budget-tokens", "2048", "--plot", svg_arg],
        &out,
    );
    assert!(err.contains("budget: chose"), "{err}");
    assert!(err.contains("KL predicted"), "{err}");
    // The mix the budget chose uses the 16-value scale groups somewhere.
    let chose = err.lines().find(|l| l.starts_with("budget: chose")).unwrap();
    assert!(chose.contains("=q4_16"), "{chose}");
    let (dppl, kl, bytes) = eval(&out);
    assert!(bytes <= 170_000, "{bytes} weight bytes");
    // The quality target for stories260K within 170,000 weight bytes: ΔPPL ≤ +5 %, KLD ≤ 0.05.
    assert!(dppl < 5.0 && kl < 0.05, "{dppl:+.2}% KL {kl:.4}");
    let text = std::fs::read_to_string(&svg).unwrap();
    assert_well_formed_svg(&text);
    assert!(text.contains("layers.4.w2"), "the per-tensor plot names the tensors");
    // The mix (q4_0, q4_16 and q8_0 kinds in one file) runs on the Cortex-M4F with the host's tokens.
    let flags = ["-p", "Once upon a time", "-n", "64", "-t", "0.8", "-s", "3", "--json"];
    let ids = |command: &str| {
        let mut words: Vec<std::ffi::OsString> = vec![command.into(), out.clone().into()];
        words.extend(flags.iter().map(Into::into));
        let (code, stdout, err) = run_cli(words);
        assert_eq!(code, 0, "{command}: {err}");
        let j: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
        j["ids"].clone()
    };
    assert_eq!(ids("qemu"), ids("generate"), "mps2-an386 ids differ from the host's");
    // A budget below the cheapest mix is refused with the reason.
    let (code, _, err) = run_cli([
        "quantize".as_ref(),
        converted("f32").as_os_str(),
        "--budget".as_ref(),
        "100K".as_ref(),
        "--calibrate".as_ref(),
        dev_text().as_os_str(),
        "--calibrate-tokens".as_ref(),
        "64".as_ref(),
        "-o".as_ref(),
        dir.join("too-small.mlm").as_os_str(),
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("the cheapest mix") && err.contains("does not fit"), "{err}");
    assert!(err.contains("(--fold-norms stores 2560 bytes less)"), "{err}");
}

#[test]
fn eval_plots_delta_ppl_against_weight_bytes() {
    let dir = scratch_dir("gptq-plot");
    let svg = dir.join("report.svg");
    let (q8, q4) = (converted("q8_0"), converted("q4_0"));
    let (code, out, err) = run_cli([
        "eval".as_ref(),
        q8.as_os_str(),
        q4.as_os_str(),
        "--text".as_ref(),
        dev_text().as_os_str(),
        "--half".as_ref(),
        "second".as_ref(),
        "--max-tokens".as_ref(),
        "300".as_ref(),
        "--reference".as_ref(),
        converted("f32").as_os_str(),
        "--plot".as_ref(),
        svg.as_os_str(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.matches("perplexity  ").count(), 2, "{out}");
    let text = std::fs::read_to_string(&svg).unwrap();
    assert_well_formed_svg(&text);
    assert!(text.contains("stories260K-q8_0.mlm") && text.contains("stories260K-q4_0.mlm"), "labels");
    assert_eq!(text.matches("<circle").count(), 2, "one point per file");
}

/// Every tag is closed in order and the document is one `<svg>` element.
fn assert_well_formed_svg(text: &str) {
    let doc = roxmltree::Document::parse(text).unwrap_or_else(|e| panic!("not well-formed XML: {e}"));
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    assert!(doc.root_element().descendants().filter(|n| n.has_tag_name("text")).count() >= 3, "labels");
}
