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
#![no_std]
#![deny(unsafe_code)]
#![warn(missing_docs)]

#[cfg(target_endian = "big")]
compile_error!("microlm reads little-endian model files in place and needs a little-endian target");

#[cfg(any(test, feature = "std"))]
extern crate std;

#[allow(missing_docs)] // variant fields are named for what they hold
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

pub use error::{FormatError, PlanError, SamplerError, SessionError, TokenizerError};
pub use format::{Config, DType, TensorKind};
pub use generate::{GenerateError, Generation, Step, Stop};
pub use kv::KvDtype;
pub use model::{config_from_header, plan_from_header, Checksum, Model};
pub use plan::Plan;
pub use sampler::{Candidate, Sampler, SamplerConfig};
pub use session::Session;
pub use tokenizer::{Tokenizer, Utf8Stream};
