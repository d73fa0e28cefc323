//! The other QEMU boards: mps2-an505 (Cortex-M33, model loaded into PSRAM)
//! says exactly what llama2.c says, and lm3s6965evb (Cortex-M3, model embedded
//! in 256 KiB flash, arena sized at build time for 64 KiB SRAM) says exactly
//! what the host says; both reject bad models, and a model or arena too big
//! for lm3s6965evb is one clear error line. netduinoplus2 (STM32F405, Cortex-M4F,
//! model embedded in 1 MiB flash, 128 KiB SRAM, text on USART1) says exactly what
//! the host says for stories260K q8_0 with an int8 KV cache, and fits the chip.
//! riscv32-virt (QEMU virt, RV32IMC, model embedded in the RAM image) says
//! exactly what the host says for the same q8_0 file and i8 cache, within an
//! instruction budget counted by `minstret`.
//!
//! mps3-an547 (Cortex-M55 with MVE/Helium, model loaded into DDR) says exactly
//! what the host says for stories260K q8_0 in the five reference settings,
//! keeps to its instruction budget, and its kernels binary passes the kernel
//! suite with the MVE block sums.
//!
//! Everything goes through `microlm qemu`, which builds the board crate with
//! cargo in a subprocess. The lm3s6965evb firmware is rebuilt for each model
//! and context, so those builds (and the runs on them) take turns.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};

use microlm_tests::{cli, converted, reference_cases, root, run_cli, run_convert, scratch_dir, shared, wait_bounded};
use serde_json::Value;

#[path = "support/firmware.rs"]
mod firmware;

/// Longest a single `microlm qemu` run may take (QEMU is killed after it).
const TIMEOUT_S: &str = "120";

/// The lm3s6965evb runs stories260K q4_0 in flash with an int8 KV cache of this
/// many positions: the 64 KiB SRAM holds 129 beside the 6 KiB stack reserve.
const LM3S_STEPS: usize = 128;
/// Peak stack the lm3s6965evb firmware may use: its memory.x keeps 6 KiB for the stack.
const LM3S_STACK_BOUND: u64 = 6 * 1024;

/// `microlm qemu MODEL --machine MACHINE ARGS --json`.
fn qemu(model: &Path, machine: &str, args: &[&str]) -> Output {
    Command::new(cli())
        .arg("qemu")
        .arg(model)
        .args(["--machine", machine, "--json", "--timeout", TIMEOUT_S])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run microlm qemu")
}

/// `microlm generate MODEL ARGS --json`.
fn generate(model: &Path, args: &[&str]) -> Value {
    let out = Command::new(cli()).arg("generate").arg(model).args(args).arg("--json").output().unwrap();
    assert!(out.status.success(), "generate failed: {}", String::from_utf8_lossy(&out.stderr));
    last_json(&out)
}

/// The last stdout line of a `--json` run, parsed.
fn last_json(out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim_end().rsplit('\n').next().unwrap()).expect("a JSON last line")
}

/// Asserts a failed run: exit code 1 and one `error: ` line containing `expect`.
fn assert_error(out: &Output, expect: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "expected exit code 1; stderr:\n{stderr}");
    let last = stderr.trim_end().rsplit('\n').next().unwrap();
    assert!(
        last.starts_with("error: ") && last.contains(expect),
        "expected an error line with '{expect}', got: {last}"
    );
}

/// The mps2-an505 firmware, built once (with cargo, in its own directory).
fn an505_firmware() -> &'static Path {
    static ELF: OnceLock<PathBuf> = OnceLock::new();
    ELF.get_or_init(|| microlm_tests::build_firmware("qemu-mps2-an505", None, &[], &[]))
}

/// All five llama2.c reference generations on the Cortex-M33, token for token;
/// the text equals the host's. The first run lets `microlm qemu` build the
/// firmware itself (a no-op once built), the rest run the prebuilt ELF.
#[test]
fn an505_matches_llama2c() {
    let model = converted("f32");
    let elf = an505_firmware();
    for (i, case) in reference_cases().iter().enumerate() {
        let (steps, temp, topp) = (case.steps.to_string(), case.temperature.to_string(), case.topp.to_string());
        // The greedy cases have no seed; any seed gives the same argmax tokens.
        let seed = case.seed.unwrap_or(1).to_string();
        let flags = ["-p", &case.prompt, "-n", &steps, "-t", &temp, "--top-p", &topp, "-s", &seed];
        let mut args = flags.to_vec();
        if i > 0 {
            args.extend(["--firmware", elf.to_str().unwrap()]);
        }
        let out = qemu(&model, "mps2-an505", &args);
        assert!(out.status.success(), "{}: {}", case.name, String::from_utf8_lossy(&out.stderr));
        let board = last_json(&out);
        let ids: Vec<u32> = serde_json::from_value(board["ids"].clone()).unwrap();
        assert_eq!(ids, case.ids, "{}: mps2-an505 ids differ from llama2.c", case.name);
        let host = generate(&model, &flags);
        assert_eq!(board["text"], host["text"], "{}: text differs from the host's", case.name);
        assert!(board["instructions_per_token"].as_u64().unwrap() > 0);
        assert!(board["stack_peak_bytes"].as_u64().unwrap() > 0);
    }
}

