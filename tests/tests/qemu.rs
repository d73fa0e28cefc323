//! The default board, QEMU mps2-an386 (Cortex-M4F): the firmware says exactly
//! what llama2.c and the host say, and rejects bad input with an error exit.
//!
//! The firmware and the `microlm` CLI are built with cargo in a subprocess;
//! QEMU runs are bounded (the CLI kills QEMU after `--timeout`, the direct
//! runs here after `BOUND`). `MICROLM_BLESS=1` rewrites the golden output.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Longest any single QEMU run may take before it counts as a hang.
const BOUND: Duration = Duration::from_secs(120);

/// The checkout root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The `microlm` CLI, built in release mode beside this test binary.
fn microlm() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let status = microlm_tests::cargo()
            .current_dir(root())
            .args(["build", "--release", "--locked", "-p", "microlm-cli"])
            .status()
            .expect("run cargo");
        assert!(status.success(), "building microlm-cli failed");
        // This test runs from target/<profile>/deps/; the CLI is in target/release/.
        let exe = std::env::current_exe().unwrap();
        let target = exe.ancestors().nth(3).unwrap().to_path_buf();
        let bin = target.join("release").join("microlm");
        assert!(bin.is_file(), "{} not found after building microlm-cli", bin.display());
        bin
    })
}

/// The board firmware ELF, built with cargo in its own directory (own target and runner).
fn firmware() -> &'static Path {
    static ELF: OnceLock<PathBuf> = OnceLock::new();
    ELF.get_or_init(|| microlm_tests::build_firmware("qemu-mps2-an386", None, &[], &[]))
}

/// stories260K converted to f32 `.mlm`, once per test run.
fn model() -> &'static Path {
    static MODEL: OnceLock<PathBuf> = OnceLock::new();
    MODEL.get_or_init(|| microlm_tests::converted("f32"))
}

/// stories260K converted to q8_0 `.mlm`, once per test run.
fn q8_model() -> &'static Path {
    static MODEL: OnceLock<PathBuf> = OnceLock::new();
    MODEL.get_or_init(|| microlm_tests::converted("q8_0"))
}

fn reference_case(name: &str) -> Value {
    let path = root().join("../shared/reference/stories260K_generate.json");
    let all: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    all["cases"].as_array().unwrap().iter().find(|c| c["name"] == name).unwrap().clone()
}

/// `generate`/`qemu` flags for a reference case.
fn case_flags(case: &Value) -> Vec<String> {
    let mut flags = vec![
        "-p".to_string(),
        case["prompt"].as_str().unwrap().to_string(),
        "-n".into(),
        case["steps"].to_string(),
        "-t".into(),
        case["temperature"].to_string(),
        "--top-p".into(),
        case["topp"].to_string(),
    ];
    // The greedy cases have no seed; any seed gives the same argmax tokens.
    flags.extend(["-s".into(), case["seed"].as_u64().unwrap_or(1).to_string()]);
    flags
}

/// The last stdout line of a `--json` run, parsed.
fn last_json(out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim_end().rsplit('\n').next().unwrap()).unwrap()
}

/// `microlm qemu MODEL FLAGS --json` on the prebuilt firmware.
fn run_cli_qemu(model: &Path, flags: &[String]) -> Output {
    let start = Instant::now();
    let out = Command::new(microlm())
        .arg("qemu")
        .arg(model)
        .args(flags)
        .args(["--json", "--timeout", &BOUND.as_secs().to_string(), "--firmware"])
        .arg(firmware())
        .output()
        .unwrap();
    assert!(start.elapsed() < BOUND + Duration::from_secs(10), "microlm qemu overran its timeout");
    out
}

