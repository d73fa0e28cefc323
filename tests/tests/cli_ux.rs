//! What a person meets at the command line: one-line usage errors with exit
//! code 1, allowed values listed by `--help`, cheap checks before expensive
//! work, the reason generation stopped, a closed pipe, and the demo's first
//! run on a machine without the models (downloads from a hub served here on
//! 127.0.0.1; nothing in these tests reaches the internet).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use microlm_tests::{cli, converted, run_cli, scratch_dir, shared_file};

/// The single line a failing command prints, checked to be one line starting with `error: `.
fn one_error_line(code: i32, err: &str) -> String {
    assert_eq!(code, 1, "expected exit code 1: {err}");
    let lines: Vec<&str> = err.trim_end().lines().collect();
    assert_eq!(lines.len(), 1, "expected one line on stderr:\n{err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    lines[0].to_string()
}

/// A usage error: its `error: ` line (checked to be the first, with the help
/// hint) and clap's tips, each on a line of its own after it.
fn usage_error_and_tips(code: i32, err: &str) -> (String, Vec<String>) {
    assert_eq!(code, 1, "expected exit code 1: {err}");
    let mut lines = err.trim_end().lines();
    let first = lines.next().unwrap_or_default().to_string();
    assert!(first.starts_with("error: ") && first.contains("--help'"), "{err}");
    assert!(!first.contains("tip:"), "a tip joined onto the error line: {err}");
    let tips: Vec<String> = lines.map(String::from).collect();
    assert!(tips.iter().all(|t| t.starts_with("tip: ")), "only tips may follow the error line: {err}");
    (first, tips)
}

#[test]
fn usage_errors_are_one_line_with_exit_code_1_and_a_help_hint() {
    let cases: [&[&str]; 3] = [&["generate", "x.mlm", "--kv", "q9"], &["inspect"], &["bogus"]];
    for args in cases {
        let (code, _, err) = run_cli(args);
        let line = one_error_line(code, &err);
        assert!(line.contains("--help'"), "{args:?}: {line}");
    }
    // clap's suggestion for a mistyped flag is a line of its own after the error line.
    let (code, _, err) = run_cli(["generate", "x.mlm", "--temprature", "1"]);
    let (line, tips) = usage_error_and_tips(code, &err);
    assert_eq!(line, "error: unexpected argument '--temprature' found; see 'microlm generate --help'");
    assert_eq!(tips, ["tip: a similar argument exists: '--temperature'"]);
    let (code, _, err) = run_cli(["generate", "x.mlm", "--kv", "q9"]);
    let line = one_error_line(code, &err);
    assert!(
        line.contains("[possible values: f32, f16, i8]") && line.ends_with("see 'microlm generate --help'"),
        "{line}"
    );
    // No command at all: the commands, in one line.
    let (code, _, err) = run_cli::<[&str; 0], &str>([]);
    let line = one_error_line(code, &err);
    assert!(line.contains("generate") && line.contains("demo"), "{line}");
}

#[test]
fn help_and_version_still_print_and_exit_0() {
    let (code, out, err) = run_cli(["--version"]);
    assert_eq!((code, err.as_str()), (0, ""));
    assert!(out.starts_with("microlm "), "{out}");
    let (code, out, _) = run_cli(["generate", "--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("Example:\n  microlm generate"), "{out}");
}

#[test]
fn help_lists_the_allowed_values_of_enumerated_options() {
    let expect: [(&str, &[&str]); 6] = [
        ("generate", &["[possible values: f32, f16, i8]"]),
        ("bench", &["[possible values: f32, f16, i8]"]),
        ("eval", &["[possible values: f32, f16, i8]"]),
        ("convert", &["[possible values: f32, f16, q8_0, q4_0, q4_16]"]),
        (
            "qemu",
            &[
                "[possible values: mps2-an386, mps2-an505, mps3-an547, lm3s6965evb, netduinoplus2, riscv32-virt]",
                "[possible values: f32, f16, i8]",
            ],
        ),
        ("demo", &["[possible values: mps2-an386, mps2-an505, mps3-an547, lm3s6965evb, netduinoplus2, riscv32-virt]"]),
    ];
    for (sub, lists) in expect {
        let (code, out, _) = run_cli([sub, "--help"]);
        assert_eq!(code, 0);
        for list in lists {
            assert!(out.contains(list), "{sub} --help lacks {list}:\n{out}");
        }
    }
    let (_, out, _) = run_cli(["inspect", "--help"]);
    assert!(out.contains("lm3s6965evb, nrf52840") && out.contains("rp2350"), "{out}");
}

#[test]
fn bad_enumerated_values_are_rejected_with_the_list() {
    let cases: [(&[&str], &str); 4] = [
        (
            &["convert", "a.bin", "--tokenizer", "t.bin", "-o", "x.mlm", "--dtype", "q5_1"],
            "f32, f16, q8_0, q4_0, q4_16",
        ),
        (&["qemu", "x.mlm", "--machine", "pdp11"], "mps2-an386, mps2-an505, mps3-an547, lm3s6965evb"),
        (&["bench", "x.mlm", "--kv", "f8"], "f32, f16, i8"),
        (&["inspect", "x.mlm", "--board", "nope"], "rp2350"),
    ];
    for (args, list) in cases {
        let (code, _, err) = run_cli(args);
        let (line, _) = usage_error_and_tips(code, &err);
        assert!(line.contains("invalid value") && line.contains(list), "{args:?}: {line}");
    }
    // A near miss gets clap's suggestion, on its own line.
    let (code, _, err) = run_cli(["convert", "a.bin", "-o", "x.mlm", "--dtype", "q5_1"]);
    let (_, tips) = usage_error_and_tips(code, &err);
    assert_eq!(tips, ["tip: a similar value exists: 'q4_16'"]);
}

#[test]
fn negative_numbers_reach_the_range_checks() {
    let model = converted("f32");
    let m = model.to_str().unwrap();
    let cases: [(&[&str], &str); 5] = [
        (&["-t", "-inf"], "temperature must be a finite number >= 0"),
        (&["-t", "-1"], "temperature must be a finite number >= 0"),
        (&["--min-p", "-0.5"], "min-p must be in [0, 1]"),
        (&["-s", "-5"], "seed must be a whole number from 0 to 18446744073709551615"),
        (&["-n", "-3"], "must be a whole number >= 0"),
    ];
    for (flags, message) in cases {
        let mut args = vec!["generate", m];
        args.extend_from_slice(flags);
        let (code, _, err) = run_cli(&args);
        let line = one_error_line(code, &err);
        assert!(line.contains(message), "{flags:?}: {line}");
    }
    // bench's numbers too, as docs/CLI.md says.
    let cases: [(&[&str], &str); 3] = [
        (&["-n", "-3"], "'-3' for '--steps <STEPS>': must be a whole number >= 0"),
        (&["--runs", "-1"], "'-1' for '--runs <RUNS>': must be a whole number >= 1"),
        (&["--ctx", "-5"], "'-5' for '--ctx <CTX>': must be a whole number >= 0"),
    ];
    for (flags, message) in cases {
        let mut args = vec!["bench", m];
        args.extend_from_slice(flags);
        let (code, _, err) = run_cli(&args);
        let line = one_error_line(code, &err);
        assert!(line.contains(message), "bench {flags:?}: {line}");
    }
    // quantize's GPTQ dampening too (before any calibration starts).
    let text = shared_file("data/tinystories_dev.txt");
    let out = std::env::temp_dir().join(format!("microlm-damp-{}.mlm", std::process::id()));
    let (code, _, err) = run_cli([
        "quantize",
        m,
        "--dtype",
        "q8_0",
        "--calibrate",
        text.to_str().unwrap(),
        "--gptq",
        "--damp",
        "-1",
        "-o",
        out.to_str().unwrap(),
    ]);
    let line = one_error_line(code, &err);
    assert!(line.contains("must be a finite number >= 0"), "--damp -1: {line}");
    assert!(!out.exists(), "--damp -1 wrote {}", out.display());
}

/// A directory on PATH with no qemu-system-arm (and nothing else).
fn path_without_qemu() -> PathBuf {
    scratch_dir("cli-ux-empty-path")
}

#[test]
fn qemu_checks_the_model_file_before_anything_else() {
    let dir = scratch_dir("cli-ux");
    let empty = dir.join("empty.bin");
    std::fs::write(&empty, b"").unwrap();
    let not_a_model = dir.join("text.bin");
    std::fs::write(&not_a_model, b"Once upon a time there was no model file here.").unwrap();
    for (file, machine) in [(&empty, "mps2-an386"), (&not_a_model, "mps2-an505"), (&empty, "lm3s6965evb")] {
        let start = Instant::now();
        // Without QEMU on PATH and with a firmware that would need building: the model is checked first.
        let out = Command::new(cli())
            .args(["qemu".as_ref(), file.as_os_str(), "--machine".as_ref(), machine.as_ref()])
            .env("PATH", path_without_qemu())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        let line = one_error_line(out.status.code().unwrap_or(-1), &err);
        assert!(line.contains("is not a valid model file"), "{machine}: {line}");
        assert!(start.elapsed() < Duration::from_secs(10), "{machine}: took {:?}", start.elapsed());
    }
}

/// `microlm qemu MODEL ARGS...` with no QEMU on PATH: (exit code, stderr).
fn qemu_without_qemu(model: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(cli())
        .arg("qemu")
        .arg(model)
        .args(args)
        .env("PATH", path_without_qemu())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Settings `generate` refuses are refused by `qemu` on the host, in the same
/// words, before it looks for QEMU or builds a firmware (on a board that loads
/// the model and on one that embeds it, with the context it would be built for).
#[test]
fn qemu_checks_the_settings_on_the_host_as_generate_does() {
    let model = converted("f32");
    let m = model.to_str().unwrap();
    let long_prompt = "Once upon a time there was a dragon";
    let cases: [&[&str]; 11] = [
        &["-t", "-1"],
        &["-t", "nan"],
        &["--top-p", "0"],
        &["--top-p", "1.5"],
        &["--min-p", "2"],
        &["--top-k", "513"],
        &["-s", "-5"],
        &["-n", "-3"],
        &["--ctx", "0"],
        &["--ctx", "4", "-p", long_prompt],
        &["--ctx", "64", "--window", "64"],
    ];
    for flags in cases {
        let mut args = vec!["generate", m];
        args.extend_from_slice(flags);
        let (code, _, err) = run_cli(&args);
        let want = one_error_line(code, &err).replace("microlm generate --help", "microlm qemu --help");
        for machine in ["mps2-an386", "lm3s6965evb"] {
            let start = Instant::now();
            let mut args = flags.to_vec();
            args.extend(["--machine", machine]);
            let (code, err) = qemu_without_qemu(&model, &args);
            let line = one_error_line(code, &err);
            assert_eq!(line, want, "{machine} {flags:?}");
            assert!(start.elapsed() < Duration::from_secs(10), "{machine} {flags:?}: took {:?}", start.elapsed());
        }
    }
    // An embedded board is built with a context of -n positions: a prompt longer than that is refused before.
    let (code, err) = qemu_without_qemu(&model, &["--machine", "lm3s6965evb", "-n", "3", "-p", long_prompt]);
    assert!(one_error_line(code, &err).contains("longer than the context of 3"), "{err}");
}

/// `--timeout 0` would kill QEMU (or give up on a board) at once: refused, as
/// are negative, endless and out-of-range timeouts, each in one line.
#[test]
fn a_timeout_must_be_more_than_zero() {
    let model = converted("f32");
    for timeout in ["0", "-1", "4294967296", "1.5"] {
        let (code, err) = qemu_without_qemu(&model, &["--timeout", timeout]);
        let line = one_error_line(code, &err);
        let range = "must be a whole number of seconds from 1 to 4294967295";
        let expect = format!("invalid value '{timeout}' for '--timeout <TIMEOUT>': {range}");
        assert!(line.contains(&expect), "qemu --timeout {timeout}: {line}");
    }
    let socket = scratch_dir("cli-ux").join("no-board.sock");
    for timeout in ["0", "-0.5", "nan", "inf", "1e30"] {
        let (code, _, err) = run_cli(["device", "--socket", socket.to_str().unwrap(), "--timeout", timeout, "info"]);
        let line = one_error_line(code, &err);
        assert!(
            line.contains("must be a number of seconds > 0 and at most 4294967295"),
            "device --timeout {timeout}: {line}"
        );
    }
}

/// A model file written to stdout: `-o -` and `-o /dev/stdout` both mean the
/// command's standard output, whether a pipe or a regular file (`> FILE`,
/// `>> FILE`); no file named '-' appears, and `--json` (whose report goes to
/// stdout too) is refused with it.
#[test]
fn model_output_goes_to_stdout_for_dash_and_dev_stdout() {
    let model = converted("f32");
    let dir = fresh_dir("cli-ux-stdout");
    let reference = dir.join("reference.mlm");
    let (code, _, err) = run_cli([
        "quantize".as_ref(),
        model.as_os_str(),
        "--dtype".as_ref(),
        "q8_0".as_ref(),
        "-o".as_ref(),
        reference.as_os_str(),
    ]);
    assert_eq!(code, 0, "{err}");
    let want = std::fs::read(&reference).unwrap();
    let quantize = |output: &str| {
        let mut cmd = Command::new(cli());
        cmd.current_dir(&dir).arg("quantize").arg(&model).args(["--dtype", "q8_0", "-o", output]);
        cmd
    };
    for output in ["-", "/dev/stdout"] {
        // A pipe.
        let out = quantize(output).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "-o {output}: {err}");
        assert!(
            out.stdout == want,
            "-o {output}: {} bytes on stdout, not the {} of the file",
            out.stdout.len(),
            want.len()
        );
        assert!(
            err.contains(&format!("wrote {} ({} bytes)", if output == "-" { "stdout" } else { output }, want.len())),
            "{err}"
        );
        // A regular file, opened for appending: the model follows what is there.
        let file = dir.join("appended.mlm");
        std::fs::write(&file, b"head").unwrap();
        let append = std::fs::OpenOptions::new().append(true).open(&file).unwrap();
        let status = quantize(output).stdout(append).stderr(Stdio::null()).status().unwrap();
        assert!(status.success(), "-o {output} >> file");
        let got = std::fs::read(&file).unwrap();
        assert!(got.starts_with(b"head") && got[4..] == want[..], "-o {output} >> file: {} bytes", got.len());
        std::fs::remove_file(&file).unwrap();
        // --json prints the report on stdout: not with the model there.
        let out = quantize(output).arg("--json").output().unwrap();
        let line = one_error_line(out.status.code().unwrap_or(-1), &String::from_utf8_lossy(&out.stderr));
        assert!(
            line.contains(&format!("-o {output} writes the model on stdout, where --json prints the report")),
            "{line}"
        );
        assert!(out.stdout.is_empty());
    }
    // Nothing but the reference in the directory: no file named '-', no temporary file.
    let names: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names, ["reference.mlm"]);
}

#[test]
fn demo_rejects_a_bad_board_before_looking_for_models() {
    let empty = scratch_dir("cli-ux-no-models");
    let start = Instant::now();
    let out = Command::new(cli())
        .args(["demo", "--board", "nosuch", "--hub-url", "http://127.0.0.1:9"])
        .env("MICROLM_MODELS", &empty)
        .env("MICROLM_CACHE", scratch_dir("cli-ux-unused-cache"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let line = one_error_line(out.status.code().unwrap_or(-1), &err);
    assert!(line.contains("invalid value 'nosuch' for '--board") && line.contains("mps2-an386"), "{line}");
    assert!(start.elapsed() < Duration::from_secs(10));
}

/// `generate MODEL FLAGS... --json`: (stderr, the JSON line).
fn generate_json(flags: &[&str]) -> (String, serde_json::Value) {
    let model = converted("f32");
    let mut args = vec!["generate", model.to_str().unwrap()];
    args.extend_from_slice(flags);
    args.push("--json");
    let (code, out, err) = run_cli(&args);
    assert_eq!(code, 0, "{err}");
    let json = serde_json::from_str(out.trim_end().lines().last().unwrap()).unwrap();
    (err, json)
}

#[test]
fn generation_says_why_it_stopped() {
    let (err, j) = generate_json(&["-n", "8", "-t", "0"]);
    assert!(err.contains("stopped: steps reached (-n 8)"), "{err}");
    assert_eq!((j["stop"].as_str(), j["positions"].as_u64()), (Some("steps"), Some(8)));
    assert_eq!(j["stop_reason"], "steps reached (-n 8)");

    let (err, j) = generate_json(&["-n", "100", "-t", "0", "--ctx", "16"]);
    assert!(err.contains("stopped: context full (16 positions"), "{err}");
    assert_eq!(j["stop"], "context_full");

    // -n 0 runs until the context is full, and says so (not "steps reached").
    let (err, j) = generate_json(&["-n", "0", "-t", "0", "--ctx", "64"]);
    assert!(err.contains("stopped: context full (64 positions; --window keeps going)"), "{err}");
    assert_eq!((j["stop"].as_str(), j["positions"].as_u64()), (Some("context_full"), Some(64)), "{j}");
    // In window mode the context never fills: -n 0 runs as many positions as it holds.
    let (err, j) = generate_json(&["-n", "0", "-t", "0", "--ctx", "32", "--window"]);
    assert!(err.contains("stopped: steps reached (-n 0: the context's 32 positions)"), "{err}");
    assert_eq!((j["stop"].as_str(), j["positions"].as_u64()), (Some("steps"), Some(32)), "{j}");

    // Window mode with an i8 cache: this seed's story ends with BOS long before -n.
    let (err, j) = generate_json(&["--kv", "i8", "--ctx", "128", "--window", "-n", "2000", "-s", "42"]);
    let pos = j["positions"].as_u64().unwrap();
    assert_eq!(j["stop"], "bos", "{j}");
    assert!(pos < 2000, "{pos}");
    assert!(err.contains(&format!("stopped: the model produced BOS at position {pos}")), "{err}");
    assert_eq!(j["stop_reason"], format!("the model produced BOS at position {pos}"));
}

#[test]
fn a_closed_stdout_ends_generation_quietly() {
    let model = converted("f32");
    let mut child = Command::new(cli())
        .args(["generate".as_ref(), model.as_os_str()])
        .args(["-n", "4000", "--window", "--ctx", "64", "-t", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read the first byte, then close the pipe, as `| head -c 1` does.
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 1];
    stdout.read_exact(&mut first).unwrap();
    drop(stdout);
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    let status = child.wait().unwrap();
    assert!(!err.contains("error"), "{err}");
    assert_eq!(status.code(), Some(0), "{err}");
}

// ---- The demo's download from the hub -------------------------------------

/// The demo's runs share target/models/stories260K.mlm: one at a time.
static DEMO: Mutex<()> = Mutex::new(());

/// A stand-in for the Hugging Face hub on 127.0.0.1: serves files at
/// `/{repo}/resolve/main/{path}` with the headers hf-hub reads (ETag,
/// X-Repo-Commit, Content-Range for its `Range: bytes=0-0` probe) and records
/// every request path. It stops when dropped, or by itself after a minute.
struct Hub {
    url: String,
    requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Hub {
    fn serve(files: Vec<(&'static str, Vec<u8>)>) -> Hub {
        let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
        let url = format!("http://{}", server.server_addr().to_ip().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log, done) = (requests.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            while !done.load(Ordering::Relaxed) && Instant::now() < deadline {
                let Ok(Some(request)) = server.recv_timeout(Duration::from_millis(50)) else { continue };
                log.lock().unwrap().push(request.url().to_string());
                let response = respond(&files, &request);
                let _ = request.respond(response);
            }
        });
        Hub { url, requests, stop, thread: Some(thread) }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn header(name: &str, value: &str) -> tiny_http::Header {
    tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()).unwrap()
}

/// The hub's answer to one request: the file's bytes (or the asked range of them), else 404.
fn respond(
    files: &[(&'static str, Vec<u8>)],
    request: &tiny_http::Request,
) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
    let prefix = "/karpathy/tinyllamas/resolve/main/";
    let found = request.url().strip_prefix(prefix).and_then(|p| files.iter().find(|(path, _)| *path == p));
    let Some((_, data)) = found else {
        return tiny_http::Response::from_string("Entry not found").with_status_code(404);
    };
    let len = data.len();
    // `Range: bytes=A-` or `bytes=A-B`.
    let range = request.headers().iter().find(|h| h.field.equiv("Range")).and_then(|h| {
        let (a, b) = h.value.as_str().strip_prefix("bytes=")?.split_once('-')?;
        let a: usize = a.parse().ok()?;
        let b: usize = if b.is_empty() { len - 1 } else { b.parse().ok()? };
        Some((a, b.min(len - 1)))
    });
    let (status, body, content_range) = match range {
        Some((a, b)) if a <= b => (206, data[a..=b].to_vec(), Some(format!("bytes {a}-{b}/{len}"))),
        _ => (200, data.clone(), None),
    };
    let mut response = tiny_http::Response::from_data(body)
        .with_status_code(status)
        .with_header(header("ETag", &format!("\"{}\"", hex(&Sha256::digest(data)))))
        .with_header(header("X-Repo-Commit", "0123456789abcdef0123456789abcdef01234567"));
    if let Some(range) = content_range {
        response = response.with_header(header("Content-Range", &range));
    }
    response
}

/// The real files, read from ../shared/models at test time.
fn demo_files() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("stories260K/stories260K.bin", std::fs::read(shared_file("models/stories260K.bin")).unwrap()),
        ("stories260K/tok512.bin", std::fs::read(shared_file("models/tok512.bin")).unwrap()),
    ]
}

/// A fresh, empty directory under the scratch area.
fn fresh_dir(name: &str) -> PathBuf {
    let dir = scratch_dir(name);
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `microlm demo ARGS...` with no local models, the cache in `cache`, and `env` set.
fn demo(args: &[&str], cache: &Path, env: &[(&str, &str)]) -> (i32, String, String, Duration) {
    let start = Instant::now();
    let out = Command::new(cli())
        .arg("demo")
        .args(args)
        .env("MICROLM_MODELS", scratch_dir("cli-ux-no-models"))
        .env("MICROLM_CACHE", cache)
        .env_remove("HF_ENDPOINT")
        // The hub is on loopback: no proxy from the environment may stand in between.
        .env_remove("ALL_PROXY")
        .env_remove("all_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("http_proxy")
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        start.elapsed(),
    )
}

/// Every file (not directory) under `dir`, symlinks included.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found
}

#[test]
fn demo_downloads_the_model_from_the_hub_checks_it_and_tells_a_story() {
    let _one = DEMO.lock().unwrap_or_else(|e| e.into_inner());
    let hub = Hub::serve(demo_files());
    let cache = fresh_dir("cli-ux-cache-ok");
    // The endpoint from $HF_ENDPOINT, as hf-hub and huggingface_hub read it.
    let (code, out, err, _) = demo(&["-n", "24", "-t", "0"], &cache, &[("HF_ENDPOINT", &hub.url)]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("Once upon a time"), "{out}");
    // The story, not the conversion's per-tensor table.
    assert!(!err.contains("layers.0.wq") && !err.contains("rmse"), "{err}");
    let requests = hub.requests();
    for file in ["stories260K/stories260K.bin", "stories260K/tok512.bin"] {
        let url = format!("/karpathy/tinyllamas/resolve/main/{file}");
        assert!(requests.contains(&url), "{url} not requested: {requests:?}");
    }
    // Both files are in the cache with their known digests.
    let cached = files_under(&cache);
    for (name, digest) in [
        ("stories260K.bin", "b0a507e7ad0f626624f17112325e66691f9076d622e1d3274d103d00299f2696"),
        ("tok512.bin", "037cb335abb25d1fa9e8ecae30ed2a3a8ace9302862ebcdc05d51a6bbb10c312"),
    ] {
        let path = cached.iter().find(|p| p.file_name().is_some_and(|n| n == name)).expect(name);
        assert_eq!(hex(&Sha256::digest(std::fs::read(path).unwrap())), digest);
    }

    // The second run takes them from the cache: no request at all.
    let before = hub.requests().len();
    let (code, out2, err, _) = demo(&["-n", "24", "-t", "0", "--hub-url", &hub.url], &cache, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out2, out);
    assert_eq!(hub.requests().len(), before, "the cached files were downloaded again");
}

#[test]
fn demo_refuses_a_download_with_the_wrong_checksum_and_keeps_nothing() {
    let _one = DEMO.lock().unwrap_or_else(|e| e.into_inner());
    let mut files = demo_files();
    let mid = files[0].1.len() / 2;
    files[0].1[mid] ^= 0x01;
    let bad_digest = hex(&Sha256::digest(&files[0].1));
    let hub = Hub::serve(files);
    let cache = fresh_dir("cli-ux-cache-corrupt");
    let (code, _, err, _) = demo(&["-n", "8", "--hub-url", &hub.url], &cache, &[]);
    assert_eq!(code, 1, "{err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert_eq!(err.trim_end().lines().last(), Some(errors[0]), "the error is not the last line: {err}");
    assert!(
        errors[0].contains("stories260K/stories260K.bin")
            && errors[0].contains(&format!("SHA-256 {bad_digest}"))
            && errors[0].contains("expected b0a507e7"),
        "{err}"
    );
    // Neither the snapshot entry nor the blob (nor its lock) stays in the cache.
    let left: Vec<_> = files_under(&cache)
        .into_iter()
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name == "stories260K.bin" || name.starts_with(&bad_digest)
        })
        .collect();
    assert!(left.is_empty(), "left in the cache: {left:?}");
}

#[test]
fn demo_with_an_unreachable_hub_says_what_to_do_in_one_line() {
    let _one = DEMO.lock().unwrap_or_else(|e| e.into_inner());
    // A port on loopback that nothing listens on: the connection is refused at once.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}");
    let cache = fresh_dir("cli-ux-cache-offline");
    let (code, _, err, took) = demo(&["--hub-url", &url], &cache, &[]);
    assert_eq!(code, 1, "{err}");
    let last = err.trim_end().lines().last().unwrap_or_default();
    assert_eq!(err.lines().filter(|l| l.starts_with("error")).count(), 1, "{err}");
    assert!(
        last.starts_with(&format!("error: could not download stories260K from {url}/karpathy/tinyllamas: ")),
        "{err}"
    );
    assert!(last.contains("put stories260K.bin and tok512.bin in DIR and pass --models DIR"), "{err}");
    assert!(took < Duration::from_secs(20), "took {took:?}");
}

#[test]
fn demo_with_models_dir_does_not_download() {
    let empty = scratch_dir("cli-ux-no-models");
    let (code, out, err, _) =
        demo(&["--models", empty.to_str().unwrap(), "--hub-url", "http://127.0.0.1:9"], &empty, &[]);
    let line = one_error_line(code, &err);
    assert!(out.is_empty());
    assert!(line.contains("are not both in") && line.contains("huggingface.co/karpathy/tinyllamas"), "{line}");
}

// ---- The two scripts of the README: cheap checks before installing or building ----

/// A checkout with only `scripts/NAME` (the real one) and a `scripts/setup.sh`
/// that leaves a marker, in a directory with no `shared/` beside it.
fn lone_script(name: &str) -> (PathBuf, PathBuf) {
    let top = fresh_dir(&format!("cli-ux-lone-{name}"));
    let scripts = top.join("checkout/scripts");
    std::fs::create_dir_all(&scripts).unwrap();
    std::fs::copy(microlm_tests::root().join("scripts").join(name), scripts.join(name)).unwrap();
    let marker = top.join("setup-ran");
    std::fs::write(scripts.join("setup.sh"), format!("#!/bin/sh\ntouch '{}'\n", marker.display())).unwrap();
    (scripts.join(name), marker)
}

/// Runs a script with a PATH that has bash and coreutils but no cargo.
fn run_script(script: &Path, env: &[(&str, &str)]) -> (i32, String) {
    let out = Command::new("bash")
        .arg(script)
        .env("PATH", "/usr/bin:/bin")
        .env_remove("MICROLM_MODELS")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn test_script_says_what_it_needs_before_installing_or_building() {
    let (script, marker) = lone_script("test.sh");
    let (code, err) = run_script(&script, &[]);
    let line = one_error_line(code, &err);
    assert!(line.contains("the tests need ../shared") && line.contains("../shared/models/stories260K.bin"), "{line}");
    assert!(!marker.exists(), "setup.sh ran before the check");
}

#[test]
fn demo_script_checks_the_board_before_installing_or_building() {
    let (script, marker) = lone_script("demo.sh");
    let (code, err) = run_script(&script, &[("MICROLM_DEMO_BOARD", "nosuch")]);
    let line = one_error_line(code, &err);
    assert!(line.contains("MICROLM_DEMO_BOARD=nosuch is not a board"), "{line}");
    assert!(!marker.exists(), "setup.sh ran before the check");
}

/// `quantize --board` checks --ctx against the board's RAM before calibrating, for
/// the quantized file it will write (with the activation scratch), so the largest
/// ctx it suggests is one the finished file runs at.
#[test]
fn quantize_board_checks_the_ram_first_with_the_output_dtypes() {
    let model = converted("f32");
    let text = shared_file("data/tinystories_dev.txt");
    let out = std::env::temp_dir().join(format!("microlm-board-ctx-{}.mlm", std::process::id()));
    let run = |ctx: &str| {
        let started = Instant::now();
        let (code, _, err) = run_cli([
            "quantize",
            model.to_str().unwrap(),
            "--board",
            "lm3s6965evb",
            "--kv",
            "i8",
            "--ctx",
            ctx,
            "--calibrate",
            text.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ]);
        (one_error_line(code, &err), started.elapsed())
    };
    // 129 is the lm3s6965evb's largest ctx for a quantized stories260K with an i8 cache.
    for ctx in ["400", "130"] {
        let (line, took) = run(ctx);
        assert!(line.contains("use --ctx 129 or less"), "--ctx {ctx}: {line}");
        assert!(took < Duration::from_secs(5), "--ctx {ctx}: the check came after {took:?}");
        assert!(!out.exists(), "--ctx {ctx} wrote {}", out.display());
    }
}
