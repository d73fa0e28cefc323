//! The dev-board firmwares that no QEMU machine runs: the Raspberry Pi Pico 2
//! (RP2350, Cortex-M33, 4 MiB XIP flash, 520 KiB SRAM) and the nRF52840-DK
//! (Cortex-M4F, 1 MiB flash, 256 KiB RAM). Each builds with stories260K q8_0
//! embedded and an int8 KV cache for the model's whole context, and its ELF
//! fits the chip's flash and SRAM (read with `object`, whatever the linker
//! said). Then the largest context whose f32 KV cache fits the SRAM: a build
//! at it fits, one more position is memory.x's one-line refusal. A model
//! larger than the flash is one build error naming the board and the bytes
//! over. The Pico 2's ELF also becomes a UF2 for its boot ROM's USB drive
//! (elf2flash-core), checked block by block against the ELF.
//!
//! Each board is built with cargo in its own directory, one build at a time
//! per board (each rebuild relinks the firmware with fat LTO).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use microlm_tests::converted;

#[path = "support/firmware.rs"]
mod firmware;

use firmware::{plan, Footprint};

/// A board crate and its chip's memories.
struct Chip {
    /// The board crate's directory under boards/, and its binary's name after `microlm-`.
    dir: &'static str,
    /// Its Rust target (.cargo/config.toml).
    target: &'static str,
    /// Flash: (base, bytes).
    flash: (u64, u64),
    /// SRAM: (base, bytes).
    ram: (u64, u64),
    /// SRAM memory.x keeps for the stack (flip-link puts it below .data and .bss).
    stack: u64,
    /// memory.x's refusal of an arena that leaves less than `stack`.
    too_big: &'static str,
}

/// The Raspberry Pi Pico 2 (RP2350 datasheet, Pico 2 datasheet).
const RP2350: Chip = Chip {
    dir: "rp2350",
    target: "thumbv8m.main-none-eabihf",
    flash: (0x1000_0000, 4 << 20),
    ram: (0x2000_0000, 520 << 10),
    stack: 8 << 10,
    too_big: "microlm-rp2350: the arena does not fit in the RP2350's 520 KiB SRAM beside the 8 KiB kept for the stack",
};

/// The nRF52840-DK (nRF52840 Product Specification v1.7).
const NRF52840: Chip = Chip {
    dir: "nrf52840",
    target: "thumbv7em-none-eabihf",
    flash: (0, 1 << 20),
    ram: (0x2000_0000, 256 << 10),
    stack: 8 << 10,
    too_big:
        "microlm-nrf52840: the arena does not fit in the nRF52840's 256 KiB RAM beside the 8 KiB kept for the stack",
};

/// Builds the board with `model` embedded and its arena sized for `ctx` positions
/// of a `kv` cache: the ELF's path, or cargo's stderr.
fn build(chip: &Chip, model: &Path, ctx: usize, kv: &str) -> Result<PathBuf, String> {
    firmware::build(chip.dir, chip.target, model, ctx, kv, &[])
}

/// Reads the ELF's segments and sections, asserting that everything it loads is in the flash.
fn footprint(chip: &Chip, elf: &Path) -> Footprint {
    firmware::footprint(chip.dir, chip.flash, chip.ram, elf)
}