/// Runs a reference case on the board: ids equal llama2.c's, text equals the host's.
fn check_reference_case(name: &str) {
    let case = reference_case(name);
    let flags = case_flags(&case);
    let out = run_cli_qemu(model(), &flags);
    assert!(out.status.success(), "microlm qemu failed: {}", String::from_utf8_lossy(&out.stderr));
    let board = last_json(&out);
    assert_eq!(board["ids"], case["ids"], "{name}: board ids differ from llama2.c");

    let host = Command::new(microlm()).arg("generate").arg(model()).args(&flags).arg("--json").output().unwrap();
    assert!(host.status.success());
    let host = last_json(&host);
    assert_eq!(board["ids"], host["ids"], "{name}: board ids differ from the host's");
    assert_eq!(board["text"], host["text"], "{name}: board text differs from the host's");
    // The streamed text is the JSON text plus the final newline, as `generate` prints it.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let streamed = &stdout[..stdout.trim_end_matches('\n').rfind('\n').unwrap() + 1];
    assert_eq!(streamed, format!("{}\n", host["text"].as_str().unwrap()), "{name}: streamed text");
    assert!(board["instructions_per_token"].as_u64().unwrap() > 0);
    let stack = board["stack_peak_bytes"].as_u64().unwrap();
    assert!(stack > 0 && stack <= STACK_BOUND, "{name}: peak stack {stack} bytes exceeds the {STACK_BOUND}-byte bound");
}

/// Documented bound on the firmware's peak stack for a whole generation (measured about 3 KB).
const STACK_BOUND: u64 = 8 * 1024;

/// A q8_0 file on the board gives exactly the host's tokens, for every reference case's settings.
#[test]
fn qemu_q8_0_matches_host_for_every_case() {
    let all: Value =
        serde_json::from_slice(&std::fs::read(root().join("../shared/reference/stories260K_generate.json")).unwrap())
            .unwrap();
    for case in all["cases"].as_array().unwrap() {
        let flags = case_flags(case);
        let out = run_cli_qemu(q8_model(), &flags);
        assert!(out.status.success(), "microlm qemu failed: {}", String::from_utf8_lossy(&out.stderr));
        let board = last_json(&out);
        let host = Command::new(microlm()).arg("generate").arg(q8_model()).args(&flags).arg("--json").output().unwrap();
        assert!(host.status.success());
        let host = last_json(&host);
        assert_eq!(board["ids"], host["ids"], "{}: q8_0 board ids differ from the host's", case["name"]);
        assert_eq!(board["text"], host["text"]);
        assert!(board["stack_peak_bytes"].as_u64().unwrap() <= STACK_BOUND);
    }
}

#[test]
fn qemu_greedy_matches_llama2c() {
    check_reference_case("greedy");
}

#[test]
fn qemu_greedy_prompt_matches_llama2c() {
    check_reference_case("greedy_prompt");
}

#[test]
fn qemu_topp_matches_llama2c() {
    check_reference_case("topp");
}

#[test]
fn qemu_topp2_matches_llama2c() {
    check_reference_case("topp2");
}

#[test]
fn qemu_temp_matches_llama2c() {
    check_reference_case("temp");
}

