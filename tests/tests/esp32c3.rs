//! The ESP32-C3 firmware (`boards/esp32c3`, esp-hal) builds with stories260K
//! q8_0 embedded and an int8 KV cache for 256 positions, and fits the chip:
//! its image within the 4 MiB flash (the IROM and DROM windows map it) and its
//! RAM sections within the 313 KiB esp-hal's memory map gives the program
//! (IRAM code and DRAM data share that SRAM). No board or emulator runs it here.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use microlm_tests::{converted, root};
use serde_json::Value;

/// The chip's memories as esp-hal 1.2's `ld/esp32c3/memory.x` has them.
const FLASH_BYTES: u64 = 4 << 20;
/// The flash windows: instructions (IROM) and data (DROM), each mapping the flash.
const IROM: (u64, u64) = (0x4200_0000, 4 << 20);
const DROM: (u64, u64) = (0x3C00_0000, 4 << 20);
/// Internal SRAM for the program: DRAM at 0x3FC80000, the same memory as IRAM at 0x40380000.
const DRAM: (u64, u64) = (0x3FC8_0000, 313 << 10);
const IRAM: (u64, u64) = (0x4037_C000, 313 << 10);

/// Builds the firmware with `model` embedded and returns the ELF.
fn build(model: &Path) -> PathBuf {
    let out = Command::new(env!("CARGO"))
        .current_dir(root().join("boards/esp32c3"))
        .args(["build", "--release", "--locked", "--message-format=json-render-diagnostics"])
        .env("MICROLM_MODEL", model)
        .env("MICROLM_CTX", "256")
        .env("MICROLM_KV", "i8")
        .stderr(Stdio::inherit())
        .output()
        .expect("run cargo");
    assert!(out.status.success(), "building the ESP32-C3 firmware failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find_map(|m| m.get("executable").and_then(Value::as_str).map(PathBuf::from))
        .expect("cargo named no firmware executable")
}

#[test]
fn esp32c3_firmware_fits_the_chip() {
    use object::{Object as _, ObjectSection as _};
    let model = converted("q8_0");
    let model_len = std::fs::metadata(&model).unwrap().len();
    let elf = build(&model);
    let data = std::fs::read(&elf).unwrap();
    let file = object::File::parse(&*data).unwrap();
    assert_eq!(file.architecture(), object::Architecture::Riscv32);
    let within = |(base, len): (u64, u64), a: u64| (base..base + len).contains(&a);
    // Flash: every section with file contents is stored in the image (mapped code and data, and
    // the initializers of what the startup code copies to RAM). RAM: every allocated section there.
    let (mut flash, mut ram_end, mut rodata, mut stack) = (0u64, DRAM.0, 0u64, 0u64);
    for s in file.sections() {
        let a = s.address();
        // Debug info, symbols and esp-hal's metadata are not loaded: they sit at address 0.
        if a == 0 || s.size() == 0 {
            continue;
        }
        // esp-hal's .stack takes what the other RAM sections leave.
        if s.name() == Ok(".stack") {
            stack = s.size();
            continue;
        }
        if s.kind() != object::SectionKind::UninitializedData {
            flash += s.size();
        }
        if within(DROM, a) {
            rodata += s.size();
        }
        if within(DRAM, a) {
            ram_end = ram_end.max(a + s.size());
        }
        assert!(
            within(IROM, a) || within(DROM, a) || within(DRAM, a) || within(IRAM, a) || a >= 0x5000_0000,
            "section {} at {a:#x} is outside the ESP32-C3's memories",
            s.name().unwrap_or("?")
        );
    }
    let ram = ram_end - DRAM.0;
    println!(
        "esp32c3 with stories260K q8_0 ({model_len} bytes), i8 KV, ctx 256: image {flash} bytes of 4 MiB flash \
         (DROM {rodata} bytes), DRAM sections end {ram} bytes into its 313 KiB, stack {stack} bytes"
    );
    assert!(rodata >= model_len, "the model is not in the DROM window ({rodata} bytes there)");
    assert!(flash <= FLASH_BYTES, "image {flash} bytes");
    assert!(ram <= DRAM.1, "RAM sections end {ram} bytes into DRAM");
    // A whole generation peaks at about 3.5 KiB of stack on the other boards.
    assert!(stack >= 8 << 10, "only {stack} bytes left for the stack");
}
