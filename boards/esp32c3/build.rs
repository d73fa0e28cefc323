//! Embeds the model file named by MICROLM_MODEL and sizes the arena for it.
//!
//! - `MICROLM_MODEL=/path/to/model.mlm`: the file to embed in flash (the DROM window maps it) (relative
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

fn main() {
    microlm_build_support::embed_model(None);
}