/// A prompt with quotes, a backslash, a comma and doubled spaces reaches the firmware intact.
#[test]
fn qemu_prompt_quoting_matches_host() {
    let flags: Vec<String> =
        ["-p", r#"Tom  said "hi, Sue" \ then"#, "-n", "40", "-t", "0"].iter().map(|s| s.to_string()).collect();
    let out = run_cli_qemu(model(), &flags);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let host = Command::new(microlm()).arg("generate").arg(model()).args(&flags).arg("--json").output().unwrap();
    let (board, host) = (last_json(&out), last_json(&host));
    assert_eq!(board["ids"], host["ids"]);
    assert_eq!(board["prompt_tokens"], host["prompt_tokens"]);
}

/// `qemu --json` has `generate --json`'s keys for the same things, with the
/// same values (the host's throughput aside; the board adds its own figures),
/// for a run that reaches -n and one that fills its context.
#[test]
fn qemu_json_has_the_keys_and_values_of_generate_json() {
    for flags in [&["-p", "Once upon a time", "-n", "40", "-t", "0"][..], &["-n", "100", "-t", "0", "--ctx", "16"]] {
        let flags: Vec<String> = flags.iter().map(|s| s.to_string()).collect();
        let out = run_cli_qemu(model(), &flags);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let host = Command::new(microlm()).arg("generate").arg(model()).args(&flags).arg("--json").output().unwrap();
        assert!(host.status.success());
        let (board, host) = (last_json(&out), last_json(&host));
        let keys = |j: &Value| j.as_object().unwrap().keys().cloned().collect::<std::collections::BTreeSet<_>>();
        let (board_keys, host_keys) = (keys(&board), keys(&host));
        let host_only: Vec<_> = host_keys.difference(&board_keys).collect();
        let board_only: Vec<_> = board_keys.difference(&host_keys).collect();
        assert_eq!(host_only, ["tokens_per_s"], "{flags:?}");
        assert_eq!(board_only, ["instructions_per_token", "stack_peak_bytes"], "{flags:?}");
        for key in host_keys.intersection(&board_keys) {
            assert_eq!(board[key], host[key], "{flags:?}: {key}");
        }
    }
}

/// A finished direct QEMU run: exit code and the firmware's stdout.
struct Direct {
    code: Option<i32>,
    stdout: String,
}

/// Boots the firmware as docs/BOARDS.md shows (model via the generic loader, flags
/// via -append, which QEMU puts after the kernel file name as argv[0]), killing
/// QEMU after `BOUND`.
fn run_direct(model_bytes: Option<&[u8]>, append: &str) -> Direct {
    let mut cmd = Command::new("qemu-system-arm");
    cmd.args(["-M", "mps2-an386", "-nographic", "-serial", "null", "-monitor", "none"]).args([
        "-semihosting-config",
        "enable=on,target=native",
        "-icount",
        "shift=0",
    ]);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("qemu");
    std::fs::create_dir_all(&dir).unwrap();
    if let Some(bytes) = model_bytes {
        // One file per content, so parallel tests do not overwrite each other's model.
        let path = dir.join(format!("model-{:08x}-{}.mlm", crc(bytes), bytes.len()));
        std::fs::write(&path, bytes).unwrap();
        cmd.arg("-device").arg(format!("loader,addr=0x21000000,data={},data-len=4", bytes.len()));
        cmd.arg("-device").arg(format!("loader,file={},addr=0x21000020,force-raw=on", path.display()));
    }
    cmd.arg("-kernel").arg(firmware()).args(["-append", append]);
    let child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().unwrap();
    let Some((status, stdout)) = microlm_tests::wait_bounded(child, BOUND) else {
        panic!("QEMU ran longer than {BOUND:?}: the firmware hangs on '{append}'");
    };
    Direct { code: status.code(), stdout }
}

/// A cheap content hash for file names.
fn crc(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, &b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
}

fn good_model() -> Vec<u8> {
    std::fs::read(model()).unwrap()
}

/// Asserts a run failed with exit code 1 and an error line containing `expect`.
fn assert_error(run: &Direct, expect: &str) {
    assert_eq!(run.code, Some(1), "expected exit code 1; output:\n{}", run.stdout);
    let last = run.stdout.trim_end().rsplit('\n').next().unwrap();
    assert!(
        last.starts_with("error: ") && last.contains(expect),
        "expected an error line with '{expect}', got: {last}"
    );
}

#[test]
fn qemu_corrupt_model_is_an_error_exit() {
    let mut bytes = good_model();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    assert_error(&run_direct(Some(&bytes), "-n 8"), "checksum mismatch");

    let good = good_model();
    assert_error(&run_direct(Some(&good[..good.len() / 2]), "-n 8"), "not a valid model file");
    assert_error(&run_direct(Some(b"MLM\x1a not really a model file"), "-n 8"), "not a valid model file");
    assert_error(&run_direct(None, "-n 8"), "no model loaded");
}

#[test]
fn qemu_cli_reports_the_firmware_error() {
    // Settings the host accepts (it checks what `generate` checks) and the firmware refuses
    // (more positions than its ids buffer records): its error line, relayed.
    let flags: Vec<String> = ["-n", "9000", "--window", "--ctx", "64"].iter().map(|s| s.to_string()).collect();
    let out = run_cli_qemu(model(), &flags);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("error: the firmware reported: 9000 positions requested; this firmware records"),
        "{stderr}"
    );
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
}

