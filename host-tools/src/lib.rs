//! Host-side building blocks of the `microlm` CLI, shared with the tests:
//! checkpoint importers and aligned model loading.

pub mod gguf;
pub mod hf;
pub mod io;
pub mod llama2c;
pub mod load;
