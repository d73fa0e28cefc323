//! The README's table of the hardware boards' flash and RAM (between the
//! `board-sizes` marker comments in "Flash a real board") is what the
//! firmwares measure now: each board is built as the README's command builds
//! it (stories260K q8_0 embedded, an int8 KV cache, the context the command
//! sets), its ELF measured (`support/firmware.rs`, as the fit tests do), the
//! largest context with an int8 cache worked out from the same build, and the
//! instructions per token counted under QEMU `-icount` on the machine with the
//! board's core. The table also gives an estimate of tokens/s on the board:
//! its clock over the instructions per token at an assumed 1 instruction per
//! cycle. A table that differs fails the test (flash within 64 bytes and
//! instructions per token within 0.1 %, see [`same_table`]);
//! `scripts/board-sizes.sh` (this test with MICROLM_WRITE_README=1) writes it.
//!
//! The same README section states the code size of the default firmware,
//! `boards/qemu-mps2-an386` (runtime and board, no model: `.text + .rodata`,
//! as `llvm-size -A` gives them) between its own `an386-code-size` markers;
//! [`readme_an386_code_size_is_what_the_firmware_measures`] holds each figure
//! to within 64 bytes ([`CODE_SIZE_DRIFT`]) and the verdict against the budget
//! exactly, and the same script writes it.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};

use microlm_tests::{cli, converted, root};
use serde_json::Value;

#[path = "support/firmware.rs"]
mod firmware;

/// The README's markers around the table.
const BEGIN: &str =
    "<!-- board-sizes: begin (scripts/board-sizes.sh writes this table; tests/tests/board_sizes.rs checks it) -->";
const END: &str = "<!-- board-sizes: end -->";

/// The model's whole context (stories260K's seq_len).
const SEQ_LEN: usize = 512;
/// Stack every board's memory map keeps below (or beside) its data.
const STACK: u64 = 8 << 10;
/// The run whose instructions per token the estimate uses: greedy, from this prompt.
const PROMPT: &str = "Once upon a time";
const STEPS: usize = 64;
/// The instructions per cycle the estimate assumes.
const IPC: f64 = 1.0;