/// A corrupt model for the an505 is the parser's error and exit code 1, before any firmware runs.
#[test]
fn an505_corrupt_model_is_an_error_exit() {
    let mut bytes = std::fs::read(converted("f32")).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    let path = scratch_dir("qemu-boards").join("an505-corrupt.mlm");
    std::fs::write(&path, bytes).unwrap();
    let out = qemu(&path, "mps2-an505", &["-n", "8"]);
    assert_error(&out, "is not a valid model file");
    assert!(String::from_utf8_lossy(&out.stderr).contains("checksum mismatch"));
}

/// The synthetic checkpoint converted to f32 `.mlm`, once per test process.
fn synthetic_model(hidden_dim: usize) -> PathBuf {
    static MADE: Mutex<Vec<usize>> = Mutex::new(Vec::new());
    let mut made = MADE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch_dir("qemu-boards");
    let bin = dir.join(format!("synthetic-{hidden_dim}.bin"));
    let mlm = dir.join(format!("synthetic-{hidden_dim}.mlm"));
    if made.contains(&hidden_dim) {
        return mlm;
    }
    std::fs::write(&bin, microlm_tests::synthetic_checkpoint(hidden_dim, 1.0, 0x9E37_79B9_7F4A_7C15)).unwrap();
    let tok = shared().join("models/tok512.bin");
    let (code, _, err) = run_convert(&bin, &tok, &[], &mlm);
    assert_eq!(code, 0, "convert failed: {err}");
    made.push(hidden_dim);
    mlm
}

/// The model the lm3s6965evb runs: stories260K in q4_0 (161 KB), embedded in its flash.
fn lm3s_model() -> PathBuf {
    converted("q4_0")
}

/// lm3s6965evb builds replace one firmware file: one build-and-run at a time.
static LM3S: Mutex<()> = Mutex::new(());

fn lm3s(model: &Path, args: &[&str]) -> Output {
    let _turn = LM3S.lock().unwrap_or_else(|e| e.into_inner());
    qemu(model, "lm3s6965evb", args)
}

/// The model embedded in flash gives the host's tokens and text, sampled and greedy,
/// with the arena built for exactly the positions run.
#[test]
fn lm3s6965evb_matches_host() {
    let model = lm3s_model();
    let steps = LM3S_STEPS.to_string();
    for flags in [
        ["-p", "Once upon a time", "-n", &steps, "-t", "1.0", "--top-p", "0.9", "-s", "7", "--kv", "i8"],
        ["-p", "Lily", "-n", &steps, "-t", "0", "--top-p", "0.9", "-s", "1", "--kv", "i8"],
    ] {
        let out = lm3s(&model, &flags);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let board = last_json(&out);
        let host = generate(&model, &flags);
        assert_eq!(board["ids"], host["ids"], "lm3s6965evb ids differ from the host's for {flags:?}");
        assert_eq!(board["text"], host["text"]);
        assert_eq!(board["positions"], LM3S_STEPS);
        let stack = board["stack_peak_bytes"].as_u64().unwrap();
        assert!(stack > 0 && stack <= LM3S_STACK_BOUND, "peak stack {stack} bytes");
        // The arena is planned for the run's context and KV dtype, not the model's seq_len.
        let (_, inspect, _) = run_cli([
            "inspect".as_ref(),
            model.as_os_str(),
            "--ctx".as_ref(),
            steps.as_ref(),
            "--kv".as_ref(),
            "i8".as_ref(),
            "--json".as_ref(),
        ]);
        let plan: Value = serde_json::from_str(&inspect).unwrap();
        assert_eq!(board["arena_bytes"], plan["arena_bytes"]);
    }
}