/// Asserts the ELF built for `ctx` positions of a `kv` cache fits the chip:
/// the image in the flash, the stack kept by memory.x below the data, and the
/// data and bss (the arena of `plan(ctx, kv)` bytes) inside the SRAM. Returns
/// the SRAM bytes besides the arena and the stack.
fn assert_fits(chip: &Chip, model: &Path, elf: &Path, ctx: usize, kv: &str) -> (Footprint, u64) {
    let model_len = std::fs::metadata(model).unwrap().len();
    let fp = footprint(chip, elf);
    assert!(fp.flash > model_len && fp.flash <= chip.flash.1, "{}: flash image {} bytes", chip.dir, fp.flash);
    let (lo, hi) = fp.ram;
    let stack = lo - chip.ram.0;
    assert!(stack >= chip.stack, "{}: stack {stack} bytes", chip.dir);
    assert!(hi <= chip.ram.0 + chip.ram.1, "{}: SRAM sections end at {hi:#x}", chip.dir);
    let arena = plan(model, ctx, kv);
    assert!(hi - lo > arena, "{}: SRAM sections ({} bytes) are smaller than the arena ({arena})", chip.dir, hi - lo);
    let rest = hi - lo - arena;
    println!(
        "{}: stories260K q8_0 ({model_len} bytes), {kv} KV, ctx {ctx}: flash {} of {} bytes (firmware {} bytes), \
         SRAM: arena {arena} bytes + other data {rest} bytes + stack {stack} bytes, of {}",
        chip.dir,
        fp.flash,
        chip.flash.1,
        fp.flash - model_len,
        chip.ram.1
    );
    (fp, rest)
}

/// The model's whole context with an int8 cache fits; then the largest ctx
/// whose f32 cache fits beside the same data and the kept stack builds and
/// fits, and one more position is memory.x's refusal. `check` looks at the
/// int8 build's ELF before the next build replaces it.
fn fits_the_chip(chip: &Chip, check: fn(&Path, &Footprint)) {
    let model = converted("q8_0");
    let seq_len = 512;
    let elf = build(chip, &model, seq_len, "i8").unwrap_or_else(|e| panic!("{}: i8 ctx {seq_len}: {e}", chip.dir));
    let (fp, _) = assert_fits(chip, &model, &elf, seq_len, "i8");
    check(&elf, &fp);
    println!("{}: largest ctx with an i8 KV cache: {seq_len}, the model's seq_len", chip.dir);

    // The ids buffer grows 4 bytes per position with the ctx: count it with the arena.
    let fixed = |rest: u64, ctx: usize| rest - 4 * (ctx as u64 + 1);
    let start = 64;
    let elf = build(chip, &model, start, "f32").unwrap_or_else(|e| panic!("{}: f32 ctx {start}: {e}", chip.dir));
    let (_, rest) = assert_fits(chip, &model, &elf, start, "f32");
    let fixed = fixed(rest, start);
    let fits = |ctx: usize| plan(&model, ctx, "f32") + 4 * (ctx as u64 + 1) + fixed + chip.stack <= chip.ram.1;
    let lo = firmware::largest(start, seq_len, fits);
    assert!(lo < seq_len, "{}: the whole f32 context fits; no SRAM limit to find", chip.dir);
    println!("{}: largest ctx with an f32 KV cache: {lo} (arena {} bytes)", chip.dir, plan(&model, lo, "f32"));
    let elf = build(chip, &model, lo, "f32").unwrap_or_else(|e| panic!("{}: f32 ctx {lo}: {e}", chip.dir));
    assert_fits(chip, &model, &elf, lo, "f32");
    let err = build(chip, &model, lo + 1, "f32").expect_err("one position more than fits built");
    assert!(err.contains(chip.too_big), "{}: ctx {}: expected '{}' in:\n{err}", chip.dir, lo + 1, chip.too_big);
}

#[test]
fn rp2350_fits_the_chip() {
    fits_the_chip(&RP2350, |elf, fp| {
        // The boot ROM looks for an IMAGE_DEF block (start marker 0xffffded3) in the first 4 KiB.
        assert!(fp.image.contains_key(&RP2350.flash.0), "nothing loads at the flash base");
        let head: Vec<u8> =
            fp.image.range(..RP2350.flash.0 + 4096).flat_map(|(_, b)| b.iter().copied()).take(4096).collect();
        assert!(
            head.windows(4).any(|w| w == 0xffff_ded3u32.to_le_bytes()),
            "no IMAGE_DEF block start marker in the first 4 KiB of flash"
        );
        uf2_matches(elf, &fp.image);
    });
}

#[test]
fn nrf52840_fits_the_chip() {
    fits_the_chip(&NRF52840, |_, _| {});
}

