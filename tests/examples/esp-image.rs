//! Writes the ESP32-C3 firmware's ESP-IDF app image offline, as `espflash
//! save-image --chip esp32c3 ELF OUT.bin` does (espflash's library, without
//! its CLI or a serial port):
//!
//! ```text
//! cargo run --release -p microlm-tests --example esp-image -- ELF [OUT.bin]
//! ```
//!
//! ELF is the firmware `cargo build --release` made in boards/esp32c3; OUT
//! defaults to ELF with the extension `.bin`. The image is for the app
//! partition of espflash's default partition table (offset 0x10000, 4 MiB
//! flash): `espflash write-bin 0x10000 OUT.bin`, or `esptool.py write_flash
//! 0x10000 OUT.bin`, once the board has the ESP-IDF bootloader and partition
//! table (any earlier `espflash flash` wrote them).

use std::path::PathBuf;
use std::process::ExitCode;

#[path = "../tests/support/firmware.rs"]
mod firmware;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let Some(elf) = args.next().map(PathBuf::from) else {
        eprintln!("usage: esp-image ELF [OUT.bin]");
        return ExitCode::FAILURE;
    };
    let out = args.next().map_or_else(|| elf.with_extension("bin"), PathBuf::from);
    let bytes = match std::fs::read(&elf) {
        Ok(bytes) => bytes,
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", elf.display());
            return ExitCode::FAILURE;
        }
    };
    let image = match firmware::esp32c3_app_image(&bytes) {
        Ok(image) => image,
        Err(e) => {
            eprintln!("error: {} is not an ESP32-C3 app ELF: {e}", elf.display());
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = std::fs::write(&out, &image) {
        eprintln!("error: cannot write {}: {e}", out.display());
        return ExitCode::FAILURE;
    }
    println!("{}: ESP32-C3 app image, {} bytes", out.display(), image.len());
    ExitCode::SUCCESS
}
