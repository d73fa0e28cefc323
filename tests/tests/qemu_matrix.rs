//! The device-only code paths (Cortex-M DSP block sums, the hard-float
//! attention loops, the board glue) held to the same settings as the portable
//! code: a matrix of weight dtypes, KV cache dtypes, window mode and sampler
//! settings, each run on a QEMU board and compared with `microlm generate` on
//! the host for the same file and flags (ids and text, exactly).
//!
//! mps2-an386 (Cortex-M4F: DSP asm and FPU loops) gets the full matrix,
//! mps2-an505 (Cortex-M33) a slice of it. One firmware build per board; every
//! case reuses it. The cases are chosen to reach each path once: window mode
//! wrapping a small ring several times (with 0, 1, 4 and 8 sinks), ending on
//! the ring's last slot; each KV dtype with each weight dtype somewhere; greedy,
//! temperature, top-p, top-k, min-p and their combinations with several seeds.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use microlm_tests::{cli, converted};
use serde_json::Value;

/// Longest a single `microlm qemu` run may take (QEMU is killed after it).
const TIMEOUT_S: &str = "120";

/// The board's firmware ELF, built once per board with cargo in its own directory.
fn firmware(board: &str) -> PathBuf {
    static ELFS: OnceLock<std::sync::Mutex<Vec<(String, PathBuf)>>> = OnceLock::new();
    let elfs = ELFS.get_or_init(Default::default);
    let mut elfs = elfs.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, elf)) = elfs.iter().find(|(b, _)| b == board) {
        return elf.clone();
    }
    let elf = microlm_tests::build_firmware(board, None, &[], &[]);
    elfs.push((board.to_string(), elf.clone()));
    elf
}

/// The last stdout line of a `--json` run, parsed.
fn last_json(out: &Output, what: &str) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim_end().rsplit('\n').next().unwrap_or(""))
        .unwrap_or_else(|_| panic!("{what}: no JSON last line; stderr:\n{}", String::from_utf8_lossy(&out.stderr)))
}

/// One matrix case: weight dtype of the file and the flags shared by `generate` and `qemu`.
struct Case {
    weights: &'static str,
    flags: &'static str,
}

const fn case(weights: &'static str, flags: &'static str) -> Case {
    Case { weights, flags }
}

/// Splits a case's flags on spaces; `_` inside a word stands for a space (prompts).
fn words(flags: &str) -> Vec<String> {
    flags.split(' ').filter(|w| !w.is_empty()).map(|w| w.replace('_', " ")).collect()
}

