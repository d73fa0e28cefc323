//! Puts memory.x on the linker search path and sizes the arena.

use std::env;
use std::fs;
use std::path::PathBuf;

/// Default arena: 3 MiB of the 4 MiB SSRAM; the rest holds .data, .bss and the stack.
const DEFAULT_ARENA_BYTES: usize = 3 * 1024 * 1024;

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    fs::write(out.join("memory.x"), include_bytes!("memory.x")).expect("write memory.x");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory.x");
    // cortex-m-rt's linker script, which includes memory.x.
    println!("cargo:rustc-link-arg-bins=-Tlink.x");

    // MICROLM_ARENA_BYTES=N sizes the static arena (see `microlm inspect FILE --json | jq .arena_bytes`).
    println!("cargo:rerun-if-env-changed=MICROLM_ARENA_BYTES");
    let arena = match env::var("MICROLM_ARENA_BYTES") {
        Ok(v) => v.trim().parse::<usize>().unwrap_or_else(|_| panic!("MICROLM_ARENA_BYTES={v:?} is not a byte count")),
        Err(_) => DEFAULT_ARENA_BYTES,
    };
    // Whole words: the arena is a [u32] so it is 4-byte aligned as Session::new wants.
    let words = arena.div_ceil(4);
    fs::write(
        out.join("arena.rs"),
        format!("/// Arena size in 32-bit words (build.rs).\npub const ARENA_WORDS: usize = {words};\n"),
    )
    .expect("write arena.rs");
}
