//! Host-side building blocks of the `microlm` CLI, shared with the tests:
//! checkpoint importers, aligned model loading and GPTQ.

pub mod gguf;
pub mod gptq;
pub mod hf;
pub mod io;
pub mod llama2c;
pub mod load;
pub mod reproducible;
