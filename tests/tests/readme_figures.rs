//! The README's performance table (written by `scripts/bench.sh` between
//! `<!-- bench:begin -->` and `<!-- bench:end -->`) states the measured
//! instruction counts: each row's instructions per token and per cache position
//! are re-measured on mps2-an386 (QEMU runs of 256 and 128 tokens, exact under
//! -icount) and must equal the table.
//! Timings in the table are machine-dependent and not checked.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use microlm_tests::{cli, converted, root};
use serde_json::Value;

/// (weights, KV cache, instructions per token, per cache position) of each row of the README table.
fn table() -> Vec<(String, String, u64, u64)> {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("read README.md");
    let (_, rest) = readme.split_once("<!-- bench:begin -->").expect("README.md has <!-- bench:begin -->");
    let (table, _) = rest.split_once("<!-- bench:end -->").expect("README.md has <!-- bench:end -->");
    table
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.trim().trim_matches('|').split('|').map(str::trim).collect();
            let count = cells.get(2)?.replace(',', "").parse().ok()?;
            let per_position = cells.get(3)?.replace(',', "").parse().ok()?;
            Some((cells[0].to_string(), cells[1].to_string(), count, per_position))
        })
        .collect()
}

/// The mps2-an386 firmware, built once.
fn firmware() -> &'static Path {
    static ELF: OnceLock<PathBuf> = OnceLock::new();
    ELF.get_or_init(|| microlm_tests::build_firmware("qemu-mps2-an386", None, &[], &[]))
}

#[test]
fn readme_instruction_counts_are_the_measured_ones() {
    let rows = table();
    assert_eq!(rows.len(), 8, "the README table has one row per weights (f32, q8_0, q4_0, q4_16) and cache (f32, i8)");
    let mut stale = Vec::new();
    for (dtype, kv, stated, stated_per_position) in rows {
        let count = |steps: &str| {
            let out = Command::new(cli())
                .arg("qemu")
                .arg(converted(&dtype))
                .args(["-t", "0", "-n", steps, "--kv", &kv, "--json", "--timeout", "300", "--firmware"])
                .arg(firmware())
                .output()
                .expect("run microlm qemu");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let stdout = String::from_utf8_lossy(&out.stdout);
            let json: Value = serde_json::from_str(stdout.lines().last().unwrap_or("")).expect("a JSON last line");
            json["instructions_per_token"].as_u64().expect("instructions_per_token")
        };
        let (measured, half) = (count("256"), count("128"));
        let per_position = (measured - half) / 64;
        println!("{dtype} weights, {kv} cache: README {stated} and {stated_per_position}, measured {measured} and {per_position}");
        if (measured, per_position) != (stated, stated_per_position) {
            stale.push(format!(
                "{dtype}/{kv}: README {stated} per token and {stated_per_position} per position, measured {measured} and {per_position}"
            ));
        }
    }
    assert!(stale.is_empty(), "README performance table is stale ({}): run scripts/bench.sh", stale.join("; "));
}

/// The README's quantization quality table (written by `scripts/quality.sh`
/// between `<!-- quality:begin -->` and `<!-- quality:end -->`) is re-measured:
/// every file quantized with its row's flags and scored on the same tokens
/// (deterministic), and the table must equal what the script would write.
#[test]
fn readme_quality_table_is_the_measured_one() {
    let out = Command::new("bash")
        .arg(root().join("scripts/quality.sh"))
        .arg("--check")
        .current_dir(root())
        .output()
        .expect("run scripts/quality.sh --check");
    assert!(out.status.success(), "scripts/quality.sh --check failed:\n{}", String::from_utf8_lossy(&out.stderr));
}