#[test]
fn qemu_cli_checks_the_model_file_before_running_the_firmware() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("qemu");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("corrupt.mlm");
    let mut bytes = good_model();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    // The firmware is not even looked at: the host's parser refuses the file first.
    let out = Command::new(microlm())
        .arg("qemu")
        .arg(&path)
        .args(["-n", "8", "--firmware", "/nonexistent/firmware.elf"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is not a valid model file") && stderr.contains("checksum mismatch"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
}

#[test]
fn qemu_bad_command_line_is_an_error_exit() {
    let model = good_model();
    assert_error(&run_direct(Some(&model), "--bogus 3"), "unknown flag '--bogus'");
    assert_error(&run_direct(Some(&model), "-n"), "flag -n needs a value");
    assert_error(&run_direct(Some(&model), "-n many"), "invalid value 'many' for -n");
    assert_error(&run_direct(Some(&model), "-p \"unterminated"), "unterminated quote");
    assert_error(&run_direct(Some(&model), "stray"), "unexpected argument 'stray'");
    assert_error(&run_direct(Some(&model), "-t -1"), "invalid sampling settings");
    assert_error(&run_direct(Some(&model), "--ctx 100000"), "context length 100000");
    assert_error(&run_direct(Some(&model), "--arena 1000"), "arena too small: needs 666240 bytes, given 1000");
    assert_error(&run_direct(Some(&model), "--kv q4"), "invalid value 'q4' for --kv: expected f32, f16 or i8");
    assert_error(&run_direct(Some(&model), "--window 9999 --ctx 16"), "window mode with 9999 attention sinks");
}

/// Replaces the value of `key=` in a stats line with `*`.
fn mask(line: &str, key: &str) -> String {
    line.split(' ')
        .map(|f| if f.starts_with(&format!("{key}=")) { format!("{key}=*") } else { f.to_string() })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The firmware's exact output for the greedy_prompt case, as a golden file.
/// The instruction count and stack peak depend on the compiler, so they are
/// masked (and checked to be positive).
#[test]
fn qemu_golden_output() {
    let case = reference_case("greedy_prompt");
    let append = format!("-p \"{}\" -n {} -t 0", case["prompt"].as_str().unwrap(), case["steps"]);
    let run = run_direct(Some(&good_model()), &append);
    assert_eq!(run.code, Some(0), "{}", run.stdout);
    let (text, stats) = run.stdout.trim_end().rsplit_once('\n').unwrap();
    for key in ["instructions_per_token", "stack_peak_bytes"] {
        let value = stats.split(' ').find_map(|f| f.strip_prefix(&format!("{key}="))).unwrap();
        assert!(value.parse::<u64>().unwrap() > 0, "{key}={value}");
    }
    let actual = format!("{text}\n{}\n", mask(&mask(stats, "instructions_per_token"), "stack_peak_bytes"));
    let golden = root().join("tests/golden/qemu_greedy_prompt.out");
    if std::env::var_os("MICROLM_BLESS").is_some() {
        std::fs::write(&golden, &actual).unwrap();
    }
    let expected = std::fs::read_to_string(&golden).expect("golden file (MICROLM_BLESS=1 writes it)");
    assert_eq!(actual, expected, "firmware output differs from {}", golden.display());
}

/// Under -icount shift=0 the instruction count is a property of the code, not of the machine's load.
#[test]
fn qemu_instruction_count_is_deterministic() {
    let model = good_model();
    let stats = |run: Direct| {
        assert_eq!(run.code, Some(0), "{}", run.stdout);
        let line = run.stdout.trim_end().rsplit('\n').next().unwrap().to_string();
        line.split(' ').find_map(|f| f.strip_prefix("instructions_per_token=")).unwrap().to_string()
    };
    let a = stats(run_direct(Some(&model), "-n 24 -t 0"));
    let b = stats(run_direct(Some(&model), "-n 24 -t 0"));
    assert_eq!(a, b);
}

/// Instructions per token are deterministic, so their budget is a test: 256 greedy
/// tokens of stories260K (docs/PERFORMANCE.md). A regression in the kernels,
/// the attention loops or the exp fails here. q8_0 (787,696 measured) is held
/// to the 800,000 target and f32 (686,397) to about 3 % above its count. Token
/// p costs base + slope · p, so the averages over 256 and 128 tokens differ by
/// 64 · slope: the attention cost of one more cache position (1,993 for q8_0,
/// 2,009 for f32: 40 heads of 8 over an f32 cache), held to 2,100 instructions.
#[test]
fn qemu_instructions_per_token_within_budget() {
    let count = |model: &Path, steps: u32| {
        let out = run_cli_qemu(model, &["-t".into(), "0".into(), "-n".into(), steps.to_string()]);
        last_json(&out)["instructions_per_token"].as_u64().unwrap()
    };
    for (model, budget) in [(q8_model(), 800_000u64), (model(), 707_000)] {
        let (full, half) = (count(model, 256), count(model, 128));
        let per_position = (full - half) / 64;
        println!("{}: {full} instructions per token, {per_position} per position", model.display());
        assert!(full <= budget, "{}: {full} instructions per token, budget {budget}", model.display());
        assert!(per_position <= 2_100, "{}: {per_position} instructions per position", model.display());
    }
}

/// `microlm qemu` without --firmware builds the board crate itself.
#[test]
fn qemu_cli_builds_the_firmware() {
    // Build once through the helper first, so this only checks the CLI's own cargo call.
    firmware();
    let out = Command::new(microlm())
        .arg("qemu")
        .arg(model())
        .args(["-n", "16", "-t", "0", "--json", "--timeout", "120"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let greedy = reference_case("greedy");
    let ids = last_json(&out)["ids"].as_array().unwrap().clone();
    assert_eq!(ids[..], greedy["ids"].as_array().unwrap()[..17]);
}

/// Without QEMU on PATH the CLI says how to install it.
#[test]
fn qemu_missing_says_how_to_install() {
    let empty = Path::new(env!("CARGO_TARGET_TMPDIR")).join("qemu/empty-path");
    std::fs::create_dir_all(&empty).unwrap();
    let out = Command::new(microlm()).arg("qemu").arg(model()).env("PATH", &empty).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("apt-get install qemu-system-arm"), "{stderr}");
}

/// A reader that closes the pipe (`| head`) ends the run quietly with exit code 0,
/// as for `microlm generate`: QEMU is killed at once, not left until the timeout.
#[test]
fn qemu_cli_ends_when_the_reader_closes_the_pipe() {
    let start = Instant::now();
    let mut child = Command::new(microlm())
        .arg("qemu")
        .arg(q8_model())
        .args(["-n", "8000", "--window", "-t", "0", "--timeout", "60", "--firmware"])
        .arg(firmware())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 20];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    // The pipe's read end is dropped here: the next write fails.
    let out = child.wait_with_output().unwrap();
    assert!(start.elapsed() < Duration::from_secs(30), "{:?}", start.elapsed());
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A run longer than --timeout is killed and reported, not waited for. The run is
/// on riscv32-virt (soft float, about 11 M instructions per token), whose 256
/// greedy tokens (2.8 G instructions; they end before BOS) take several seconds
/// on any machine: on mps2-an386 a greedy story ends at BOS within 0.3 G, which a
/// fast machine runs in under the second.
#[test]
fn qemu_cli_kills_a_run_past_its_timeout() {
    let run = || {
        Command::new(microlm())
            .arg("qemu")
            .arg(q8_model())
            .args(["--machine", "riscv32-virt", "-n", "256", "-t", "0", "--timeout", "1"])
            .output()
            .unwrap()
    };
    // The first call builds the firmware (the model is embedded), which the timeout does
    // not cover; the second finds it built.
    let _ = run();
    let start = Instant::now();
    let out = run();
    assert!(start.elapsed() < Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("did not finish within 1 s and was killed"), "{stderr}");
}

/// `--kv` and `--window` reach the firmware: with an i8 or f16 cache, in window
/// mode past the end of a small context, the board says what the host says.
#[test]
fn qemu_kv_dtypes_and_window_match_host() {
    for kv in ["i8", "f16"] {
        let flags: Vec<String> = ["-n", "150", "-t", "0", "--ctx", "64", "--kv", kv, "--window", "4"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let out = run_cli_qemu(model(), &flags);
        assert!(out.status.success(), "{kv}: {}", String::from_utf8_lossy(&out.stderr));
        let host = Command::new(microlm()).arg("generate").arg(model()).args(&flags).arg("--json").output().unwrap();
        assert!(host.status.success(), "{kv}: {}", String::from_utf8_lossy(&host.stderr));
        let (board, host) = (last_json(&out), last_json(&host));
        assert_eq!(board["ids"], host["ids"], "{kv}: board ids differ from the host's");
        // Window mode ran past the 64-position cache.
        assert_eq!(board["stop"], "steps", "{kv}");
        assert_eq!(board["ids"].as_array().unwrap().len(), 151, "{kv}");
        let inspect = Command::new(microlm())
            .args(["inspect", "--ctx", "64", "--kv", kv, "--json"])
            .arg(model())
            .output()
            .unwrap();
        let plan: Value = serde_json::from_slice(&inspect.stdout).unwrap();
        assert_eq!(board["arena_bytes"], plan["arena_bytes"], "{kv}: the board's arena is the plan");
    }
}

/// A header-only 32-bit little-endian ELF file for `machine` (40 = ARM, 62 = x86-64), no sections.
fn bare_elf(machine: u16) -> Vec<u8> {
    let mut elf = vec![0x7f, b'E', b'L', b'F', 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    for half in [2u16, machine] {
        elf.extend_from_slice(&half.to_le_bytes());
    }
    for word in [1u32, 0, 0, 0, 0x0500_0400] {
        elf.extend_from_slice(&word.to_le_bytes());
    }
    for half in [52u16, 32, 0, 40, 0, 0] {
        elf.extend_from_slice(&half.to_le_bytes());
    }
    elf
}

/// `--firmware` that is not a board firmware (text, an ELF for another
/// architecture, an ARM ELF without the model symbols) is one error line, exit 1.
#[test]
fn qemu_cli_rejects_a_file_that_is_not_a_firmware() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("qemu");
    std::fs::create_dir_all(&dir).unwrap();
    let notes = dir.join("notes.txt");
    std::fs::write(&notes, "not a firmware\n").unwrap();
    let x86 = dir.join("x86.elf");
    std::fs::write(&x86, bare_elf(62)).unwrap();
    let arm = dir.join("arm.elf");
    std::fs::write(&arm, bare_elf(40)).unwrap();
    for (file, why) in [(&notes, "(not an ELF file)"), (&x86, "not Arm)"), (&arm, "(no _model_start symbol)")] {
        for machine in ["mps2-an386", "mps2-an505"] {
            let out = Command::new(microlm())
                .arg("qemu")
                .arg(model())
                .args(["-n", "4", "--machine", machine, "--firmware"])
                .arg(file)
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(1), "{}", file.display());
            let stderr = String::from_utf8_lossy(&out.stderr);
            let expect = format!("error: {} is not a microlm board firmware ", file.display());
            assert!(stderr.starts_with(&expect) && stderr.trim_end().ends_with(why), "{stderr}");
            assert_eq!(stderr.lines().count(), 1, "{stderr}");
        }
    }
}
