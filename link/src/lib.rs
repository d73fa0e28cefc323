//! The microlm link: how the host CLI (`microlm device`) and a board talk over
//! a serial port.
//!
//! # Frames
//!
//! Every message is a Rust enum ([`Request`] host → device, [`Response`]
//! device → host) encoded with [`postcard`], followed by the CRC-32 of those
//! bytes (little-endian; CRC-32/ISO-HDLC, the zlib/Ethernet CRC, from the
//! `crc` crate), and the whole COBS-encoded and ended by one `0x00` byte:
//!
//! ```text
//! COBS( postcard(message) ‖ crc32_le(postcard(message)) ) ‖ 0x00
//! ```
//!
//! A frame is at most [`MAX_FRAME`] bytes on the wire, delimiter included; a
//! receiver drops a longer one ([`ErrorKind::Oversized`]) and resynchronises at
//! the next `0x00`. Because COBS never emits `0x00` inside a frame, a receiver
//! that joins mid-stream, or loses bytes, loses at most the frame it is in.
//! [`frame`] holds the encoder and the receiving accumulator.
//!
//! # Conversation
//!
//! ```text
//! host                                   device
//! Hello { version }              ──▶
//!                                ◀──     Info { ..., model }     (or Error Version)
//! Generate { prompt, steps, ... }──▶
//!                                ◀──     Token { id, text }      one per generated token
//! Cancel                         ──▶     (checked after every token)
//!                                ◀──     Done { tokens, stop, ... }   or Error
//! UploadBegin { len, crc }       ──▶     erases the inactive slot
//!                                ◀──     UploadProgress { received: 0, len }
//! UploadChunk { offset, bytes }  ──▶     offset must be exactly the bytes received so far
//!                                ◀──     UploadProgress { received, len }
//! UploadCommit                   ──▶     length, CRC-32 and Model::parse checked, then
//!                                        one header write makes the slot active
//!                                ◀──     Info { ..., model: the new one }
//! Reset                          ──▶     the board restarts (no reply)
//! ```
//!
//! Every request gets exactly one reply, except `Generate` (tokens, then one
//! `Done` or `Error`), `Cancel` outside a generation (no reply: it may race
//! with the `Done`) and `Reset`. A request the device cannot take gets
//! [`Response::Error`] and the device keeps serving: frames are hostile
//! input. The device side is [`server::Server`]; the A/B model slots that make
//! an upload safe against a cut link or a reset are [`slots`].
#![no_std]
#![forbid(unsafe_code)]

#[cfg(feature = "std")]
extern crate std;

pub mod frame;
pub mod ramflash;
pub mod server;
pub mod slots;

use serde::{Deserialize, Serialize};

/// Protocol version, sent in [`Request::Hello`] and [`Info`]; a device answers
/// another version with [`ErrorKind::Version`].
pub const VERSION: u16 = 1;

/// Largest frame on the wire in bytes: COBS overhead, CRC and the `0x00`
/// delimiter included.
pub const MAX_FRAME: usize = 640;

/// Largest [`Request::UploadChunk`] payload in bytes (fits [`MAX_FRAME`] with
/// its header, CRC and COBS overhead).
pub const MAX_CHUNK: usize = 512;

/// Largest prompt in bytes.
pub const MAX_PROMPT: usize = 512;

/// KV-cache storage type of a generation (the runtime's `KvDtype`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Kv {
    /// 4 bytes per value.
    F32,
    /// 2 bytes per value.
    F16,
    /// 1 byte per value plus one f32 scale per (layer, position).
    I8,
}

impl From<Kv> for microlm::KvDtype {
    fn from(kv: Kv) -> Self {
        match kv {
            Kv::F32 => microlm::KvDtype::F32,
            Kv::F16 => microlm::KvDtype::F16,
            Kv::I8 => microlm::KvDtype::I8,
        }
    }
}

/// What to generate: the settings of `microlm generate`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct GenerateParams<'a> {
    /// Prompt text (UTF-8 or not: the tokenizer takes bytes), at most [`MAX_PROMPT`] bytes.
    #[serde(borrow)]
    pub prompt: &'a [u8],
    /// Positions to run, prompt included (llama2.c `-n`); 0 = the context length.
    pub steps: u32,
    /// 0 = greedy.
    pub temperature: f32,
    /// Nucleus mass in (0, 1].
    pub top_p: f32,
    /// 0 = off.
    pub top_k: u32,
    /// 0 = off.
    pub min_p: f32,
    /// Sampler seed, non-zero.
    pub seed: u64,
    /// Context length in positions; 0 = the model's seq_len.
    pub ctx: u32,
    /// KV-cache storage.
    pub kv: Kv,
}

/// Host → device.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Request<'a> {
    /// Opens a conversation; answered by [`Response::Info`].
    Hello {
        /// The host's [`VERSION`].
        version: u16,
    },
    /// Runs a generation: [`Response::Token`]s, then [`Response::Done`].
    Generate(#[serde(borrow)] GenerateParams<'a>),
    /// Stops the running generation after the current token.
    Cancel,
    /// Starts an upload of a `len`-byte model file whose CRC-32 is `crc`.
    UploadBegin {
        /// File length in bytes.
        len: u32,
        /// CRC-32/ISO-HDLC of the whole file.
        crc: u32,
    },
    /// The next part of the file: `offset` must equal the bytes received so far.
    UploadChunk {
        /// Byte offset in the file.
        offset: u32,
        /// At most [`MAX_CHUNK`] bytes.
        #[serde(borrow)]
        bytes: &'a [u8],
    },
    /// Checks the uploaded file and makes it the active model.
    UploadCommit,
    /// Restarts the board.
    Reset,
}

