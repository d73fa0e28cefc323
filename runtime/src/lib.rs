//! microlm: an embeddable `no_std` inference runtime for tiny Llama-style language models.
//!
//! ```text
//! model bytes ──Model::parse──▶ Model ──plan──▶ arena size
//!                                 │
//!          caller's arena ──Session::new──▶ Session ──forward(token, pos)──▶ logits
//!                                                        │
//!                                     Sampler ◀──────────┘──▶ token ──Tokenizer::decode──▶ bytes
//! ```
//!
//! No heap, no panics on bad input: a model file is checked once by
//! [`Model::parse`], and every buffer is handed in by the caller, sized by
//! [`Model::plan`]. Numerics are defined once here (one summation order per
//! kernel, `libm` for every math function), so the host and every board
//! produce bit-identical logits and tokens.
//!
//! # Example
//!
//! Parse → plan → session → forward → sample, on a tiny model written in
//! memory with the `std` writer (a board reads its model from flash instead
//! and sizes a `static` arena from the plan):
//!
//! ```
//! # #[cfg(feature = "std")]
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use microlm::format::{Config, DType};
//! use microlm::write::{encode_tensor, write_model, ModelSpec, Vocab};
//! use microlm::{KvDtype, Model, Sampler, SamplerConfig, Session};
//!
//! // A vocabulary of the 3 special tokens and the 256 byte tokens.
//! let mut pieces: Vec<Vec<u8>> = vec![b"<unk>".to_vec(), b"\n<s>\n".to_vec(), b"\n</s>\n".to_vec()];
//! pieces.extend((0..=255u8).map(|b| format!("<0x{b:02X}>").into_bytes()));
//! let vocab = Vocab { scores: vec![0.0; pieces.len()], pieces };
//! let config = Config {
//!     dim: 8, hidden_dim: 12, n_layers: 1, n_heads: 2, n_kv_heads: 1, vocab_size: 259, seq_len: 4,
//!     norm_eps: 1e-5, rope_theta: 10000.0, bos_id: 1, eos_id: 2, shared_classifier: false,
//! };
//! let spec = ModelSpec { name: "doc", source: "llama2.c", config, dtypes: [DType::F32; 12], vocab: &vocab };
//! let file = write_model(&spec, |t| {
//!     let values: Vec<f32> = (0..(t.rows * t.cols) as usize).map(|i| (i % 7) as f32 / 7.0 - 0.4).collect();
//!     Ok(encode_tensor(t.dtype, &values))
//! })?;
//!
//! // The model is read in place from a 4-byte aligned buffer.
//! let mut words = vec![0u32; file.len().div_ceil(4)];
//! bytemuck::cast_slice_mut::<u32, u8>(&mut words)[..file.len()].copy_from_slice(&file);
//! let model = Model::parse(&bytemuck::cast_slice::<u32, u8>(&words)[..file.len()])?;
//!
//! // The plan gives the exact arena; the session borrows it.
//! let plan = model.plan(4, KvDtype::F32)?;
//! let mut arena = vec![0u32; plan.total.div_ceil(4)];
//! let mut session = Session::new(&model, bytemuck::cast_slice_mut(&mut arena), 4, KvDtype::F32)?;
//! let mut sampler = Sampler::new(SamplerConfig { temperature: 0.0, ..Default::default() }, 259)?;
//!
//! session.forward(model.config().bos_id, 0)?;
//! let (logits, scratch) = session.logits_and_scratch();
//! let token = sampler.sample(logits, scratch)?;
//! assert!(token < 259);
//! let _bytes: &[u8] = model.tokenizer().decode(model.config().bos_id, token);
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "std"))]
//! # fn main() {}
//! ```
#![no_std]
#![deny(unsafe_code)]
#![warn(missing_docs)]

#[cfg(target_endian = "big")]
compile_error!("microlm reads little-endian model files in place and needs a little-endian target");

#[cfg(any(test, feature = "std"))]
extern crate std;

pub mod bpe;
pub mod dtype;
pub mod error;
pub mod format;
pub mod generate;
pub mod kernels;
pub mod kv;
pub mod math;
pub mod model;
pub mod plan;
#[cfg(feature = "std")]
pub mod quant;
pub mod sampler;
pub mod scalar;
pub mod session;
pub mod tokenizer;
#[cfg(feature = "std")]
pub mod write;

pub use bpe::{BpeTokenizer, PreTokenizer};
pub use error::{FormatError, PlanError, SamplerError, SessionError, TokenizerError};
pub use format::{Config, DType, TensorKind};
pub use generate::{GenerateError, Generation, Step, Stop};
pub use kv::KvDtype;
pub use model::{config_from_header, plan_from_header, Checksum, Model};
pub use plan::Plan;
pub use sampler::{Candidate, Sampler, SamplerConfig};
pub use session::Session;
pub use tokenizer::{SpmTokenizer, Tokenizer, Utf8Stream};
