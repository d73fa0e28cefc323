//! Building a board firmware with a model embedded and measuring what its ELF
//! occupies of the chip (read with `object`, whatever the linker said). Used
//! by the board fit tests and the README's board table (`board_sizes.rs`).

// Each test file that includes this module uses part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use microlm_tests::root;
use serde_json::Value;

/// Builds the board crate in `boards/DIR` (Rust target `target`, binary
/// `microlm-DIR`) with `model` embedded and its arena sized for `ctx`
/// positions of a `kv` cache, with the extra cargo arguments `extra`
/// (features): the ELF's path, or cargo's stderr.
pub fn build(dir: &str, target: &str, model: &Path, ctx: usize, kv: &str, extra: &[&str]) -> Result<PathBuf, String> {
    let out = Command::new(env!("CARGO"))
        .current_dir(root().join("boards").join(dir))
        .args(["build", "--release", "--locked", "--message-format=json-render-diagnostics"])
        .args(microlm_cli::reproducible::cargo_args(&root()))
        .args(extra)
        .env("MICROLM_MODEL", model)
        .env("MICROLM_CTX", ctx.to_string())
        .env("MICROLM_KV", kv)
        .stdin(Stdio::null())
        .output()
        .expect("run cargo");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let elf = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find_map(|m| m.get("executable").and_then(Value::as_str).map(PathBuf::from))
        .expect("cargo named no firmware executable");
    let tail = Path::new("target").join(target).join("release").join(format!("microlm-{dir}"));
    assert!(elf.ends_with(&tail), "cargo built {}", elf.display());
    Ok(elf)
}

/// What a Cortex-M firmware ELF occupies of its chip.
#[derive(Debug)]
pub struct Footprint {
    /// Flash bytes from the flash base to the end of the last loaded byte.
    pub flash: u64,
    /// The SRAM sections' lowest address and end (.data, .bss with the arena, .uninit).
    pub ram: (u64, u64),
    /// Every loaded segment's bytes at its load (physical) address.
    pub image: BTreeMap<u64, Vec<u8>>,
}

/// Reads the ELF's segments and sections, asserting that everything it loads
/// is in the flash `(base, bytes)` and that some section is in the SRAM `(base, bytes)`.
pub fn footprint(name: &str, flash: (u64, u64), sram: (u64, u64), elf: &Path) -> Footprint {
    use object::read::elf::{ElfFile32, FileHeader as _, ProgramHeader as _};
    use object::{Object as _, ObjectSection as _};
    let data = std::fs::read(elf).unwrap();
    let file = ElfFile32::<object::LittleEndian>::parse(&*data).unwrap();
    let endian = file.endian();
    let (base, len) = flash;
    let mut flash_end = base;
    let mut image = BTreeMap::new();
    for ph in file.elf_header().program_headers(endian, &*data).unwrap() {
        let (lma, size) = (u64::from(ph.p_paddr(endian)), u64::from(ph.p_filesz(endian)));
        if ph.p_type(endian) == object::elf::PT_LOAD && size > 0 {
            assert!(
                lma >= base && lma + size <= base + len,
                "{name}: a segment loads at {lma:#x}..{:#x}, outside the flash",
                lma + size
            );
            flash_end = flash_end.max(lma + size);
            image.insert(lma, ph.data(endian, &*data).unwrap().to_vec());
        }
    }
    let in_sram = |a: u64| (sram.0..sram.0 + sram.1).contains(&a);
    let (mut lo, mut hi) = (u64::MAX, 0);
    for section in file.sections() {
        if section.size() > 0 && in_sram(section.address()) {
            lo = lo.min(section.address());
            hi = hi.max(section.address() + section.size());
        }
    }
    assert!(hi > lo, "{name}: no sections in the SRAM");
    Footprint { flash: flash_end - base, ram: (lo, hi), image }
}