/// The model a device serves.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelSummary<'a> {
    /// The model's name (from its file).
    #[serde(borrow)]
    pub name: &'a str,
    /// File length in bytes.
    pub file_bytes: u32,
    /// CRC-32 of the file.
    pub crc: u32,
    /// Model width.
    pub dim: u32,
    /// Transformer layers.
    pub n_layers: u32,
    /// Vocabulary size.
    pub vocab_size: u32,
    /// Longest context the model was trained for.
    pub seq_len: u32,
    /// Flash slot it is stored in (0 = A, 1 = B), or 255 when built into the firmware.
    pub slot: u8,
}

/// What a device is.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Info<'a> {
    /// The device's [`VERSION`].
    pub version: u16,
    /// Firmware package name and version.
    #[serde(borrow)]
    pub firmware: &'a str,
    /// Runtime (`microlm` crate) version.
    pub runtime: &'a str,
    /// Board name.
    pub board: &'a str,
    /// Flash bytes of the chip.
    pub flash_bytes: u32,
    /// RAM bytes of the chip.
    pub ram_bytes: u32,
    /// Largest model file an upload may send (one slot, header excluded); 0 = no uploads.
    pub slot_bytes: u32,
    /// Largest arena the device can allocate now.
    pub arena_free_bytes: u32,
    /// The active model, if any.
    pub model: Option<ModelSummary<'a>>,
}

/// Why a generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum StopReason {
    /// The requested steps ran.
    Steps,
    /// The model produced BOS.
    Bos,
    /// The model produced EOS.
    Eos,
    /// The KV cache is full.
    ContextFull,
    /// The host sent [`Request::Cancel`].
    Cancelled,
}

/// The end of a generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Done {
    /// Tokens generated (prompt excluded).
    pub tokens: u32,
    /// Prompt tokens, BOS included.
    pub prompt_tokens: u32,
    /// Why it ended.
    pub stop: StopReason,
    /// Instructions (or cycles) per forward pass as the board counts them; 0 = not counted.
    pub instructions_per_token: u64,
    /// Arena bytes of this generation (`Model::plan(ctx, kv).total`).
    pub arena_bytes: u32,
    /// Deepest stack use seen so far, in bytes; 0 = not measured.
    pub stack_peak_bytes: u32,
}

/// What went wrong, in [`Response::Error`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ErrorKind {
    /// A frame failed COBS decoding or its CRC (detail: 0 COBS, 1 CRC, 2 shorter than a CRC).
    Frame,
    /// A frame was longer than [`MAX_FRAME`] (detail: the limit).
    Oversized,
    /// The frame held no valid request: unknown variant, bad field, trailing bytes.
    Decode,
    /// [`Request::Hello`] with another protocol version (detail: the device's).
    Version,
    /// There is no model to generate with.
    NoModel,
    /// A `Generate` setting is out of range (detail: which: 0 prompt, 1 steps,
    /// 2 temperature, 3 top_p, 4 top_k, 5 min_p, 6 seed, 7 ctx).
    BadSettings,
    /// The prompt has more tokens than the context or the device's buffer (detail: the limit).
    PromptTooLong,
    /// The arena for (model, ctx, kv) does not fit (detail: bytes needed).
    ArenaTooSmall,
    /// The model failed a check during generation.
    Model,
    /// An upload request arrived with no upload open, or a generation request during one.
    UploadState,
    /// `UploadBegin` with a file larger than a slot (detail: the slot size).
    UploadTooLarge,
    /// A chunk not at the expected offset or past the file (detail: the expected offset).
    UploadOffset,
    /// `UploadCommit` before every byte arrived (detail: bytes received).
    UploadIncomplete,
    /// The uploaded bytes do not have the announced CRC-32 (detail: their CRC).
    UploadCrc,
    /// The uploaded file is not a model this runtime can run.
    UploadModel,
    /// The flash driver failed.
    Flash,
}

/// Device → host.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Response<'a> {
    /// Answer to `Hello` and `UploadCommit`.
    Info(#[serde(borrow)] Info<'a>),
    /// One token and its text bytes (which may end inside a UTF-8 character):
    /// every position's token, the prompt's included, as `microlm generate` prints them.
    Token {
        /// Token id.
        id: u32,
        /// Decoded bytes.
        #[serde(borrow)]
        text: &'a [u8],
    },
    /// The generation ended.
    Done(Done),
    /// The request was not done.
    Error {
        /// What went wrong.
        kind: ErrorKind,
        /// A number that says more (see [`ErrorKind`]).
        detail: u32,
    },
    /// Bytes of the upload received so far.
    UploadProgress {
        /// Bytes received.
        received: u32,
        /// File length.
        len: u32,
    },
}

/// CRC-32/ISO-HDLC (zlib, Ethernet), for frames and uploaded files.
pub const CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

/// The CRC-32 of `bytes` as [`Request::UploadBegin`] wants it.
pub fn file_crc(bytes: &[u8]) -> u32 {
    CRC.checksum(bytes)
}
