//! Careless and hostile command lines: numbers that are not finite, inputs
//! without a bound, outputs that would destroy inputs. Each test runs the built
//! `microlm` and expects one specific error line and exit 1 (or the right result).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use microlm_tests::{cli, converted, run_cli, run_convert, scratch_dir, shared};

fn models() -> PathBuf {
    shared().join("models")
}

fn checkpoint() -> PathBuf {
    models().join("stories260K.bin")
}

fn tok512() -> PathBuf {
    models().join("tok512.bin")
}

/// A fresh, empty scratch directory for one test.
fn fresh(name: &str) -> PathBuf {
    let dir = scratch_dir("careless").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Names in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

/// Asserts a failed run: exit 1 and exactly one line on stderr containing every one of `needles`.
fn assert_one_line_error(code: i32, err: &str, needles: &[&str]) {
    assert_eq!(code, 1, "expected exit 1, stderr: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one error line, got: {err}");
    for n in needles {
        assert!(lines[0].contains(n), "error line {:?} does not mention {n:?}", lines[0]);
    }
}

/// Tensors of a synthetic llama2.c checkpoint (legacy layout, shared classifier,
/// vocab 512 to match tok512.bin): dim 32, hidden 32, 1 layer, 1 head, seq_len 8.
struct Synthetic {
    embedding: Vec<f32>,
    attn_norm: Vec<f32>,
    wq: Vec<f32>,
    wk: Vec<f32>,
    wv: Vec<f32>,
    wo: Vec<f32>,
    ffn_norm: Vec<f32>,
    w1: Vec<f32>,
    w2: Vec<f32>,
    w3: Vec<f32>,
    final_norm: Vec<f32>,
}

const DIM: usize = 32;
const VOCAB: usize = 512;
const SEQ: usize = 8;

impl Synthetic {
    fn new() -> Synthetic {
        let wave = |n: usize, k: f32| (0..n).map(|i| (i as f32 * k).sin() * 0.1).collect::<Vec<f32>>();
        Synthetic {
            embedding: wave(VOCAB * DIM, 0.37), // vocab × dim
            attn_norm: vec![1.0; DIM],          // dim
            wq: wave(DIM * DIM, 0.11),          // dim × dim
            wk: wave(DIM * DIM, 0.13),          // kv_dim × dim
            wv: wave(DIM * DIM, 0.17),          // kv_dim × dim
            wo: wave(DIM * DIM, 0.19),          // dim × dim
            ffn_norm: vec![1.0; DIM],           // dim
            w1: wave(DIM * DIM, 0.23),          // hidden × dim
            w2: wave(DIM * DIM, 0.29),          // dim × hidden
            w3: wave(DIM * DIM, 0.31),          // hidden × dim
            final_norm: vec![1.0; DIM],         // dim
        }
    }

    /// Writes the legacy llama2.c layout: 7 × i32 header, the tensors, the two RoPE tables.
    fn write(&self, path: &Path) -> PathBuf {
        let mut b = Vec::new();
        for v in [DIM, DIM, 1, 1, 1, VOCAB, SEQ] {
            b.extend_from_slice(&(v as i32).to_le_bytes());
        }
        let rope = vec![0.0f32; SEQ * DIM]; // 2 × seq_len × head_size / 2
        for t in [
            &self.embedding,
            &self.attn_norm,
            &self.wq,
            &self.wk,
            &self.wv,
            &self.wo,
            &self.ffn_norm,
            &self.w1,
            &self.w2,
            &self.w3,
            &self.final_norm,
            &rope,
        ] {
            for v in t.iter() {
                b.extend_from_slice(&v.to_le_bytes());
            }
        }
        std::fs::write(path, b).unwrap();
        path.to_path_buf()
    }
}

/// Converts `ckpt` with tok512 and `extra` flags into `dir/out.mlm`.
fn convert_synthetic(ckpt: &Synthetic, dir: &Path, extra: &[&str]) -> (i32, String, PathBuf) {
    let bin = ckpt.write(&dir.join("synthetic.bin"));
    let out = dir.join("out.mlm");
    let (code, _, err) = run_convert(&bin, &tok512(), extra, &out);
    (code, err, out)
}

// ---------------------------------------------------------------- non-finite numbers

#[test]
fn a_temperature_too_small_to_divide_by_gives_the_greedy_story() {
    let model = converted("f32");
    let run = |t: &str| {
        let m = model.as_os_str();
        let (code, out, err) = run_cli([
            "generate".as_ref(),
            m,
            "-p".as_ref(),
            "Once upon a time".as_ref(),
            "-t".as_ref(),
            t.as_ref(),
            "-s".as_ref(),
            "3".as_ref(),
            "-n".as_ref(),
            "20".as_ref(),
        ]);
        assert_eq!(code, 0, "{err}");
        out
    };
    let greedy = run("0");
    assert_eq!(greedy.trim_end(), "Once upon a time, there was a little girl named Lily. She loved to play");
    for t in ["1e-38", "1e-45", "1e-30"] {
        assert_eq!(run(t), greedy, "-t {t}");
    }
}

#[test]
fn a_forward_pass_with_non_finite_logits_is_an_error_not_a_token() {
    let dir = fresh("nonfinite-logits");
    let mut s = Synthetic::new();
    // Finite weights whose logits overflow: the final norm scales the state by 3e38.
    s.final_norm = vec![3e38; DIM];
    s.embedding.iter_mut().for_each(|v| *v = 1.0);
    let (code, err, out) = convert_synthetic(&s, &dir, &[]);
    assert_eq!(code, 0, "{err}");
    let (code, stdout, err) = run_cli(["generate".as_ref(), out.as_os_str(), "-n".as_ref(), "4".as_ref()]);
    assert_one_line_error(code, &err, &["non-finite logit", "position 0"]);
    assert!(!stdout.contains("<unk>"), "{stdout}");
}

#[test]
fn f16_conversion_refuses_a_weight_beyond_the_f16_range() {
    let dir = fresh("f16-range");
    let mut s = Synthetic::new();
    s.w1[5] = 1e5;
    let (code, err, out) = convert_synthetic(&s, &dir, &["--dtype", "f16"]);
    assert_one_line_error(code, &err, &["layers.0.w1", "index 5", "1e5", "f16"]);
    assert!(!out.exists(), "a refused conversion wrote {}", out.display());
    assert_eq!(listing(&dir), ["synthetic.bin"]);
    // f32 holds it.
    let (code, err, _) = convert_synthetic(&s, &dir, &["--dtype", "f32"]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn saturate_clamps_to_the_largest_finite_value() {
    let dir = fresh("saturate");
    let mut s = Synthetic::new();
    // Beyond every dtype: f16 (65504), q8_0 blocks (65504 × 127), q4_0 and q4_16 blocks (65504 × 8).
    s.w1[5] = 1e9;
    s.w2[7] = -1e9;
    for (dtype, top) in
        [("f16", 65504.0f32), ("q8_0", 65504.0 * 127.0), ("q4_0", 65504.0 * 8.0), ("q4_16", 65504.0 * 8.0)]
    {
        let (code, err, out) = convert_synthetic(&s, &dir, &["--dtype", dtype, "--saturate"]);
        assert_eq!(code, 0, "{dtype}: {err}");
        let file = microlm_tests::ModelFile::read(&out).unwrap();
        let model = file.parse(false).unwrap();
        for (kind, at) in [(microlm::format::TensorKind::W1, 5usize), (microlm::format::TensorKind::W2, 7)] {
            let m = model.matrix(kind, 0).unwrap();
            let v = microlm::write::decode_tensor(m.dtype, m.rows, m.cols, m.data);
            assert!(v.iter().all(|x| x.is_finite()), "{dtype}: non-finite value stored");
            assert!((v[at].abs() - top).abs() <= top * 0.07, "{dtype}: {} is not ±{top}", v[at]);
        }
        let (code, _, err) = run_cli(["generate".as_ref(), out.as_os_str(), "-n".as_ref(), "4".as_ref()]);
        assert_eq!(code, 0, "{dtype}: {err}");
    }
}

#[test]
fn block_scales_that_overflow_f16_are_refused_for_q8_0_and_q4_0() {
    let dir = fresh("block-scales");
    let mut s = Synthetic::new();
    // q8_0: 1e7 / 127 = 78,740 > 65504; q4_0 and q4_16: 1e7 / 8 = 1.25e6.
    s.w1[40] = 1e7;
    for dtype in ["q8_0", "q4_0", "q4_16"] {
        let (code, err, out) = convert_synthetic(&s, &dir, &["--dtype", dtype]);
        assert_one_line_error(code, &err, &["layers.0.w1", "index 40", "1e7", dtype]);
        assert!(!out.exists());
    }
    // quantize from an f32 file refuses the same way.
    let (code, err, f32_out) = convert_synthetic(&s, &dir, &[]);
    assert_eq!(code, 0, "{err}");
    for dtype in ["f16", "q8_0", "q4_0", "q4_16"] {
        let q = dir.join(format!("q-{dtype}.mlm"));
        let (code, _, err) = run_cli([
            "quantize".as_ref(),
            f32_out.as_os_str(),
            "--dtype".as_ref(),
            dtype.as_ref(),
            "-o".as_ref(),
            q.as_os_str(),
        ]);
        assert_one_line_error(code, &err, &["layers.0.w1", "index 40", dtype]);
        assert!(!q.exists());
    }
}

#[test]
fn nan_and_infinite_weights_are_refused_for_every_dtype() {
    let dir = fresh("nan-weights");
    for (bad, shown) in [(f32::NAN, "NaN"), (f32::INFINITY, "inf"), (f32::NEG_INFINITY, "-inf")] {
        let mut s = Synthetic::new();
        s.wv[9] = bad;
        for dtype in ["f32", "f16", "q8_0", "q4_0", "q4_16"] {
            let (code, err, out) = convert_synthetic(&s, &dir, &["--dtype", dtype]);
            assert_one_line_error(code, &err, &["layers.0.wv", "index 9", shown, "not finite"]);
            assert!(!out.exists());
        }
        // Saturation clamps finite values only.
        let (code, err, _) = convert_synthetic(&s, &dir, &["--dtype", "f16", "--saturate"]);
        assert_one_line_error(code, &err, &["layers.0.wv", "index 9", shown, "not finite"]);
    }
}

#[test]
fn non_finite_norm_weights_are_refused() {
    let dir = fresh("nan-norms");
    let mut s = Synthetic::new();
    s.ffn_norm[3] = f32::NAN;
    let (code, err, _) = convert_synthetic(&s, &dir, &[]);
    assert_one_line_error(code, &err, &["layers.0.ffn_norm", "index 3", "NaN"]);
    let mut s = Synthetic::new();
    s.final_norm[31] = f32::INFINITY;
    let (code, err, _) = convert_synthetic(&s, &dir, &["--dtype", "q8_0"]);
    assert_one_line_error(code, &err, &["final_norm", "index 31", "inf"]);
}

#[test]
fn a_non_finite_tokenizer_score_is_refused() {
    let dir = fresh("tokenizer-score");
    let mut tok = std::fs::read(tok512()).unwrap();
    // Token 0's score is the 4 bytes after max_token_length.
    tok[4..8].copy_from_slice(&f32::NAN.to_le_bytes());
    let bad = dir.join("tok.bin");
    std::fs::write(&bad, &tok).unwrap();
    let out = dir.join("out.mlm");
    let (code, _, err) = run_convert(&checkpoint(), &bad, &[], &out);
    assert_one_line_error(code, &err, &["tok.bin", "token 0", "non-finite score"]);
    assert!(!out.exists());
}

// ---------------------------------------------------------------- unbounded inputs

/// Runs `args`, killing it after `limit`; returns (exit code, stderr) and how long it took.
fn run_bounded(args: &[&std::ffi::OsStr], limit: Duration) -> (i32, String, Duration) {
    let bin = cli(); // built before the clock starts
    let start = Instant::now();
    let mut child =
        Command::new(bin).args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            return (status.code().unwrap_or(-1), err, start.elapsed());
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("microlm {args:?} still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn mkfifo(path: &Path) {
    let _ = std::fs::remove_file(path);
    assert!(Command::new("mkfifo").arg(path).status().unwrap().success());
}

#[test]
fn devices_are_not_read_as_model_files() {
    let zero: &std::ffi::OsStr = "/dev/zero".as_ref();
    for cmd in ["inspect", "generate", "bench"] {
        let (code, err, _) = run_bounded(&[cmd.as_ref(), zero], Duration::from_secs(10));
        assert_one_line_error(code, &err, &["/dev/zero is not a regular file"]);
    }
    // A symlink to a regular file is read as the file.
    let link = fresh("input-symlink").join("model-link.mlm");
    std::os::unix::fs::symlink(converted("f32"), &link).unwrap();
    let (code, _, err) = run_cli(["inspect".as_ref(), link.as_os_str()]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn fifos_are_refused_without_blocking_or_reading() {
    let dir = fresh("fifos");
    let fifo = dir.join("input.fifo");
    mkfifo(&fifo);
    let (f, m) = (fifo.as_os_str(), converted("f32"));
    let (ckpt, tok) = (checkpoint(), tok512());
    let out = dir.join("out.mlm");
    let cases: Vec<Vec<&std::ffi::OsStr>> = vec![
        vec!["generate".as_ref(), f],
        vec!["convert".as_ref(), f, "--tokenizer".as_ref(), tok.as_os_str(), "-o".as_ref(), out.as_os_str()],
        vec!["convert".as_ref(), ckpt.as_os_str(), "--tokenizer".as_ref(), f, "-o".as_ref(), out.as_os_str()],
        vec!["eval".as_ref(), m.as_os_str(), "--text".as_ref(), f],
        vec![
            "quantize".as_ref(),
            m.as_os_str(),
            "--dtype".as_ref(),
            "q8_0".as_ref(),
            "--calibrate".as_ref(),
            f,
            "-o".as_ref(),
            out.as_os_str(),
        ],
    ];
    for args in cases {
        let (code, err, _) = run_bounded(&args, Duration::from_secs(10));
        assert_one_line_error(code, &err, &["input.fifo is not a regular file"]);
        assert!(!out.exists());
    }
}

#[test]
fn files_over_the_size_limit_are_refused_with_the_limit() {
    let dir = fresh("limits");
    // Sparse files: no disk space, and no reading of their contents.
    let huge = dir.join("huge.mlm");
    std::fs::File::create(&huge).unwrap().set_len((4 << 30) + 1).unwrap();
    let (code, err, took) = run_bounded(&["inspect".as_ref(), huge.as_os_str()], Duration::from_secs(10));
    assert_one_line_error(code, &err, &["huge.mlm", "model file limit of 4 GiB"]);
    assert!(took < Duration::from_secs(5));
    let text = dir.join("huge.txt");
    std::fs::File::create(&text).unwrap().set_len((256 << 20) + 1).unwrap();
    let m = converted("f32");
    let (code, err, _) =
        run_bounded(&["eval".as_ref(), m.as_os_str(), "--text".as_ref(), text.as_os_str()], Duration::from_secs(10));
    assert_one_line_error(code, &err, &["huge.txt", "text file limit of 256 MiB"]);
    let tok = dir.join("huge-tok.bin");
    std::fs::File::create(&tok).unwrap().set_len((64 << 20) + 1).unwrap();
    let (code, _, err) = run_convert(&checkpoint(), &tok, &[], &dir.join("out.mlm"));
    assert_one_line_error(code, &err, &["huge-tok.bin", "tokenizer limit of 64 MiB"]);
}

// ---------------------------------------------------------------- outputs that destroy inputs

fn bytes(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

/// An output in a missing directory is one line naming the directory and why, not the
/// temporary file's random name.
#[test]
fn an_output_in_a_missing_directory_says_so() {
    let model = converted("f32");
    let out = fresh("missing-dir").join("nowhere").join("x.mlm");
    let (code, _, err) = run_cli([
        "quantize".as_ref(),
        model.as_os_str(),
        "--dtype".as_ref(),
        "q8_0".as_ref(),
        "-o".as_ref(),
        out.as_os_str(),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cannot create a file in") && err.contains("No such file or directory"), "{err}");
    assert!(!err.contains(".partial"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

/// A microlm model file given to `convert` is named as one, not misread as a llama2.c checkpoint.
#[test]
fn convert_names_a_microlm_file_as_one() {
    let model = converted("f32");
    let out = fresh("convert-mlm").join("again.mlm");
    let (code, _, err) = run_cli(["convert".as_ref(), model.as_os_str(), "-o".as_ref(), out.as_os_str()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("is already a microlm model file: use `microlm quantize`"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(!out.exists());
}

#[test]
fn convert_refuses_to_write_over_its_inputs() {
    let dir = fresh("convert-over-input");
    let (ckpt, tok) = (dir.join("stories260K.bin"), dir.join("tok512.bin"));
    std::fs::copy(checkpoint(), &ckpt).unwrap();
    std::fs::copy(tok512(), &tok).unwrap();
    let (ckpt_bytes, tok_bytes) = (bytes(&ckpt), bytes(&tok));
    let hard = dir.join("hard-link.bin");
    std::fs::hard_link(&ckpt, &hard).unwrap();
    let soft = dir.join("soft-link.bin");
    std::os::unix::fs::symlink("tok512.bin", &soft).unwrap();
    let text = dir.join("calibration.txt");
    std::fs::write(&text, "Once upon a time, there was a cat.").unwrap();
    let dotted = dir.join(".").join("stories260K.bin");
    for (out, extra) in [
        (&ckpt, &[][..]),
        (&tok, &[]),
        (&hard, &[]),
        (&soft, &[]),
        (&dotted, &[]),
        (&text, &["--dtype", "q8_0", "--calibrate", text.to_str().unwrap()]),
    ] {
        let (code, _, err) = run_convert(&ckpt, &tok, extra, out);
        assert_one_line_error(code, &err, &["is the input", "the same file"]);
    }
    assert_eq!(bytes(&ckpt), ckpt_bytes);
    assert_eq!(bytes(&tok), tok_bytes);
    assert!(std::fs::symlink_metadata(&soft).unwrap().file_type().is_symlink());
    let mut expected = ["calibration.txt", "hard-link.bin", "soft-link.bin", "stories260K.bin", "tok512.bin"];
    expected.sort();
    assert_eq!(listing(&dir), expected);
}

#[test]
fn quantize_refuses_to_write_over_its_input() {
    let dir = fresh("quantize-over-input");
    let input = dir.join("model.mlm");
    std::fs::copy(converted("f32"), &input).unwrap();
    let before = bytes(&input);
    let link = dir.join("link.mlm");
    std::os::unix::fs::symlink(&input, &link).unwrap();
    for out in [&input, &link] {
        let (code, _, err) = run_cli([
            "quantize".as_ref(),
            input.as_os_str(),
            "--dtype".as_ref(),
            "q8_0".as_ref(),
            "-o".as_ref(),
            out.as_os_str(),
        ]);
        assert_one_line_error(code, &err, &["is the input"]);
    }
    assert_eq!(bytes(&input), before);
    assert_eq!(listing(&dir), ["link.mlm", "model.mlm"]);
}

#[test]
fn writing_through_a_symlink_replaces_its_target_and_keeps_the_link() {
    let dir = fresh("output-symlink");
    std::fs::create_dir_all(dir.join("real")).unwrap();
    let target = dir.join("real/model.mlm");
    std::fs::write(&target, b"old contents").unwrap();
    let link = dir.join("link.mlm");
    std::os::unix::fs::symlink("real/model.mlm", &link).unwrap();
    let (code, _, err) = run_convert(&checkpoint(), &tok512(), &[], &link);
    assert_eq!(code, 0, "{err}");
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "the symlink was replaced");
    assert_eq!(bytes(&target), bytes(&converted("f32")));
    assert_eq!(listing(&dir.join("real")), ["model.mlm"]);
}

/// A conversion or quantization interrupted by a signal removes its temporary
/// output and exits as a shell reports that signal: 128 + its number (SIGINT
/// 130, SIGTERM 143, SIGHUP 129), with one line saying which.
#[test]
fn an_interrupted_conversion_leaves_no_file_behind() {
    let dir = fresh("interrupt");
    let out = dir.join("out.mlm");
    let text = shared().join("data/tinystories_dev.txt");
    let f32_model = converted("f32");
    // Calibration on the whole text keeps the run busy long enough to interrupt it.
    let calibrated = ["--dtype", "q4_0", "--calibrate", text.to_str().unwrap(), "--calibrate-tokens", "0"];
    let convert: Vec<std::ffi::OsString> =
        vec!["convert".into(), checkpoint().into(), "--tokenizer".into(), tok512().into()];
    let quantize: Vec<std::ffi::OsString> = vec!["quantize".into(), f32_model.into()];
    for (command, signal, code) in [
        (&convert, "INT", 130),
        (&convert, "TERM", 143),
        (&quantize, "INT", 130),
        (&quantize, "TERM", 143),
        (&quantize, "HUP", 129),
    ] {
        let what = format!("{} SIG{signal}", command[0].to_string_lossy());
        let mut child = Command::new(cli())
            .args(command)
            .args(calibrated)
            .arg("-o")
            .arg(&out)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Wait until the temporary output exists, then interrupt.
        let start = Instant::now();
        while listing(&dir).is_empty() {
            assert!(child.try_wait().unwrap().is_none(), "{what}: ended before its temporary output appeared");
            if start.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{what}: no temporary output appeared");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let killed = Command::new("kill").args([format!("-{signal}"), child.id().to_string()]).status().unwrap();
        assert!(killed.success());
        let output = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(code), "{what}: {err}");
        assert!(err.contains(&format!("error: interrupted by SIG{signal}; nothing was written")), "{what}: {err}");
        assert_eq!(listing(&dir), Vec::<String>::new(), "{what} left files behind");
    }
}

#[test]
fn a_directory_as_output_is_refused_before_the_work() {
    let dir = fresh("output-dir");
    // A calibrated conversion takes far longer than the 2 s allowed: the output is checked first.
    let text = shared().join("data/tinystories_dev.txt");
    let extra = ["--dtype", "q4_0", "--calibrate", text.to_str().unwrap(), "--calibrate-tokens", "0"];
    cli(); // built before the clock starts
    let start = Instant::now();
    let (code, _, err) = run_convert(&checkpoint(), &tok512(), &extra, &dir);
    assert_one_line_error(code, &err, &["is a directory"]);
    assert!(start.elapsed() < Duration::from_secs(2), "refused only after {:?}", start.elapsed());
    assert_eq!(listing(&dir), Vec::<String>::new());
}

#[test]
fn a_failed_conversion_leaves_no_file_behind() {
    let dir = fresh("failed");
    let mut s = Synthetic::new();
    s.w3[0] = f32::NAN;
    let (code, _, out) = convert_synthetic(&s, &dir, &[]);
    assert_eq!(code, 1);
    assert!(!out.exists());
    assert_eq!(listing(&dir), ["synthetic.bin"]);
}

// ---------------------------------------------------------------- long prompts

/// A tokenizer section built from a llama2.c tokenizer.bin (as `convert` stores it), in aligned words.
fn tokenizer_words(name: &str) -> (Vec<u32>, usize, usize) {
    let path = models().join(name);
    let vocab = microlm_cli::llama2c::read_tokenizer(&std::fs::read(&path).unwrap(), &path).unwrap();
    let (bytes, max) = microlm::write::tokenizer_section(&vocab).unwrap();
    let mut words = vec![0u32; bytes.len().div_ceil(4)];
    bytemuck::cast_slice_mut::<u32, u8>(&mut words)[..bytes.len()].copy_from_slice(&bytes);
    (words, bytes.len(), max as usize)
}

fn with_tokenizer<R>(name: &str, f: impl FnOnce(&microlm::Tokenizer<'_>) -> R) -> R {
    let (words, len, max) = tokenizer_words(name);
    let bytes: &[u8] = &bytemuck::cast_slice(&words)[..len];
    let n = u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize;
    f(&microlm::Tokenizer::parse(bytes, n, max, 1, 2).unwrap())
}

/// Encodes with BOS given `slots` u32 of output (encode_capacity: O(n²) merges; encode_workspace: fast).
fn encode_with(tok: &microlm::Tokenizer<'_>, text: &str, slots: usize) -> Vec<u32> {
    let mut out = vec![0u32; slots];
    let n = tok.encode(text.as_bytes(), true, false, &mut out).unwrap();
    out.truncate(n);
    out
}

fn fast(tok: &microlm::Tokenizer<'_>, text: &str) -> Vec<u32> {
    encode_with(tok, text, microlm::Tokenizer::encode_workspace(text.as_bytes()))
}

fn rescanning(tok: &microlm::Tokenizer<'_>, text: &str) -> Vec<u32> {
    encode_with(tok, text, microlm::Tokenizer::encode_capacity(text.as_bytes()))
}

fn stories(bytes: usize) -> String {
    let text = std::fs::read_to_string(shared().join("data/tinystories_dev.txt")).unwrap();
    let mut end = bytes.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

#[test]
fn fast_merges_match_the_llama2c_references() {
    #[derive(serde::Deserialize)]
    struct Case {
        tokenizer: String,
        text: String,
        ids: Vec<u32>,
    }
    #[derive(serde::Deserialize)]
    struct Reference {
        cases: Vec<Case>,
    }
    let text = std::fs::read_to_string(shared().join("reference/tokenizer_encode.json")).unwrap();
    let reference: Reference = serde_json::from_str(&text).unwrap();
    for name in ["tok512.bin", "tokenizer.bin"] {
        with_tokenizer(name, |tok| {
            for case in reference.cases.iter().filter(|c| c.tokenizer.ends_with(name)) {
                assert_eq!(fast(tok, &case.text), case.ids, "{name}: {:?}", case.text);
            }
        });
    }
}

#[test]
fn fast_and_rescanning_merges_agree() {
    // Runs of one letter (equal-score ties), spaces, multi-byte and unknown characters, control bytes.
    let alphabet = ["a", "a", "b", "e", "n", "t", "h", " ", " ", "aa", "é", "中", "😀", "\u{7}", ".", "Once", "ll"];
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut rand = |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    for name in ["tok512.bin", "tokenizer.bin"] {
        with_tokenizer(name, |tok| {
            for _ in 0..300 {
                let len = rand(120);
                let text: String = (0..len).map(|_| alphabet[rand(alphabet.len())]).collect();
                assert_eq!(fast(tok, &text), rescanning(tok, &text), "{name}: {text:?}");
            }
            let text = stories(1500);
            assert_eq!(fast(tok, &text), rescanning(tok, &text), "{name}: stories");
        });
    }
}

#[test]
fn long_prompts_encode_in_n_log_n() {
    with_tokenizer("tok512.bin", |tok| {
        for bytes in [10_000, 100_000] {
            let text = stories(bytes);
            let start = Instant::now();
            let ids = fast(tok, &text);
            let took = start.elapsed();
            assert!(took < Duration::from_secs(2), "{bytes} bytes took {took:?}");
            assert!(ids.len() > bytes / 8 && ids.len() < bytes, "{} tokens", ids.len());
        }
    });
}

#[test]
fn a_100_kb_prompt_is_refused_at_once() {
    let prompt = stories(100_000);
    let m = converted("f32");
    let (code, err, took) =
        run_bounded(&["generate".as_ref(), m.as_os_str(), "-p".as_ref(), prompt.as_ref()], Duration::from_secs(10));
    assert_one_line_error(code, &err, &["prompt is at least", "longer than the context of 512"]);
    assert!(took < Duration::from_secs(3), "took {took:?}");
    // Just over the context after encoding (not refused by the bound): the session refuses it.
    let prompt = stories(3_000);
    let (code, err, took) =
        run_bounded(&["generate".as_ref(), m.as_os_str(), "-p".as_ref(), prompt.as_ref()], Duration::from_secs(10));
    assert_one_line_error(code, &err, &["longer than the context of 512"]);
    assert!(took < Duration::from_secs(3), "took {took:?}");
}

#[test]
fn two_runs_writing_one_output_each_write_a_whole_file() {
    let dir = fresh("concurrent");
    let out = dir.join("out.mlm");
    let expected = [bytes(&converted("f32")), bytes(&converted("q8_0"))];
    for round in 0..4 {
        let runs: Vec<_> = ["f32", "q8_0"]
            .into_iter()
            .map(|dtype| {
                Command::new(cli())
                    .args(["convert".as_ref(), checkpoint().as_os_str(), "--tokenizer".as_ref(), tok512().as_os_str()])
                    .args(["--dtype", dtype, "-o"])
                    .arg(&out)
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for run in runs {
            let o = run.wait_with_output().unwrap();
            assert!(o.status.success(), "round {round}: {}", String::from_utf8_lossy(&o.stderr));
        }
        let got = bytes(&out);
        assert!(expected.contains(&got), "round {round}: the output is neither run's file ({} bytes)", got.len());
        assert_eq!(listing(&dir), ["out.mlm"], "round {round}");
    }
}

/// `--plot` is an output like `-o`: never over an input or the model it writes,
/// and a plot that cannot be written leaves no model behind.
#[test]
fn plots_never_overwrite_inputs_or_the_model() {
    let dir = fresh("plot-outputs");
    let input = dir.join("model.mlm");
    std::fs::copy(converted("f32"), &input).unwrap();
    let before = bytes(&input);
    let out = dir.join("out.mlm");
    let quantize = |plot: &Path| {
        run_cli([
            "quantize".as_ref(),
            input.as_os_str(),
            "--dtype".as_ref(),
            "q4_16".as_ref(),
            "--plot".as_ref(),
            plot.as_os_str(),
            "-o".as_ref(),
            out.as_os_str(),
        ])
    };
    let (code, _, err) = quantize(&input);
    assert_one_line_error(code, &err, &["is the input"]);
    let (code, _, err) = quantize(&out);
    assert_one_line_error(code, &err, &["--plot", "the model's output too"]);
    let (code, _, err) = quantize(&dir.join("no-such-dir").join("x.svg"));
    assert_eq!(code, 1, "{err}");
    assert!(!out.exists(), "a failed plot left the model behind");
    assert_eq!(bytes(&input), before);
    let (code, _, err) = quantize(&dir.join("tensors.svg"));
    assert_eq!(code, 0, "{err}");
    assert!(out.exists() && std::fs::read_to_string(dir.join("tensors.svg")).unwrap().starts_with("<svg"));
    // eval: not over a model, the reference or the text.
    let text = dir.join("text.txt");
    std::fs::write(&text, "Once upon a time, there was a cat. The cat sat on a mat.\n").unwrap();
    for plot in [&out, &input, &text] {
        let (code, _, err) = run_cli([
            "eval".as_ref(),
            out.as_os_str(),
            "--text".as_ref(),
            text.as_os_str(),
            "--reference".as_ref(),
            input.as_os_str(),
            "--plot".as_ref(),
            plot.as_os_str(),
        ]);
        assert_eq!(code, 1, "{err}");
        assert!(err.lines().last().unwrap().contains("is the input"), "{err}");
    }
    assert_eq!(bytes(&input), before);
    assert!(std::fs::read_to_string(&text).unwrap().starts_with("Once upon a time"));
}