/// The ESP32-C3's memories as esp-hal 1.2's `ld/esp32c3/memory.x` has them.
pub mod esp32c3 {
    /// The flash on the usual modules (ESP32-C3-MINI-1, -WROOM-02): 4 MiB.
    pub const FLASH_BYTES: u64 = 4 << 20;
    /// The flash windows: instructions (IROM) and data (DROM), each mapping the flash.
    pub const IROM: (u64, u64) = (0x4200_0000, 4 << 20);
    pub const DROM: (u64, u64) = (0x3C00_0000, 4 << 20);
    /// Internal SRAM for the program: DRAM at 0x3FC80000, the same memory as IRAM at 0x40380000.
    pub const DRAM: (u64, u64) = (0x3FC8_0000, 313 << 10);
    pub const IRAM: (u64, u64) = (0x4037_C000, 313 << 10);
}

/// What an ESP32-C3 firmware ELF occupies.
#[derive(Debug)]
pub struct EspFootprint {
    /// Bytes of every section with file contents: mapped code and data, and
    /// the initializers of what the startup code copies to RAM.
    pub flash: u64,
    /// Bytes of those in the DROM window (read-only data with the model).
    pub rodata: u64,
    /// Where the DRAM sections end, in bytes from the DRAM base (esp-hal's .stack left out).
    pub ram: u64,
    /// esp-hal's .stack: what the other RAM sections leave.
    pub stack: u64,
}

/// Reads the ESP32-C3 ELF's sections, asserting each is in one of the chip's memories.
pub fn esp32c3_footprint(elf: &Path) -> EspFootprint {
    use esp32c3::{DRAM, DROM, IRAM, IROM};
    use object::{Object as _, ObjectSection as _};
    let data = std::fs::read(elf).unwrap();
    let file = object::File::parse(&*data).unwrap();
    assert_eq!(file.architecture(), object::Architecture::Riscv32);
    let within = |(base, len): (u64, u64), a: u64| (base..base + len).contains(&a);
    let (mut flash, mut ram_end, mut rodata, mut stack) = (0u64, DRAM.0, 0u64, 0u64);
    for s in file.sections() {
        let a = s.address();
        // Debug info, symbols and esp-hal's metadata are not loaded: they sit at address 0.
        if a == 0 || s.size() == 0 {
            continue;
        }
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
    EspFootprint { flash, rodata, ram: ram_end - DRAM.0, stack }
}

/// `microlm inspect MODEL --ctx CTX --kv KV`: the arena in bytes.
pub fn plan(model: &Path, ctx: usize, kv: &str) -> u64 {
    let ctx = ctx.to_string();
    let (code, out, err) = microlm_tests::run_cli([
        "inspect".as_ref(),
        model.as_os_str(),
        "--ctx".as_ref(),
        ctx.as_ref(),
        "--kv".as_ref(),
        kv.as_ref(),
        "--json".as_ref(),
    ]);
    assert_eq!(code, 0, "inspect: {err}");
    serde_json::from_str::<Value>(&out).unwrap()["arena_bytes"].as_u64().unwrap()
}

/// The largest context in `from..=max` for which `fits` holds (`fits(from)` must).
pub fn largest(from: usize, max: usize, fits: impl Fn(usize) -> bool) -> usize {
    assert!(fits(from), "ctx {from} does not fit");
    let (mut lo, mut hi) = (from, max);
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if fits(mid) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    lo
}

/// The ESP-IDF app image of an ESP32-C3 firmware ELF, as `espflash
/// save-image --chip esp32c3 ELF OUT.bin` writes it (espflash's library, 4 MiB
/// flash, the default partition table's factory app): the header, the
/// segments, the checksum and the SHA-256 digest, for the app partition.
pub fn esp32c3_app_image(elf: &[u8]) -> Result<Vec<u8>, String> {
    use espflash::flasher::{FlashData, FlashSettings, FlashSize};
    use espflash::image_format::idf::IdfBootloaderFormat;
    use espflash::target::{Chip, XtalFrequency};
    let settings = FlashSettings::new(None, Some(FlashSize::_4Mb), None);
    let flash = FlashData::new(settings, 0, None, Chip::Esp32c3, XtalFrequency::_40Mhz);
    let image = IdfBootloaderFormat::new(elf, &flash, None, None, None, None).map_err(|e| e.to_string())?;
    match image.ota_segments().collect::<Vec<_>>().as_slice() {
        [app] => Ok(app.data().to_vec()),
        parts => Err(format!("espflash made {} app segments, not one", parts.len())),
    }
}
