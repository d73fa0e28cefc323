//! Puts memory.x on the linker search path and sizes the arena (see
//! microlm-build-support): MICROLM_ARENA_BYTES=N if set; else, with
//! MICROLM_MODEL=FILE, exactly the plan of that model (MICROLM_CTX positions,
//! default its seq_len; MICROLM_KV=f32|f16|i8, default f32); else 3 MiB.

/// Default arena: 3 MiB of the 4 MiB internal SRAM; the rest holds .data, .bss and the stack.
const DEFAULT_ARENA_BYTES: usize = 3 * 1024 * 1024;

fn main() {
    microlm_build_support::link_memory_x("memory.x");
    microlm_build_support::write_arena_rs(microlm_build_support::loaded_arena_bytes(DEFAULT_ARENA_BYTES));
}
