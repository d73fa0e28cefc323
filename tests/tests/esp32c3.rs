//! The ESP32-C3 firmware (`boards/esp32c3`, esp-hal) builds with stories260K
//! q8_0 embedded and an int8 KV cache for 256 positions, and fits the chip:
//! its image within the 4 MiB flash (the IROM and DROM windows map it) and its
//! RAM sections within the 313 KiB esp-hal's memory map gives the program
//! (IRAM code and DRAM data share that SRAM). Its ESP-IDF app image, made
//! offline as `espflash save-image --chip esp32c3` makes it (espflash's
//! library), is checked field by field against ESP-IDF's `esp_image_header_t`
//! and the ELF. No board or emulator runs it here.

use std::path::{Path, PathBuf};

use microlm_tests::converted;

#[path = "support/firmware.rs"]
mod firmware;

use firmware::esp32c3::{DRAM, DROM, FLASH_BYTES, IRAM, IROM};
use firmware::EspFootprint;

/// Builds the firmware with `model` embedded and returns the ELF.
fn build(model: &Path) -> PathBuf {
    firmware::build("esp32c3", "riscv32imc-unknown-none-elf", model, 256, "i8", &[])
        .unwrap_or_else(|e| panic!("building the ESP32-C3 firmware failed:\n{e}"))
}

#[test]
fn esp32c3_firmware_fits_the_chip() {
    let model = converted("q8_0");
    let model_len = std::fs::metadata(&model).unwrap().len();
    let elf = build(&model);
    let EspFootprint { flash, rodata, ram, stack } = firmware::esp32c3_footprint(&elf);
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

/// ESP-IDF's image format (`esp_app_format.h`, `esp_image_format.h`): a
/// 24-byte header (magic 0xE9, segment count, SPI mode, SPI size and speed,
/// entry point; then WP pin, drive settings, chip id, chip revisions and
/// whether a SHA-256 digest follows), each segment as an 8-byte header (load
/// address, length) and its bytes, padding to 16 bytes with a one-byte XOR
/// checksum (seed 0xEF) last, then the SHA-256 of everything before it.
const ESP_IMAGE_MAGIC: u8 = 0xE9;
/// `esp_chip_id_t` ESP_CHIP_ID_ESP32C3.
const ESP_CHIP_ID_ESP32C3: u16 = 0x0005;
const CHECKSUM_SEED: u8 = 0xEF;

#[test]
fn esp32c3_app_image_is_an_esp_idf_image() {
    use object::{Object as _, ObjectSegment as _};
    use sha2::{Digest as _, Sha256};
    let model = converted("q8_0");
    let model_bytes = std::fs::read(&model).unwrap();
    let elf = build(&model);
    let elf_bytes = std::fs::read(&elf).unwrap();
    let image = firmware::esp32c3_app_image(&elf_bytes).expect("espflash");
    let out = elf.with_extension("bin");
    std::fs::write(&out, &image).unwrap();

    let u16_at = |i: usize| u16::from_le_bytes([image[i], image[i + 1]]);
    let u32_at = |i: usize| u32::from_le_bytes(image[i..i + 4].try_into().unwrap());
    assert_eq!(image[0], ESP_IMAGE_MAGIC, "magic");
    let count = image[1] as usize;
    let file = object::File::parse(&*elf_bytes).unwrap();
    assert_eq!(u64::from(u32_at(4)), file.entry(), "entry point");
    assert_eq!(u16_at(12), ESP_CHIP_ID_ESP32C3, "chip id");
    assert_eq!(image[23], 1, "no SHA-256 digest appended");

    // Walk the segments: each loads into one of the chip's memories; together they hold the ELF's loaded bytes.
    let within = |(base, len): (u64, u64), a: u64| (base..base + len).contains(&a);
    let (mut at, mut checksum, mut model_in_drom) = (24, CHECKSUM_SEED, false);
    let mut loaded = 0u64;
    for n in 0..count {
        let (addr, len) = (u64::from(u32_at(at)), u32_at(at + 4) as usize);
        let data = &image[at + 8..at + 8 + len];
        // Address 0: zeros that align the next flash segment to its MMU page (the bootloader loads nothing).
        let padding = addr == 0 && data.iter().all(|&b| b == 0);
        assert!(
            padding || within(IROM, addr) || within(DROM, addr) || within(DRAM, addr) || within(IRAM, addr),
            "segment {n} loads at {addr:#x}, outside the ESP32-C3's memories"
        );
        model_in_drom |= within(DROM, addr) && data.windows(64).any(|w| w == &model_bytes[..64]);
        checksum = data.iter().fold(checksum, |c, b| c ^ b);
        loaded += len as u64;
        at += 8 + len;
    }
    assert!(model_in_drom, "the model's first bytes are in no DROM segment");
    let elf_loaded: u64 = file.segments().map(|s| s.file_range().1).sum();
    assert!(loaded >= elf_loaded, "segments hold {loaded} bytes; the ELF loads {elf_loaded}");
    // Padding to a 16-byte boundary, the checksum last; then the digest.
    let checksum_at = (at / 16) * 16 + 15;
    assert_eq!(image[checksum_at], checksum, "checksum");
    let digest = &image[checksum_at + 1..];
    assert_eq!(digest, Sha256::digest(&image[..=checksum_at]).as_slice(), "SHA-256 digest");
    assert!((image.len() as u64) < FLASH_BYTES - 0x10000, "image {} bytes", image.len());
    println!("esp32c3: {} ({} bytes, {count} segments, chip id {})", out.display(), image.len(), u16_at(12));
}
