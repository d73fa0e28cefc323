//! Writes the UF2 file the RP2350's boot ROM takes over USB (hold BOOTSEL,
//! plug the Pico 2 in, copy the file onto the RP2350 drive):
//!
//! ```text
//! cargo run --release -p microlm-tests --example uf2 -- ELF [OUT.uf2]
//! ```
//!
//! ELF is the firmware `cargo build --release` made in boards/rp2350; OUT
//! defaults to ELF with the extension `.uf2`. The blocks carry the RP2350's
//! Arm secure-image family id (0xe48bff59); the conversion is elf2flash-core's.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let Some(elf) = args.next().map(PathBuf::from) else {
        eprintln!("usage: uf2 ELF [OUT.uf2]");
        return ExitCode::FAILURE;
    };
    let out = args.next().map_or_else(|| elf.with_extension("uf2"), PathBuf::from);
    let bytes = match std::fs::read(&elf) {
        Ok(bytes) => bytes,
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", elf.display());
            return ExitCode::FAILURE;
        }
    };
    let mut uf2 = Vec::new();
    if let Err(e) =
        elf2flash_core::elf2uf2(&bytes, &mut uf2, &elf2flash_core::boards::RP2350, elf2flash_core::NoProgress)
    {
        eprintln!("error: {} is not a firmware ELF for the RP2350: {e}", elf.display());
        return ExitCode::FAILURE;
    }
    if let Err(e) = std::fs::write(&out, &uf2) {
        eprintln!("error: cannot write {}: {e}", out.display());
        return ExitCode::FAILURE;
    }
    println!("{}: {} blocks of 512 bytes", out.display(), uf2.len() / 512);
    ExitCode::SUCCESS
}