/// `microlm quantize --board lm3s6965evb --kv i8 --ctx 129` fits the 256 KiB
/// flash beside the firmware (chosen per kind among q4_0, q4_16 and q8_0 with
/// GPTQ on the first half of the dev text): the firmware with that file inside
/// runs 128 tokens at ctx 129 with the host's tokens, and the firmware takes no
/// more flash than the board figure `quantize --board` and `inspect` count.
#[test]
fn lm3s6965evb_runs_the_file_quantize_board_fits_to_it() {
    let dir = scratch_dir("qemu-boards");
    let model = dir.join("lm3s-board-fit.mlm");
    let text = microlm_tests::shared_file("data/tinystories_dev.txt");
    let (code, _, err) = run_cli([
        "quantize".as_ref(),
        converted("f32").as_os_str(),
        "--board".as_ref(),
        "lm3s6965evb".as_ref(),
        "--kv".as_ref(),
        "i8".as_ref(),
        "--ctx".as_ref(),
        "129".as_ref(),
        "--gptq".as_ref(),
        "--calibrate".as_ref(),
        text.as_os_str(),
        "--calibrate-half".as_ref(),
        "first".as_ref(),
        "--budget-tokens".as_ref(),
        "2048".as_ref(),
        "-o".as_ref(),
        model.as_os_str(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("board lm3s6965evb: flash"), "{err}");
    let steps = LM3S_STEPS.to_string();
    let flags = ["-p", "Once upon a time", "-n", &steps, "--ctx", "129", "-t", "0.8", "-s", "5", "--kv", "i8"];
    let out = lm3s(&model, &flags);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let board = last_json(&out);
    let host = generate(&model, &flags);
    assert_eq!(board["ids"], host["ids"], "lm3s6965evb ids differ from the host's");
    assert_eq!(board["positions"], LM3S_STEPS);
    // The firmware's flash besides the model, against the figure the fit counts.
    let _turn = LM3S.lock().unwrap_or_else(|e| e.into_inner());
    let elf = firmware::build("qemu-lm3s6965evb", "thumbv7m-none-eabi", &model, 129, "i8", &[]).unwrap();
    let fp = firmware::footprint("lm3s6965evb", (0, 256 << 10), (0x2000_0000, 64 << 10), &elf);
    let firmware_bytes = fp.flash - std::fs::metadata(&model).unwrap().len();
    let (_, inspect, _) = run_cli([
        "inspect".as_ref(),
        model.as_os_str(),
        "--board".as_ref(),
        "lm3s6965evb".as_ref(),
        "--ctx".as_ref(),
        "129".as_ref(),
        "--kv".as_ref(),
        "i8".as_ref(),
        "--json".as_ref(),
    ]);
    let fit: Value = serde_json::from_str(&inspect).unwrap();
    let counted = fit["boards"][0]["firmware_flash"].as_u64().unwrap();
    println!("lm3s6965evb firmware: {firmware_bytes} bytes of flash besides the model (counted {counted})");
    assert!(firmware_bytes <= counted, "the firmware takes {firmware_bytes} bytes, the board fit counts {counted}");
    // Its RAM besides the arena: the statics in the SRAM sections and memory.x's 6 KiB stack reserve.
    let statics = fp.ram.1 - fp.ram.0 - fit["arena_bytes"].as_u64().unwrap();
    let reserved = fit["boards"][0]["ram_reserved"].as_u64().unwrap();
    println!("lm3s6965evb firmware: {statics} bytes of statics besides the arena (counted {reserved} with the stack)");
    assert!(statics + 6 * 1024 <= reserved, "statics {statics} + 6 KiB stack, the board fit counts {reserved}");
    assert_eq!(fit["boards"][0]["fits"], true, "{inspect}");
    assert!(fit["boards"][0]["max_ctx"].as_u64().unwrap() >= 129, "{inspect}");
}

/// A firmware built for an i8 cache (`MICROLM_KV=i8` at build time) runs with one
/// when the command line names no `--kv`, instead of planning an f32 cache that
/// its arena cannot hold.
#[test]
fn lm3s6965evb_defaults_to_the_kv_dtype_it_was_built_for() {
    let model = lm3s_model();
    let steps = LM3S_STEPS.to_string();
    let flags = ["-p", "Lily", "-n", &steps, "-t", "0", "-s", "1"];
    let out = {
        let _turn = LM3S.lock().unwrap_or_else(|e| e.into_inner());
        Command::new(cli())
            .arg("qemu")
            .arg(&model)
            .args(["--machine", "lm3s6965evb", "--json", "--timeout", TIMEOUT_S])
            .args(flags)
            .env("MICROLM_KV", "i8")
            .stdin(Stdio::null())
            .output()
            .expect("run microlm qemu")
    };
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let board = last_json(&out);
    let mut host_flags = flags.to_vec();
    host_flags.extend(["--kv", "i8"]);
    let host = generate(&model, &host_flags);
    assert_eq!(board["ids"], host["ids"], "the i8-built firmware's ids differ from the host's i8 run");
    assert_eq!(board["text"], host["text"]);
}

/// A corrupt model to embed is the parser's error and exit code 1, before the firmware is built.
#[test]
fn lm3s6965evb_corrupt_model_is_an_error_exit() {
    let mut bytes = std::fs::read(lm3s_model()).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    let path = scratch_dir("qemu-boards").join("lm3s-corrupt.mlm");
    std::fs::write(&path, bytes).unwrap();
    let out = lm3s(&path, &["-n", "8"]);
    assert_error(&out, "is not a valid model file");
    assert!(String::from_utf8_lossy(&out.stderr).contains("checksum mismatch"));
}

/// A model that leaves no flash for the firmware, and a context whose arena
/// overflows the SRAM, are each the linker's verdict in one line.
#[test]
fn lm3s6965evb_too_big_is_one_clear_line() {
    // 247 KB of weights: fits the 256 KiB on its own, not beside the firmware
    // (which would have to be under 15 KB).
    let out = lm3s(&synthetic_model(192), &["-n", "8"]);
    assert_error(&out, "the model does not fit in lm3s6965evb's 256 KiB flash beside the firmware: overflowed by");
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1, "{}", String::from_utf8_lossy(&out.stderr));

    // 256 positions: a 74 KB arena.
    let out = lm3s(&synthetic_model(64), &["-n", "0"]);
    assert_error(&out, "the arena does not fit in lm3s6965evb's 64 KiB SRAM beside the stack: overflowed by");
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1, "{}", String::from_utf8_lossy(&out.stderr));

    // An arena that fits the SRAM but leaves less than memory.x's 6 KiB for the
    // stack (which flip-link puts below it): memory.x's ASSERT, in one line.
    let out = lm3s(&lm3s_model(), &["-n", &(LM3S_STEPS + 12).to_string(), "--kv", "i8"]);
    assert_error(&out, "the arena does not fit in lm3s6965evb's 64 KiB SRAM beside the stack (6 KiB are kept for it");
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1, "{}", String::from_utf8_lossy(&out.stderr));

    // Larger than the flash outright: refused before building.
    let out = lm3s(&converted("f32"), &["-n", "8"]);
    assert_error(&out, "lm3s6965evb's flash holds 262144 bytes");
}

