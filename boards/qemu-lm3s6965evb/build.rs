//! Embeds the model file named by MICROLM_MODEL and sizes the arena for it.
//!
//! - `MICROLM_MODEL=/path/to/model.mlm`: the file to embed in flash (relative
//!   paths are taken from this directory). Without it the firmware builds
//!   with no model and says so when run.
//! - `MICROLM_CTX=N`: the context length the arena is sized for (default: the
//!   model's seq_len); the firmware uses it unless `--ctx` says otherwise.
//! - `MICROLM_KV=f32|f16|i8`: the KV cache dtype the arena is sized for (default
//!   f32); run the firmware with the same `--kv`.
//!
//! The arena is exactly `Model::plan(ctx, kv).total` bytes, planned from the
//! model's header (microlm-build-support). A file whose header does not parse
//! still builds (with no arena), so the firmware reports the parser's error as
//! it does for any bad file.
//!
//! `cfg(microlm_bpe)` is set when the embedded model's tokenizer is byte-level
//! BPE: the firmware then carries that encoder, and otherwise only the
//! SentencePiece one (about 4.5 KB of flash less).

fn main() {
    microlm_build_support::link_memory_x("memory.x");
    microlm_build_support::embed_model(None);
    println!("cargo::rustc-check-cfg=cfg(microlm_bpe)");
    if microlm_build_support::model_has_bpe_tokenizer() {
        println!("cargo::rustc-cfg=microlm_bpe");
    }
}