/// A hardware board and how the README builds it.
struct Board {
    dir: &'static str,
    chip: &'static str,
    target: &'static str,
    /// Core clock the firmware sets, in Hz.
    clock_hz: u64,
    /// The README's MICROLM_CTX (the model's seq_len where the command sets none).
    ctx: usize,
    /// Flash and SRAM, (base, bytes); the ESP32-C3's are measured its own way.
    flash: (u64, u64),
    ram: (u64, u64),
    /// The QEMU machine with the same core, and the context to run it at.
    qemu: (&'static str, usize),
}

const BOARDS: [Board; 4] = [
    Board {
        dir: "stm32f405",
        chip: "STM32F405RG (Cortex-M4F)",
        target: "thumbv7em-none-eabihf",
        clock_hz: 168_000_000,
        ctx: 256,
        flash: (0x0800_0000, 1 << 20),
        ram: (0x2000_0000, 128 << 10),
        qemu: ("netduinoplus2", 256),
    },
    Board {
        dir: "rp2350",
        chip: "RP2350 (Cortex-M33)",
        target: "thumbv8m.main-none-eabihf",
        clock_hz: 150_000_000,
        ctx: SEQ_LEN,
        flash: (0x1000_0000, 4 << 20),
        ram: (0x2000_0000, 520 << 10),
        qemu: ("mps2-an505", SEQ_LEN),
    },
    Board {
        dir: "nrf52840",
        chip: "nRF52840 (Cortex-M4F)",
        target: "thumbv7em-none-eabihf",
        clock_hz: 64_000_000,
        ctx: SEQ_LEN,
        flash: (0, 1 << 20),
        ram: (0x2000_0000, 256 << 10),
        qemu: ("netduinoplus2", 256),
    },
    Board {
        dir: "esp32c3",
        chip: "ESP32-C3 (RV32IMC)",
        target: "riscv32imc-unknown-none-elf",
        clock_hz: 160_000_000,
        ctx: 256,
        flash: (0, firmware::esp32c3::FLASH_BYTES),
        ram: firmware::esp32c3::DRAM,
        qemu: ("riscv32-virt", 256),
    },
];

/// One table row's measurements.
struct Row {
    flash: u64,
    ram: u64,
    largest: usize,
    per_token: u64,
}

/// Builds and measures `board` with `model`; `per_token` counts its core's instructions per token.
fn measure(board: &Board, model: &Path, per_token: &mut BTreeMap<(&'static str, usize), u64>) -> Row {
    let elf = firmware::build(board.dir, board.target, model, board.ctx, "i8", &[])
        .unwrap_or_else(|e| panic!("{}: build failed:\n{e}", board.dir));
    // RAM: .data and .bss (the arena) from their start; the stack gets the rest.
    let (flash, ram) = if board.dir == "esp32c3" {
        // Flash: the app image espflash writes (`espflash save-image`), MMU-page padding included.
        let image = firmware::esp32c3_app_image(&std::fs::read(&elf).unwrap()).expect("espflash");
        (image.len() as u64, firmware::esp32c3_footprint(&elf).ram)
    } else {
        let fp = firmware::footprint(board.dir, board.flash, board.ram, &elf);
        (fp.flash, fp.ram.1 - fp.ram.0)
    };
    // Beside the arena, the ids buffer grows 4 bytes per position; the rest is fixed.
    let with_ctx = |ctx: usize| firmware::plan(model, ctx, "i8") + 4 * (ctx as u64 + 1);
    let fixed = ram - with_ctx(board.ctx);
    let largest = firmware::largest(board.ctx.min(64), SEQ_LEN, |ctx| with_ctx(ctx) + fixed + STACK <= board.ram.1);
    let per_token = *per_token.entry(board.qemu).or_insert_with(|| instructions_per_token(board, model));
    Row { flash, ram, largest, per_token }
}

/// `microlm qemu MODEL --machine M -p PROMPT -n STEPS -t 0 --kv i8 --ctx C`: instructions per token.
fn instructions_per_token(board: &Board, model: &Path) -> u64 {
    let (machine, ctx) = board.qemu;
    let out = Command::new(cli())
        .arg("qemu")
        .arg(model)
        .args(["--machine", machine, "--json", "--timeout", "300", "-p", PROMPT, "-n"])
        .arg(STEPS.to_string())
        .args(["-t", "0", "--kv", "i8", "--ctx"])
        .arg(ctx.to_string())
        .stdin(Stdio::null())
        .output()
        .expect("run microlm qemu");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{machine}: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stats: Value = serde_json::from_str(stdout.trim_end().rsplit('\n').next().unwrap()).expect("a JSON line");
    assert_eq!(stats["positions"], STEPS, "{machine}: {stdout}");
    stats["instructions_per_token"].as_u64().unwrap()
}

/// 1234567 as `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The table and its notes, as the README holds them between the markers.
fn table(rows: &[(&Board, Row)]) -> String {
    let mut t = String::from(
        "| board | chip, clock | flash used / size (bytes) | RAM used / size (bytes) | model | ctx | KV cache | \
         largest ctx that fits (i8 KV) | instructions per token (QEMU machine) | tokens/s at the clock (estimate) |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for (board, row) in rows {
        let largest = if row.largest == SEQ_LEN { format!("{SEQ_LEN} (the model's)") } else { row.largest.to_string() };
        let per_s = board.clock_hz as f64 * IPC / row.per_token as f64;
        t.push_str(&format!(
            "| `boards/{}` | {}, {} MHz | {} / {} | {} / {} | stories260K q8_0 | {} | i8 | {} | {} ({}) | ~{:.0} |\n",
            board.dir,
            board.chip,
            board.clock_hz / 1_000_000,
            thousands(row.flash),
            thousands(board.flash.1),
            thousands(row.ram),
            thousands(board.ram.1),
            board.ctx,
            largest,
            thousands(row.per_token),
            board.qemu.0,
            per_s,
        ));
    }
    t.push_str(&format!(
        "\nFlash: the image from the flash base to its last byte (the ESP32-C3: its ESP-IDF app image, as `espflash save-image` writes it). \
         RAM: .data and .bss with the arena; the stack gets the rest, at least {} KiB. Largest ctx: the most \
         positions whose arena and ids fit beside the same data and that stack. Instructions per token: \
         {STEPS} greedy tokens from \"{PROMPT}\" on the QEMU machine with the board's core \
         (the nRF52840's Cortex-M4F: netduinoplus2's), at ctx 512 on mps2-an505 and 256 on the others, counted \
         under `-icount`. Tokens/s is an estimate, not a measurement: the clock \
         over the instructions per token at an assumed {IPC:.1} instruction per cycle; flash wait states, \
         cache misses and the ESP32-C3's multi-cycle loads make the real figure lower.\n",
        STACK >> 10
    ));
    t
}

#[test]
fn readme_board_table_is_what_the_firmwares_measure() {
    let model = converted("q8_0");
    let mut per_token = BTreeMap::new();
    let rows: Vec<(&Board, Row)> = BOARDS.iter().map(|b| (b, measure(b, &model, &mut per_token))).collect();
    let table = table(&rows);
    print!("{table}");
    let path = root().join("README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    let (Some(begin), Some(end)) = (readme.find(BEGIN), readme.find(END)) else {
        panic!("README.md has no `{BEGIN}` ... `{END}` markers");
    };
    let start = begin + BEGIN.len() + 1;
    let current = &readme[start..end];
    if std::env::var_os("MICROLM_WRITE_README").is_some() {
        let updated = format!("{}{table}{}", &readme[..start], &readme[end..]);
        std::fs::write(&path, updated).unwrap();
        println!("README.md: board table written");
        return;
    }
    if let Err(diff) = same_table(current, &table) {
        panic!("README.md's board table is out of date ({diff}): run scripts/board-sizes.sh\nREADME:\n{current}\nmeasured:\n{table}");
    }
}

/// The README's markers around the mps2-an386 code size line.
const CODE_BEGIN: &str =
    "<!-- an386-code-size: begin (scripts/board-sizes.sh writes this line; tests/tests/board_sizes.rs checks it) -->";
const CODE_END: &str = "<!-- an386-code-size: end -->";

/// The flash budget of the mps2-an386 firmware's code and constants.
const AN386_CODE_BUDGET: u64 = 96 << 10;

/// `.text` and `.rodata` bytes of a firmware ELF (the section sizes `llvm-size -A` prints).
fn text_and_rodata(elf: &Path) -> (u64, u64) {
    use object::{Object as _, ObjectSection as _};
    let data = std::fs::read(elf).unwrap();
    let file = object::File::parse(&*data).unwrap();
    let size = |name: &str| file.section_by_name(name).map_or(0, |s| s.size());
    (size(".text"), size(".rodata"))
}

/// The README line for the mps2-an386 firmware's `.text` and `.rodata`.
fn code_size_line(text: u64, rodata: u64) -> String {
    let total = text + rodata;
    let fits = if total <= AN386_CODE_BUDGET { "within" } else { "over" };
    format!(
        "The default firmware, `boards/qemu-mps2-an386` (Cortex-M4F: the runtime and the board code, no model), \
         takes {} bytes of code and constants: `.text` {} + `.rodata` {} (`llvm-size -A` on its ELF, built as \
         `microlm qemu` builds it), {fits} its budget of {} bytes (96 KiB).\n",
        thousands(total),
        thousands(text),
        thousands(rodata),
        thousands(AN386_CODE_BUDGET),
    )
}

#[test]
fn readme_an386_code_size_is_what_the_firmware_measures() {
    let elf = microlm_tests::build_firmware("qemu-mps2-an386", None, &[], &[]);
    let (text, rodata) = text_and_rodata(&elf);
    let line = code_size_line(text, rodata);
    print!("{line}");
    let path = root().join("README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    let (Some(begin), Some(end)) = (readme.find(CODE_BEGIN), readme.find(CODE_END)) else {
        panic!("README.md has no `{CODE_BEGIN}` ... `{CODE_END}` markers");
    };
    let start = begin + CODE_BEGIN.len() + 1;
    if std::env::var_os("MICROLM_WRITE_README").is_some() {
        let updated = format!("{}{line}{}", &readme[..start], &readme[end..]);
        std::fs::write(&path, updated).unwrap();
        println!("README.md: mps2-an386 code size written");
        return;
    }
    let stated = &readme[start..end];
    assert!(
        code_size_matches(stated, &line),
        "README.md's mps2-an386 code size is out of date: run scripts/board-sizes.sh\nREADME:   {stated}measured: {line}"
    );
}

/// Bytes by which a stated section size or a board's flash may differ from a
/// measurement: a checkout at another path hashes the runtime's path dependency
/// differently, which can move the code's alignment padding or an inlining
/// decision by a few bytes (8 seen in the mps2-an386 code, 32 in the STM32F405's flash).
const CODE_SIZE_DRIFT: u64 = 64;

/// Whether a stated code size line equals the measured one but for each figure
/// being within [`CODE_SIZE_DRIFT`] bytes (the words, and so the verdict against
/// the budget, must be the same).
fn code_size_matches(stated: &str, measured: &str) -> bool {
    let split = |line: &str| -> (Vec<u64>, String) {
        let mut numbers = Vec::new();
        let mut words = String::new();
        let mut digits = String::new();
        for c in line.chars().chain([' ']) {
            if c.is_ascii_digit() || (c == ',' && !digits.is_empty()) {
                digits.push(c);
                continue;
            }
            if !digits.is_empty() {
                numbers.push(digits.trim_end_matches(',').replace(',', "").parse().unwrap_or(u64::MAX));
                words.push('#');
                if digits.ends_with(',') {
                    words.push(',');
                }
                digits.clear();
            }
            words.push(c);
        }
        (numbers, words)
    };
    let ((a, wa), (b, wb)) = (split(stated), split(measured));
    wa == wb && a.len() == b.len() && a.iter().zip(&b).all(|(x, y)| x.abs_diff(*y) <= CODE_SIZE_DRIFT)
}

#[test]
fn the_code_size_comparison_allows_only_the_stated_drift() {
    let line = code_size_line(84_932, 12_176);
    assert!(code_size_matches(&line, &code_size_line(84_940, 12_176)));
    assert!(!code_size_matches(&line, &code_size_line(85_100, 12_176)));
    assert!(!code_size_matches(&line, &code_size_line(84_932, 12_300)));
    // Over the budget is a different line, whatever the bytes.
    assert!(!code_size_matches(&code_size_line(86_100, 12_176), &code_size_line(86_150, 12_176)));
    assert!(!code_size_matches(&line, &line.replace("within", "inside")));
}

/// Instructions per token may differ by this fraction between the README and a
/// measurement. The firmwares are built with remapped paths, but cargo still
/// hashes a path dependency outside the board's workspace (the runtime) by its
/// absolute path; the hash orders the symbols LLVM sees, and on RV32IMC that can
/// change an inlining decision: the same commit measured 11,368,518 and
/// 11,368,438 instructions per token in two checkouts (0.0007 %).
const INSTRUCTIONS_TOLERANCE: f64 = 0.001;

/// `Ok` when `readme` equals `measured` except for instructions per token within
/// [`INSTRUCTIONS_TOLERANCE`] (and the tokens/s estimate derived from it, within 1).
fn same_table(readme: &str, measured: &str) -> Result<(), String> {
    let (a, b): (Vec<_>, Vec<_>) = (readme.lines().collect(), measured.lines().collect());
    if a.len() != b.len() {
        return Err(format!("{} lines, measured {}", a.len(), b.len()));
    }
    for (x, y) in a.iter().zip(&b) {
        let (cx, cy): (Vec<_>, Vec<_>) = (x.split('|').collect(), y.split('|').collect());
        let is_row = x.starts_with("| `boards/") && cx.len() == 12 && cy.len() == 12;
        if !is_row {
            if x != y {
                return Err(format!("`{x}` should be `{y}`"));
            }
            continue;
        }
        for (i, (u, v)) in cx.iter().zip(&cy).enumerate() {
            let close = match i {
                9 => match (leading_number(u), leading_number(v)) {
                    (Some(p), Some(q)) => {
                        (p - q).abs() <= INSTRUCTIONS_TOLERANCE * q
                            && u.split_once('(').map(|t| t.1) == v.split_once('(').map(|t| t.1)
                    }
                    _ => u == v,
                },
                10 => match (leading_number(u), leading_number(v)) {
                    (Some(p), Some(q)) => (p - q).abs() <= 1.0,
                    _ => u == v,
                },
                // Flash used: within CODE_SIZE_DRIFT bytes (the path hash again), the size exact.
                3 => match (leading_number(u), leading_number(v)) {
                    (Some(p), Some(q)) => {
                        (p - q).abs() <= CODE_SIZE_DRIFT as f64
                            && u.split_once('/').map(|t| t.1) == v.split_once('/').map(|t| t.1)
                    }
                    _ => u == v,
                },
                _ => u == v,
            };
            if !close {
                return Err(format!("{}: `{}` should be `{}`", cx[1].trim(), u.trim(), v.trim()));
            }
        }
    }
    Ok(())
}

/// The number a cell starts with: `11,368,518 (riscv32-virt)` is 11368518, `~14` is 14.
fn leading_number(cell: &str) -> Option<f64> {
    let digits: String =
        cell.trim().trim_start_matches('~').chars().take_while(|c| c.is_ascii_digit() || *c == ',').collect();
    digits.replace(',', "").parse().ok()
}

#[test]
fn the_table_comparison_allows_only_the_stated_drift() {
    let row = |flash: &str, ipt: &str, per_s: &str| {
        format!("| `boards/esp32c3` | ESP32-C3 (RV32IMC), 160 MHz | {flash} / 4,194,304 | 111,180 / 320,512 | stories260K q8_0 | 256 | i8 | 512 (the model's) | {ipt} (riscv32-virt) | ~{per_s} |\nnotes\n")
    };
    let base = row("535,888", "11,368,518", "14");
    assert_eq!(same_table(&base, &row("535,888", "11,368,438", "14")), Ok(()));
    assert_eq!(same_table(&base, &row("535,920", "11,368,518", "14")), Ok(()), "32 bytes of flash drift");
    assert!(same_table(&base, &row("535,988", "11,368,518", "14")).is_err(), "100 bytes of flash are a change");
    assert!(same_table(&base, &row("535,888", "11,400,000", "14")).is_err(), "0.3 % is a change");
    assert!(same_table(&base, &row("535,888", "11,368,518", "16")).is_err());
    assert!(same_table(&base, &base.replace("notes", "other notes")).is_err());
}