/// The netduinoplus2 firmware runs stories260K in q8_0 (about 290 KB of flash)
/// with an int8 KV cache sized for this many positions (every reference case fits).
const F405_CTX: usize = 256;
/// Stack the STM32F405 firmware's memory.x keeps (flip-link puts it below .data and .bss).
const F405_STACK: u64 = 8 * 1024;
/// The chip's memories (RM0090): 1 MiB flash at 0x0800_0000, 128 KiB SRAM at 0x2000_0000.
const F405_FLASH: (u64, u64) = (0x0800_0000, 1 << 20);
const F405_SRAM: (u64, u64) = (0x2000_0000, 128 << 10);

/// netduinoplus2 builds replace one firmware file: one build-and-run at a time.
static F405: Mutex<()> = Mutex::new(());

fn f405(model: &Path, args: &[&str]) -> Output {
    let _turn = F405.lock().unwrap_or_else(|e| e.into_inner());
    qemu(model, "netduinoplus2", args)
}

/// The firmware ELF `microlm qemu --machine netduinoplus2` builds (and last built).
fn f405_elf() -> PathBuf {
    root().join("boards/stm32f405/target/thumbv7em-none-eabihf/release/microlm-stm32f405")
}

/// The five llama2.c reference settings on the STM32F405 (q8_0 weights, int8 KV
/// cache): the ids and the text are exactly the host's for the same file and
/// flags. The text comes from USART1, the log lines (decoded defmt) on stderr.
#[test]
fn netduinoplus2_matches_host() {
    let model = converted("q8_0");
    let ctx = F405_CTX.to_string();
    for case in reference_cases() {
        let (steps, temp, topp) = (case.steps.to_string(), case.temperature.to_string(), case.topp.to_string());
        let seed = case.seed.unwrap_or(1).to_string();
        let flags = ["-p", &case.prompt, "-n", &steps, "-t", &temp, "--top-p", &topp, "-s", &seed, "--kv", "i8"];
        let mut args = flags.to_vec();
        args.extend(["--ctx", &ctx]);
        let out = f405(&model, &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{}: {stderr}", case.name);
        let board = last_json(&out);
        let host = generate(&model, &flags);
        assert_eq!(board["ids"], host["ids"], "{}: netduinoplus2 ids differ from the host's", case.name);
        assert_eq!(board["text"], host["text"], "{}: text differs from the host's", case.name);
        assert_eq!(board["positions"], case.steps);
        let stack = board["stack_peak_bytes"].as_u64().unwrap();
        assert!(stack > 0 && stack <= F405_STACK, "{}: peak stack {stack} bytes", case.name);
        assert!(board["instructions_per_token"].as_u64().unwrap() > 0);
        // defmt frames from semihosting stdout, decoded with the firmware's table.
        assert!(
            stderr.contains("INFO microlm on STM32F405: sysclk"),
            "{}: no decoded log line in:\n{stderr}",
            case.name
        );
        println!(
            "netduinoplus2 {}: {} instructions per token, stack {stack} bytes, arena {} bytes",
            case.name, board["instructions_per_token"], board["arena_bytes"]
        );
    }
}

/// Flash and SRAM a firmware ELF occupies: (flash bytes from the flash base,
/// end of the SRAM sections, the SRAM sections' lowest address) for the
/// sections the image loads or allocates.
fn f405_footprint(elf: &Path) -> (u64, u64, u64) {
    let fp = firmware::footprint("netduinoplus2", F405_FLASH, F405_SRAM, elf);
    (fp.flash, fp.ram.1, fp.ram.0)
}

/// The firmware with stories260K q8_0 and an int8 cache of F405_CTX positions
/// fits the real chip: its image in the 1 MiB flash, its data, bss (the arena)
/// and the stack kept by memory.x in the 128 KiB SRAM, whatever QEMU maps.
/// Then the largest context that fits: a build at it runs, one more position
/// is memory.x's one-line refusal.
#[test]
fn netduinoplus2_fits_the_chip() {
    let model = converted("q8_0");
    let model_len = std::fs::metadata(&model).unwrap().len();
    let _turn = F405.lock().unwrap_or_else(|e| e.into_inner());
    let ctx = F405_CTX.to_string();
    let out = qemu(&model, "netduinoplus2", &["-n", "4", "-t", "0", "--kv", "i8", "--ctx", &ctx]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let arena = last_json(&out)["arena_bytes"].as_u64().unwrap();
    let (flash, ram_end, ram_start) = f405_footprint(&f405_elf());
    assert!(flash > model_len && flash <= F405_FLASH.1, "flash image {flash} bytes");
    // flip-link: the stack is below .data and .bss, at the bottom of the SRAM.
    let stack = ram_start - F405_SRAM.0;
    assert!(stack >= F405_STACK, "stack {stack} bytes");
    assert!(ram_end <= F405_SRAM.0 + F405_SRAM.1, "SRAM sections end at {ram_end:#x}");
    let ram_rest = ram_end - ram_start - arena;
    println!(
        "netduinoplus2, stories260K q8_0 ({model_len} bytes), i8 KV, ctx {F405_CTX}: flash {flash} bytes \
         (firmware {} bytes), SRAM: arena {arena} bytes + other data {ram_rest} bytes + stack {stack} bytes",
        flash - model_len
    );

    // The largest ctx whose arena fits beside the same data and the kept stack.
    // The ids buffer grows 4 bytes per position with the ctx, so count it with the arena.
    let plan = |ctx: usize| firmware::plan(&model, ctx, "i8");
    let fixed = ram_rest - 4 * (F405_CTX as u64 + 1);
    let fits = |ctx: usize| plan(ctx) + 4 * (ctx as u64 + 1) + fixed + F405_STACK <= F405_SRAM.1;
    let lo = firmware::largest(F405_CTX, 512, fits);
    println!("netduinoplus2: largest ctx for stories260K q8_0 with an i8 KV cache: {lo} (arena {} bytes)", plan(lo));
    let out = qemu(&model, "netduinoplus2", &["-n", "0", "-t", "0", "--kv", "i8", "--ctx", &lo.to_string()]);
    assert!(out.status.success(), "ctx {lo}: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(last_json(&out)["positions"], lo);
    let out = qemu(&model, "netduinoplus2", &["-n", "8", "--kv", "i8", "--ctx", &(lo + 1).to_string()]);
    assert_error(
        &out,
        "the arena does not fit in netduinoplus2's 128 KiB SRAM beside the stack (8 KiB are kept for it",
    );
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1, "{}", String::from_utf8_lossy(&out.stderr));

    // Larger than the flash outright (the f32 file is 1,048,996 bytes): refused before building.
    let out = qemu(&converted("f32"), "netduinoplus2", &["-n", "8"]);
    assert_error(&out, "netduinoplus2's flash holds 1048576 bytes");
}

/// The riscv32-virt firmware (RV32IMC, soft float) runs stories260K q8_0 with
/// an int8 KV cache sized for this many positions (every reference case fits),
/// so one build serves all five cases.
const RV32_CTX: usize = 256;
/// Stack the riscv32-virt firmware's memory.x keeps below the top of its RAM.
const RV32_STACK: u64 = 64 * 1024;
/// Instructions per token for the greedy case (256 tokens, q8_0 weights, i8
/// cache), counted by `minstret` under `-icount shift=0` (deterministic):
/// 24,242,607 when the board was added; the budget sits about 3 % above it.
const RV32_GREEDY_BUDGET: u64 = 25_000_000;

/// riscv32-virt builds replace one firmware file: one build-and-run at a time.
static RV32: Mutex<()> = Mutex::new(());

fn rv32(model: &Path, args: &[&str]) -> Output {
    let _turn = RV32.lock().unwrap_or_else(|e| e.into_inner());
    qemu(model, "riscv32-virt", args)
}

/// The five llama2.c reference settings on QEMU's riscv32 virt machine (q8_0
/// weights, int8 KV cache, the portable kernels in software floating point):
/// the ids and the text are exactly the host's for the same file and flags,
/// and the greedy case keeps to its instruction budget.
#[test]
fn riscv32_virt_matches_host() {
    let model = converted("q8_0");
    let ctx = RV32_CTX.to_string();
    for case in reference_cases() {
        let (steps, temp, topp) = (case.steps.to_string(), case.temperature.to_string(), case.topp.to_string());
        let seed = case.seed.unwrap_or(1).to_string();
        let flags = ["-p", &case.prompt, "-n", &steps, "-t", &temp, "--top-p", &topp, "-s", &seed, "--kv", "i8"];
        let mut args = flags.to_vec();
        args.extend(["--ctx", &ctx]);
        let out = rv32(&model, &args);
        assert!(out.status.success(), "{}: {}", case.name, String::from_utf8_lossy(&out.stderr));
        let board = last_json(&out);
        let host = generate(&model, &flags);
        assert_eq!(board["ids"], host["ids"], "{}: riscv32-virt ids differ from the host's", case.name);
        assert_eq!(board["text"], host["text"], "{}: text differs from the host's", case.name);
        assert_eq!(board["positions"], case.steps);
        let stack = board["stack_peak_bytes"].as_u64().unwrap();
        assert!(stack > 0 && stack <= RV32_STACK, "{}: peak stack {stack} bytes", case.name);
        let per_token = board["instructions_per_token"].as_u64().unwrap();
        assert!(per_token > 0);
        if case.name == "greedy" {
            assert!(per_token <= RV32_GREEDY_BUDGET, "greedy: {per_token} instructions per token");
        }
        println!(
            "riscv32-virt {}: {per_token} instructions per token, stack {stack} bytes, arena {} bytes",
            case.name, board["arena_bytes"]
        );
    }
}

/// The instruction count is `minstret` under `-icount shift=0`: the same run
/// counts the same, and a longer run costs more per token (attention over more
/// positions), so the counter counts the generation and nothing else.
#[test]
fn riscv32_virt_counts_instructions_deterministically() {
    let model = converted("q8_0");
    let ctx = RV32_CTX.to_string();
    let count = |steps: &str| {
        let out = rv32(&model, &["-n", steps, "-t", "0", "--kv", "i8", "--ctx", &ctx]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        last_json(&out)["instructions_per_token"].as_u64().unwrap()
    };
    let (a, b, longer) = (count("24"), count("24"), count("48"));
    assert_eq!(a, b, "two identical runs counted differently");
    assert!(longer > a, "48 tokens: {longer} per token, 24 tokens: {a}");
}

/// A corrupt model to embed is the parser's error and exit code 1, before the firmware is built.
#[test]
fn riscv32_virt_corrupt_model_is_an_error_exit() {
    let mut bytes = std::fs::read(converted("q8_0")).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    let path = scratch_dir("qemu-boards").join("rv32-corrupt.mlm");
    std::fs::write(&path, bytes).unwrap();
    let out = rv32(&path, &["-n", "8"]);
    assert_error(&out, "is not a valid model file");
    assert!(String::from_utf8_lossy(&out.stderr).contains("checksum mismatch"));
}

/// Instructions per token for 256 greedy tokens of stories260K q8_0 (f32 KV
/// cache, the model's 512 positions) on mps3-an547, counted by SysTick under
/// `-icount shift=0`: 2,034,474 with the portable block sums when the board
/// was added, 611,005 with the MVE matvec, 471,935 with the head-major FPU
/// attention loops, the FPU activation quantizer and a smaller narrowing
/// buffer, 307,172 with the f32 part of the four-row q8_0 loop, the attention
/// scores, the exponentials, SwiGLU and the activation quantizer in MVE lanes,
/// 267,537 with the matvec's input quantized straight to i8 blocks, RoPE, the
/// argmax and the dequantization in lanes and RMSNorm in FPU loops, 244,967
/// with the value sums in lanes where no product can be subnormal, the
/// exponentials without range checks where the scores' least value shows them
/// in range, tail-predicated attention loops and an unrolled loop for
/// two-block rows (docs/BOARDS.md); the budget is 250,000, 2 % above it.
const AN547_GREEDY_BUDGET: u64 = 250_000;

/// The attention cost of one more cache position on mps3-an547 (1,002 measured:
/// 40 heads of 8, scores, exponentials and most value sums four slots per MVE
/// step), held with about 5 % to spare.
const AN547_PER_POSITION_BUDGET: u64 = 1_050;

/// The mps3-an547 firmware binary `bin`, built once per name (with cargo, in its own directory).
fn an547_build(bin: &str) -> PathBuf {
    static BUILD: Mutex<()> = Mutex::new(());
    let _turn = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    microlm_tests::build_firmware("qemu-mps3-an547", Some(bin), &[], &[])
}

/// The five llama2.c reference settings on the Cortex-M55 with stories260K
/// q8_0 (the MVE block sums): the ids and the text are exactly the host's for
/// the same file and flags, and 256 greedy tokens keep to the instruction budget.
#[test]
fn an547_matches_host() {
    let model = converted("q8_0");
    let elf = an547_build("microlm-qemu-mps3-an547");
    for case in reference_cases() {
        let (steps, temp, topp) = (case.steps.to_string(), case.temperature.to_string(), case.topp.to_string());
        let seed = case.seed.unwrap_or(1).to_string();
        let flags = ["-p", &case.prompt, "-n", &steps, "-t", &temp, "--top-p", &topp, "-s", &seed];
        let mut args = flags.to_vec();
        args.extend(["--firmware", elf.to_str().unwrap()]);
        let out = qemu(&model, "mps3-an547", &args);
        assert!(out.status.success(), "{}: {}", case.name, String::from_utf8_lossy(&out.stderr));
        let board = last_json(&out);
        let host = generate(&model, &flags);
        assert_eq!(board["ids"], host["ids"], "{}: mps3-an547 ids differ from the host's", case.name);
        assert_eq!(board["text"], host["text"], "{}: text differs from the host's", case.name);
        assert_eq!(board["positions"], host["positions"], "{}", case.name);
        assert!(board["stack_peak_bytes"].as_u64().unwrap() > 0);
        let per_token = board["instructions_per_token"].as_u64().unwrap();
        println!("mps3-an547 {}: {per_token} instructions per token", case.name);
        if case.name == "greedy" {
            assert_eq!(case.steps, 256, "the budget is for 256 greedy tokens");
            assert!(per_token <= AN547_GREEDY_BUDGET, "greedy: {per_token} instructions per token");
        }
    }
}

/// 256 and 128 greedy tokens from BOS on mps3-an547: the average per token
/// keeps to [`AN547_GREEDY_BUDGET`], and token p costs base + slope · p, so the
/// two averages differ by 64 · slope, the cost of one more cache position, held
/// to [`AN547_PER_POSITION_BUDGET`].
#[test]
fn an547_instructions_within_budget() {
    let model = converted("q8_0");
    let elf = an547_build("microlm-qemu-mps3-an547");
    let count = |steps: &str| {
        let out = qemu(&model, "mps3-an547", &["-t", "0", "-n", steps, "--firmware", elf.to_str().unwrap()]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        last_json(&out)["instructions_per_token"].as_u64().unwrap()
    };
    let (full, half) = (count("256"), count("128"));
    let per_position = (full - half) / 64;
    println!("mps3-an547 q8_0: {full} instructions per token, {per_position} per position");
    assert!(full <= AN547_GREEDY_BUDGET, "{full} instructions per token, budget {AN547_GREEDY_BUDGET}");
    assert!(per_position <= AN547_PER_POSITION_BUDGET, "{per_position} instructions per position");
}

/// A file with folded norms (`quantize --fold-norms`: the attention and FFN
/// norms stored as ones, no bytes) gives the host's tokens on the Cortex-M4F.
#[test]
fn an386_runs_a_file_with_folded_norms_like_the_host() {
    let model = scratch_dir("qemu-boards").join("q4_0-folded.mlm");
    let (code, _, err) = run_cli([
        "quantize".as_ref(),
        converted("f32").as_os_str(),
        "--dtype".as_ref(),
        "q4_0".as_ref(),
        "--fold-norms".as_ref(),
        "-o".as_ref(),
        model.as_os_str(),
    ]);
    assert_eq!(code, 0, "{err}");
    for flags in [
        ["-p", "Once upon a time", "-n", "96", "-t", "0", "--kv", "i8"],
        ["-p", "Tim", "-n", "96", "-t", "1.0", "--kv", "f32"],
    ] {
        let out = qemu(&model, "mps2-an386", &flags);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let (board, host) = (last_json(&out), generate(&model, &flags));
        assert_eq!(board["ids"], host["ids"], "mps2-an386 ids differ from the host's for {flags:?}");
    }
}

/// Beyond the reference settings, the MVE attention, SwiGLU and quantizer give the
/// host's ids on the Cortex-M55 in window mode past a small context (the f32 key
/// cache's rows rewritten, with attention sinks), with f16 and i8 caches (the FPU
/// and portable attention beside the MVE matvec and SwiGLU), greedy and sampled.
#[test]
fn an547_window_and_caches_match_host() {
    let model = converted("q8_0");
    let elf = an547_build("microlm-qemu-mps3-an547");
    for flags in [
        &["-n", "200", "--window", "--ctx", "64", "-t", "0"][..],
        &["-p", "Once upon a time", "-n", "150", "--window", "--ctx", "48", "-t", "1.0", "--top-p", "0.9", "-s", "7"],
        &["-n", "96", "--kv", "f16", "-t", "0"],
        &["-n", "96", "--kv", "i8", "-t", "0.8", "-s", "3"],
    ] {
        let mut args = flags.to_vec();
        args.extend(["--firmware", elf.to_str().unwrap()]);
        let out = qemu(&model, "mps3-an547", &args);
        assert!(out.status.success(), "{flags:?}: {}", String::from_utf8_lossy(&out.stderr));
        let (board, host) = (last_json(&out), generate(&model, flags));
        assert_eq!(board["ids"], host["ids"], "mps3-an547 ids differ from the host's for {flags:?}");
        assert_eq!(board["positions"], host["positions"], "{flags:?}");
    }
}

/// A q4_16 file (the MVE block sums under the 16-value scale groups) gives the
/// host's tokens on the Cortex-M55.
#[test]
fn an547_q4_16_matches_host() {
    let model = converted("q4_16");
    let elf = an547_build("microlm-qemu-mps3-an547");
    for flags in [
        ["-p", "Once upon a time", "-n", "96", "-t", "0", "-s", "1"],
        ["-p", "Lily", "-n", "96", "-t", "0.9", "-s", "8"],
    ] {
        let mut args = flags.to_vec();
        args.extend(["--firmware", elf.to_str().unwrap()]);
        let out = qemu(&model, "mps3-an547", &args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let (board, host) = (last_json(&out), generate(&model, &flags));
        assert_eq!(board["ids"], host["ids"], "mps3-an547 q4_16 ids differ from the host's for {flags:?}");
        assert_eq!(board["text"], host["text"]);
    }
}

/// The kernels binary (boards/qemu-mps3-an547/src/bin/kernels.rs) selects the
/// MVE kernels and passes `kernels::suite::run_all` (with the DSP block sums,
/// which MVE's required DSP extension brings) and the chunked MVE matvec
/// against the portable one, bit for bit.
#[test]
fn an547_kernels_match_portable() {
    let elf = an547_build("microlm-qemu-mps3-an547-kernels");
    let child = Command::new("qemu-system-arm")
        .args(["-M", "mps3-an547", "-nographic", "-serial", "null", "-monitor", "none"])
        .args(["-semihosting-config", "enable=on,target=native", "-kernel"])
        .arg(&elf)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run qemu-system-arm");
    let Some((status, stdout)) = wait_bounded(child, std::time::Duration::from_secs(60)) else {
        panic!("the mps3-an547 kernel tests ran longer than 60 s");
    };
    print!("{stdout}");
    assert!(status.success(), "mps3-an547 kernel tests failed ({status}):\n{stdout}");
    assert!(stdout.contains("best kernels: Mve"), "not the MVE kernels:\n{stdout}");
    assert!(stdout.contains("ok suite::run_all [Portable, ArmDsp, Mve]"), "{stdout}");
    assert_eq!(stdout.trim_end().rsplit('\n').next(), Some("2 passed, 0 failed"), "{stdout}");

    // `microlm qemu` builds and runs the board's own firmware, not the kernels binary beside it.
    let model = converted("q8_0");
    let flags = ["-n", "8", "-t", "0"];
    let out = qemu(&model, "mps3-an547", &flags);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(last_json(&out)["ids"], generate(&model, &flags)["ids"]);
}