/// UF2 (github.com/microsoft/uf2): 512-byte blocks, each with its magic words,
/// flags, target address, payload size, block number, block count and family.
const UF2_MAGIC: [u32; 2] = [0x0A32_4655, 0x9E5D_5157];
const UF2_MAGIC_END: u32 = 0x0AB1_6F30;
const UF2_FAMILY_PRESENT: u32 = 0x0000_2000;
/// The RP2350's Arm secure-image family (RP2350 datasheet, section 5.5).
const RP2350_ARM_S: u32 = 0xe48b_ff59;

/// The UF2 of the RP2350 firmware `elf2flash-core` writes holds exactly the
/// ELF's loaded bytes at their flash addresses, in numbered RP2350 blocks. It
/// is written beside the ELF for drag-and-drop, named for the build it holds.
fn uf2_matches(elf: &Path, image: &BTreeMap<u64, Vec<u8>>) {
    let elf_bytes = std::fs::read(elf).unwrap();
    let mut uf2 = Vec::new();
    elf2flash_core::elf2uf2(&elf_bytes, &mut uf2, &elf2flash_core::boards::RP2350, elf2flash_core::NoProgress)
        .expect("elf2uf2");
    assert!(!uf2.is_empty() && uf2.len() % 512 == 0, "UF2 of {} bytes", uf2.len());
    let word = |b: &[u8], i: usize| u32::from_le_bytes(b[i * 4..i * 4 + 4].try_into().unwrap());
    let count = uf2.len() / 512;
    let mut flash = BTreeMap::new();
    for (n, block) in uf2.chunks(512).enumerate() {
        assert_eq!([word(block, 0), word(block, 1)], UF2_MAGIC, "block {n}: magic");
        assert_eq!(word(block, 127), UF2_MAGIC_END, "block {n}: end magic");
        assert_ne!(word(block, 2) & UF2_FAMILY_PRESENT, 0, "block {n}: no family id");
        let (addr, size) = (u64::from(word(block, 3)), word(block, 4) as usize);
        assert_eq!((word(block, 5) as usize, word(block, 6) as usize), (n, count), "block {n}: numbering");
        assert_eq!(word(block, 7), RP2350_ARM_S, "block {n}: family");
        assert!(size <= 476, "block {n}: payload {size} bytes");
        assert!(
            addr >= RP2350.flash.0 && addr + size as u64 <= RP2350.flash.0 + RP2350.flash.1,
            "block {n} writes {addr:#x}, outside the flash"
        );
        for (i, &b) in block[32..32 + size].iter().enumerate() {
            flash.insert(addr + i as u64, b);
        }
    }
    for (addr, bytes) in image {
        for (i, &b) in bytes.iter().enumerate() {
            let at = addr + i as u64;
            assert_eq!(flash.get(&at), Some(&b), "UF2 byte at {at:#x}");
        }
    }
    // Later builds replace the ELF: the name says which build this UF2 holds.
    let out = elf.with_file_name("microlm-rp2350-stories260K-q8_0-kv-i8-ctx512.uf2");
    std::fs::write(&out, &uf2).unwrap();
    println!("rp2350: {} ({} blocks, {} bytes)", out.display(), count, uf2.len());
}

/// A model larger than the flash (stories260K in f32: 1,048,996 bytes for the
/// nRF52840's 1 MiB) stops the build with one line naming the board and the bytes over.
#[test]
fn nrf52840_model_larger_than_flash_is_one_build_error() {
    let model = converted("f32");
    let len = std::fs::metadata(&model).unwrap().len();
    let err = build(&NRF52840, &model, 64, "i8").expect_err("a model larger than the flash built");
    let expect = format!(
        "error: microlm-nrf52840: the model ({len} bytes) does not fit in the nRF52840's 1024 KiB flash (1048576 bytes): \
         {} bytes over",
        len - NRF52840.flash.1
    );
    // Cargo indents the build script's stderr under its own `failed to run custom build command` line.
    let lines: Vec<&str> = err.lines().map(str::trim).filter(|l| l.starts_with("error: microlm-")).collect();
    assert_eq!(lines, [expect.as_str()], "in:\n{err}");
}