/// Runs every case on `machine` and on the host; fails listing every case that differs.
fn run_matrix(machine: &str, board: &str, cases: &[Case]) {
    let elf = firmware(board);
    let mut failures = Vec::new();
    for c in cases {
        let model = converted(c.weights);
        let flags = words(c.flags);
        let what = format!("{machine} {} {}", c.weights, c.flags);
        let out = Command::new(cli())
            .arg("qemu")
            .arg(&model)
            .args(&flags)
            .args(["--machine", machine, "--json", "--timeout", TIMEOUT_S, "--firmware"])
            .arg(&elf)
            .stdin(Stdio::null())
            .output()
            .expect("run microlm qemu");
        let host = Command::new(cli()).arg("generate").arg(&model).args(&flags).arg("--json").output().unwrap();
        assert!(host.status.success(), "{what}: generate failed: {}", String::from_utf8_lossy(&host.stderr));
        let host = last_json(&host, &what);
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            failures.push(format!("{what}: the board failed: {}", stderr.trim_end().rsplit('\n').next().unwrap_or("")));
            continue;
        }
        let board = last_json(&out, &what);
        if board["ids"] != host["ids"] {
            let (b, h) = (board["ids"].as_array().unwrap(), host["ids"].as_array().unwrap());
            let at = b.iter().zip(h).position(|(x, y)| x != y).unwrap_or(b.len().min(h.len()));
            failures.push(format!(
                "{what}: ids differ from the host's from index {at} ({} vs {} ids)",
                b.len(),
                h.len()
            ));
        } else if board["text"] != host["text"] {
            failures.push(format!("{what}: text differs from the host's"));
        } else if board["stop"] != host["stop"] {
            failures.push(format!("{what}: stop {} vs the host's {}", board["stop"], host["stop"]));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases differ:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

/// Cortex-M4F: every weight dtype with every KV dtype, window mode wrapping the
/// ring with several sink counts, and each sampler setting.
///
/// The first case (`--window --ctx 64 -n 261`, f32 cache) is the run whose last
/// ring slot took exp's slow path for the last KV head, which panicked in the
/// hard-float value pass before 1ccf5a1; the other window cases wrap rings of
/// other sizes with other sink counts and KV dtypes.
#[test]
fn an386_matrix_matches_host() {
    run_matrix(
        "mps2-an386",
        "qemu-mps2-an386",
        &[
            // Window mode, greedy, each KV dtype: the ring wraps 3-4 times.
            case("f32", "-t 0 --window --ctx 64 -n 261"),
            case("f32", "-t 0 --window 4 --ctx 64 -n 261 --kv f16"),
            case("f32", "-t 0 --window 4 --ctx 64 -n 261 --kv i8"),
            case("f32", "-t 0 --window 0 --ctx 32 -n 160"),
            case("f32", "-t 0 --window 1 --ctx 33 -n 131 --kv i8"),
            case("q8_0", "-t 0 --window 8 --ctx 40 -n 200"),
            case("q4_0", "-t 0 --window 2 --ctx 48 -n 190 --kv f16"),
            // Window mode, sampled.
            case("q8_0", "-t 1.0 --top-p 0.9 -s 7 --window --ctx 64 -n 261 --kv i8"),
            case("q4_0", "-t 0.8 --top-k 20 -s 3 --window 1 --ctx 31 -n 100"),
            // Weight dtype x KV dtype, full context, the sampler settings.
            case("f32", "-p Once_upon_a_time -t 1.0 --top-p 1.0 -s 42 -n 120 --kv f16"),
            case("f32", "-t 0.5 --top-k 5 --min-p 0.05 -s 5 -n 80 --kv i8"),
            case("q8_0", "-t 1.2 --top-p 0.8 -s 99 -n 96"),
            case("q8_0", "-p Lily -t 1.0 --min-p 0.1 -s 11 -n 96 --kv f16"),
            case("q4_0", "-t 1.0 --top-k 1 -s 2 -n 64"),
            case("q4_0", "-t 0.9 --top-p 0.95 --top-k 40 --min-p 0.02 -s 123456789 -n 96 --kv i8"),
            case("q4_0", "-p Tim_and_Sue -t 0 -n 64 --kv f32"),
            case("q4_16", "-t 0 --window 4 --ctx 40 -n 150 --kv i8"),
            case("q4_16", "-p Lily -t 0.9 --top-p 0.9 -s 17 -n 96 --kv f16"),
        ],
    );
}

/// Cortex-M33: a slice of the matrix (window mode with each KV dtype, each
/// weight dtype, a sampled run).
#[test]
fn an505_matrix_matches_host() {
    run_matrix(
        "mps2-an505",
        "qemu-mps2-an505",
        &[
            case("f32", "-t 0 --window --ctx 64 -n 261"),
            case("q8_0", "-t 0 --window 1 --ctx 32 -n 120 --kv i8"),
            case("q4_0", "-t 1.0 --top-p 0.9 -s 7 --window 0 --ctx 48 -n 150 --kv f16"),
            case("q8_0", "-t 0.7 --top-k 10 --min-p 0.05 -s 9 -n 64"),
            case("q4_16", "-t 0.8 --top-k 20 -s 4 -n 80 --kv i8"),
        ],
    );
}
