//! Puts memory.x on the linker search path and sizes the arena.

use std::env;
use std::fs;
use std::path::PathBuf;

/// Default arena: 3 MiB of the 4 MiB data SRAM; the rest holds .data, .bss and the stack.
const DEFAULT_ARENA_BYTES: usize = 3 * 1024 * 1024;

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    fs::write(out.join("memory.x"), include_bytes!("memory.x")).expect("write memory.x");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory.x");
    // cortex-m-rt's linker script, which includes memory.x.
    println!("cargo:rustc-link-arg-bins=-Tlink.x");

    // The arena: MICROLM_ARENA_BYTES=N if set; else, with MICROLM_MODEL=FILE, exactly the plan of
    // that model (MICROLM_CTX positions, default its seq_len; MICROLM_KV=f32|f16|i8, default f32)
    // from its header; else 3 MiB.
    for var in ["MICROLM_ARENA_BYTES", "MICROLM_MODEL", "MICROLM_CTX", "MICROLM_KV"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let arena = match (env::var("MICROLM_ARENA_BYTES"), env::var_os("MICROLM_MODEL")) {
        (Ok(v), _) => {
            v.trim().parse::<usize>().unwrap_or_else(|_| panic!("MICROLM_ARENA_BYTES={v:?} is not a byte count"))
        }
        (Err(_), Some(model)) => planned_arena(&PathBuf::from(model)),
        (Err(_), None) => DEFAULT_ARENA_BYTES,
    };
    // Whole words: the arena is a [u32] so it is 4-byte aligned as Session::new wants.
    let words = arena.div_ceil(4);
    fs::write(
        out.join("arena.rs"),
        format!("/// Arena size in 32-bit words (build.rs).\npub const ARENA_WORDS: usize = {words};\n"),
    )
    .expect("write arena.rs");
}

/// The exact arena of the model at $MICROLM_MODEL, planned from its header.
fn planned_arena(path: &std::path::Path) -> usize {
    println!("cargo:rerun-if-changed={}", path.display());
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("MICROLM_MODEL={}: {e}", path.display()));
    let kv = match env::var("MICROLM_KV") {
        Ok(v) => v.parse::<microlm::KvDtype>().unwrap_or_else(|e| panic!("MICROLM_KV={v:?}: {e}")),
        Err(_) => microlm::KvDtype::F32,
    };
    let ctx = match env::var("MICROLM_CTX") {
        Ok(v) => v.trim().parse::<usize>().unwrap_or_else(|_| panic!("MICROLM_CTX={v:?} is not a whole number")),
        Err(_) => {
            microlm::config_from_header(&bytes)
                .unwrap_or_else(|e| panic!("MICROLM_MODEL={}: {e}", path.display()))
                .seq_len
        }
    };
    let plan = microlm::plan_from_header(&bytes, ctx, kv)
        .unwrap_or_else(|e| panic!("MICROLM_MODEL={}: cannot plan ctx {ctx}, {kv} KV: {e}", path.display()));
    println!("cargo:warning=arena sized for {}: ctx {ctx}, {kv} KV cache, {} bytes", path.display(), plan.total);
    plan.total
}
