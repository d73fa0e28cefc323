//! The device side of the link: reads frames, runs generations, takes uploads.
//!
//! A board gives the [`Server`] four things: its flash region for the model
//! slots ([`NorFlash`] + [`Mapped`]; `None` for a board without uploads), an
//! [`Arena`] (the run-time allocator: `embedded-alloc` on a board), a [`Port`]
//! (the UART and the board's counters), and [`BoardInfo`]. It then calls
//! [`Server::poll`] forever. Nothing here allocates; every buffer is a field
//! of the server, sized by the constants of the [`crate`].

use embedded_storage::nor_flash::NorFlash;
use microlm::{
    Checksum, GenerateError, Generation, Model, Sampler, SamplerConfig, SamplerError, Session, SessionError, Step, Stop,
};

use crate::frame::{self, Feed, FrameError, Frames};
use crate::ramflash::Mapped;
use crate::slots::{SlotWriter, Slots, DATA_OFFSET};
use crate::{
    Done, ErrorKind, GenerateParams, Info, ModelSummary, Request, Response, StopReason, MAX_CHUNK, MAX_FRAME,
    MAX_PROMPT, VERSION,
};

/// The serial line and the board's counters.
pub trait Port {
    /// The next received byte, if one is waiting (never blocks).
    fn read(&mut self) -> Option<u8>;
    /// Sends `bytes` (may block until they are out).
    fn write(&mut self, bytes: &[u8]);
    /// A free-running instruction or cycle counter; 0 when the board has none.
    fn counter(&mut self) -> u64 {
        0
    }
    /// Deepest stack use so far in bytes; 0 when not measured.
    fn stack_peak(&mut self) -> u32 {
        0
    }
    /// Restarts the board.
    fn reset(&mut self);
    /// Called by a board's serve loop when [`Port::read`] has nothing: a board
    /// whose receive runs on interrupts may sleep here until the next one.
    fn idle(&mut self) {}
}

/// Run-time memory for the inference arena.
pub trait Arena {
    /// A buffer of exactly `bytes` bytes, 4-byte aligned, replacing the previous
    /// one; `None` when the free RAM is too small.
    fn resize(&mut self, bytes: usize) -> Option<&mut [u8]>;
    /// Largest buffer [`Arena::resize`] could return now.
    fn free_bytes(&self) -> usize;
}

/// What a board is, for [`Info`].
#[derive(Clone, Copy, Debug)]
pub struct BoardInfo {
    /// Firmware package name and version.
    pub firmware: &'static str,
    /// Board name.
    pub board: &'static str,
    /// Flash bytes of the chip.
    pub flash_bytes: u32,
    /// RAM bytes of the chip.
    pub ram_bytes: u32,
}

/// An upload in progress.
#[derive(Debug)]
struct Upload {
    slot: u8,
    len: u32,
    crc: u32,
    received: u32,
    writer: SlotWriter,
}

/// Prompt token capacity: every prompt byte one token, plus BOS, EOS and slack.
const PROMPT_TOKENS: usize = MAX_PROMPT + 8;

/// The device side of the link (see the [module docs](self)).
#[derive(Debug)]
pub struct Server<F, A, P> {
    flash: Option<F>,
    slots: Option<Slots>,
    /// A model built into the firmware, served when no slot holds one.
    builtin: Option<&'static [u8]>,
    arena: A,
    port: P,
    info: BoardInfo,
    frames: Frames<MAX_FRAME>,
    out: [u8; MAX_FRAME],
    tokens: heapless::Vec<u32, PROMPT_TOKENS>,
    upload: Option<Upload>,
}

/// Replies `Error { kind, detail }`.
fn send_error<P: Port>(port: &mut P, out: &mut [u8], kind: ErrorKind, detail: u32) {
    send(port, out, &Response::Error { kind, detail });
}

fn send<P: Port>(port: &mut P, out: &mut [u8], msg: &Response<'_>) {
    // Every response fits MAX_FRAME: the largest are Info (short strings) and
    // Token (one piece's bytes; pieces are far shorter than a frame).
    if let Ok(f) = frame::encode(msg, out) {
        port.write(f);
    }
}

fn stop_reason(stop: Stop) -> StopReason {
    match stop {
        Stop::Steps => StopReason::Steps,
        Stop::Bos => StopReason::Bos,
        Stop::Eos => StopReason::Eos,
        Stop::ContextFull => StopReason::ContextFull,
    }
}

fn summary<'m>(model: &Model<'m>, crc: u32, slot: u8) -> ModelSummary<'m> {
    let c = model.config();
    ModelSummary {
        name: model.name(),
        file_bytes: model.file_len() as u32,
        crc,
        dim: c.dim as u32,
        n_layers: c.n_layers as u32,
        vocab_size: c.vocab_size as u32,
        seq_len: c.seq_len as u32,
        slot,
    }
}

impl<F: NorFlash + Mapped, A: Arena, P: Port> Server<F, A, P> {
    /// A server over `flash` (the two model slots; `None` = no uploads) and a
    /// `builtin` model (served while no slot holds a valid one).
    pub fn new(flash: Option<F>, builtin: Option<&'static [u8]>, arena: A, port: P, info: BoardInfo) -> Self {
        let slots = flash.as_ref().and_then(|f| Slots::scan(f).ok());
        Server {
            flash,
            slots,
            builtin,
            arena,
            port,
            info,
            frames: Frames::new(),
            out: [0; MAX_FRAME],
            tokens: heapless::Vec::new(),
            upload: None,
        }
    }

    /// The port (for a board's own output).
    pub fn port(&mut self) -> &mut P {
        &mut self.port
    }

    /// The flash region, returned at the end (the host tests' "power cycle").
    pub fn into_flash(self) -> Option<F> {
        self.flash
    }

    /// Handles every byte waiting on the port; returns after the port has none.
    pub fn poll(&mut self) {
        while let Some(b) = self.port.read() {
            self.feed(b);
        }
    }

    /// Handles one received byte (a complete frame is served before returning).
    pub fn feed(&mut self, byte: u8) {
        let mut req_buf = [0u8; MAX_FRAME];
        let n = match self.frames.push(byte) {
            Feed::Pending => return,
            Feed::Oversized => {
                let (k, d) = FrameError::Oversized.reply();
                return send_error(&mut self.port, &mut self.out, k, d);
            }
            Feed::Frame(f) => {
                // Copied out so the accumulator is free while the request runs
                // (a generation reads further frames: Cancel).
                req_buf[..f.len()].copy_from_slice(f);
                f.len()
            }
        };
        match frame::decode::<Request<'_>>(&mut req_buf[..n]) {
            Ok(req) => self.handle(req),
            Err(e) => {
                let (k, d) = e.reply();
                send_error(&mut self.port, &mut self.out, k, d);
            }
        }
    }

    fn handle(&mut self, req: Request<'_>) {
        match req {
            Request::Hello { version } if version != VERSION => {
                send_error(&mut self.port, &mut self.out, ErrorKind::Version, u32::from(VERSION))
            }
            Request::Hello { .. } => self.send_info(),
            Request::Generate(p) => self.generate(&p),
            // Outside a generation there is nothing to stop (and no reply: it
            // may cross the Done in flight).
            Request::Cancel => {}
            Request::UploadBegin { len, crc } => self.upload_begin(len, crc),
            Request::UploadChunk { offset, bytes } => self.upload_chunk(offset, bytes),
            Request::UploadCommit => self.upload_commit(),
            Request::Reset => self.port.reset(),
        }
    }

    fn send_info(&mut self) {
        let active = match (&self.flash, &self.slots) {
            (Some(f), Some(s)) => s.active_file(f).zip(s.active).map(|(file, a)| (file, a.crc, a.slot)),
            _ => None,
        }
        .or_else(|| self.builtin.map(|b| (b, crate::file_crc(b), 255)));
        let model = active
            .and_then(|(file, crc, slot)| Model::parse_with(file, Checksum::Skip).ok().map(|m| summary(&m, crc, slot)));
        let info = Info {
            version: VERSION,
            firmware: self.info.firmware,
            runtime: env!("CARGO_PKG_VERSION"),
            board: self.info.board,
            flash_bytes: self.info.flash_bytes,
            ram_bytes: self.info.ram_bytes,
            slot_bytes: self.slots.map_or(0, |s| s.capacity() as u32),
            arena_free_bytes: self.arena.free_bytes() as u32,
            model,
        };
        send(&mut self.port, &mut self.out, &Response::Info(info));
    }

    fn upload_begin(&mut self, len: u32, crc: u32) {
        self.upload = None;
        let (Some(flash), Some(slots)) = (&mut self.flash, &self.slots) else {
            return send_error(&mut self.port, &mut self.out, ErrorKind::UploadTooLarge, 0);
        };
        if len == 0 || len as usize > slots.capacity() {
            return send_error(&mut self.port, &mut self.out, ErrorKind::UploadTooLarge, slots.capacity() as u32);
        }
        let slot = slots.inactive();
        if slots.erase(flash, slot).is_err() {
            return send_error(&mut self.port, &mut self.out, ErrorKind::Flash, 0);
        }
        let writer = SlotWriter::new(slots.data_start(slot) as u32);
        self.upload = Some(Upload { slot, len, crc, received: 0, writer });
        send(&mut self.port, &mut self.out, &Response::UploadProgress { received: 0, len });
    }

    fn upload_chunk(&mut self, offset: u32, bytes: &[u8]) {
        let (Some(flash), Some(up)) = (&mut self.flash, &mut self.upload) else {
            return send_error(&mut self.port, &mut self.out, ErrorKind::UploadState, 0);
        };
        let fits = up.received.checked_add(bytes.len() as u32).is_some_and(|end| end <= up.len);
        if offset != up.received || bytes.is_empty() || bytes.len() > MAX_CHUNK || !fits {
            return send_error(&mut self.port, &mut self.out, ErrorKind::UploadOffset, up.received);
        }
        if up.writer.write(flash, bytes).is_err() {
            self.upload = None;
            return send_error(&mut self.port, &mut self.out, ErrorKind::Flash, 0);
        }
        up.received += bytes.len() as u32;
        let (received, len) = (up.received, up.len);
        send(&mut self.port, &mut self.out, &Response::UploadProgress { received, len });
    }

    fn upload_commit(&mut self) {
        let (Some(flash), Some(slots), Some(up)) = (&mut self.flash, &mut self.slots, &mut self.upload) else {
            return send_error(&mut self.port, &mut self.out, ErrorKind::UploadState, 0);
        };
        if up.received != up.len {
            return send_error(&mut self.port, &mut self.out, ErrorKind::UploadIncomplete, up.received);
        }
        if up.writer.finish(flash).is_err() {
            self.upload = None;
            return send_error(&mut self.port, &mut self.out, ErrorKind::Flash, 0);
        }
        let start = slots.data_start(up.slot);
        let file = &flash.mapped()[start..start + up.len as usize];
        let crc = crate::file_crc(file);
        let (slot, len, want) = (up.slot, up.len, up.crc);
        if crc != want {
            self.upload = None;
            return send_error(&mut self.port, &mut self.out, ErrorKind::UploadCrc, crc);
        }
        if let Err(e) = Model::parse(file) {
            self.upload = None;
            let _ = e;
            return send_error(&mut self.port, &mut self.out, ErrorKind::UploadModel, 0);
        }
        let committed = slots.commit(flash, slot, len, crc);
        self.upload = None;
        match committed {
            Ok(()) if slots.active.is_some_and(|a| a.slot == slot) => self.send_info(),
            _ => send_error(&mut self.port, &mut self.out, ErrorKind::Flash, 1),
        }
    }

    fn generate(&mut self, p: &GenerateParams<'_>) {
        let Server { flash, slots, builtin, arena, port, frames, out, tokens, upload, .. } = self;
        if upload.is_some() {
            return send_error(port, out, ErrorKind::UploadState, 1);
        }
        let active = match (&*flash, &*slots) {
            (Some(f), Some(s)) => s.active_file(f),
            _ => None,
        }
        .or(*builtin);
        let Some(file) = active else { return send_error(port, out, ErrorKind::NoModel, 0) };
        let Ok(model) = Model::parse_with(file, Checksum::Skip) else {
            return send_error(port, out, ErrorKind::Model, 0);
        };
        match run(&model, p, arena, port, frames, out, tokens) {
            Ok(done) => send(port, out, &Response::Done(done)),
            Err((kind, detail)) => send_error(port, out, kind, detail),
        }
    }
}

/// Settings index in [`ErrorKind::BadSettings`].
fn sampler_setting(e: SamplerError) -> u32 {
    match e {
        SamplerError::Temperature => 2,
        SamplerError::TopP => 3,
        SamplerError::TopK { .. } => 4,
        SamplerError::MinP => 5,
        _ => 6,
    }
}

/// One generation: tokens streamed to `port`, `Cancel` honoured after each.
fn run<A: Arena, P: Port>(
    model: &Model<'_>,
    p: &GenerateParams<'_>,
    arena: &mut A,
    port: &mut P,
    frames: &mut Frames<MAX_FRAME>,
    out: &mut [u8; MAX_FRAME],
    tokens: &mut heapless::Vec<u32, PROMPT_TOKENS>,
) -> Result<Done, (ErrorKind, u32)> {
    let cfg = model.config();
    if p.prompt.len() > MAX_PROMPT {
        return Err((ErrorKind::BadSettings, 0));
    }
    let ctx = if p.ctx == 0 { cfg.seq_len } else { p.ctx as usize };
    if ctx > cfg.seq_len {
        return Err((ErrorKind::BadSettings, 7));
    }
    let steps = if p.steps == 0 { ctx } else { p.steps as usize };
    let kv = p.kv.into();
    let plan = model.plan(ctx, kv).map_err(|_| (ErrorKind::BadSettings, 7))?;
    let sampler_cfg = SamplerConfig {
        temperature: p.temperature,
        top_p: p.top_p,
        top_k: p.top_k as usize,
        min_p: p.min_p,
        seed: p.seed,
    };
    let mut sampler =
        Sampler::new(sampler_cfg, cfg.vocab_size).map_err(|e| (ErrorKind::BadSettings, sampler_setting(e)))?;
    let tok = *model.tokenizer();
    tokens.clear();
    let cap = microlm::Tokenizer::encode_capacity(p.prompt).min(PROMPT_TOKENS);
    // Zero-filled, then cut to what the prompt encodes to.
    let _ = tokens.resize(cap, 0);
    let n = tok.encode(p.prompt, true, false, tokens).map_err(|_| (ErrorKind::PromptTooLong, cap as u32))?;
    tokens.truncate(n);
    let Some(mem) = arena.resize(plan.total) else { return Err((ErrorKind::ArenaTooSmall, plan.total as u32)) };
    let mut session = Session::new(model, mem, ctx, kv).map_err(|e| match e {
        SessionError::ArenaTooSmall { needed, .. } => (ErrorKind::ArenaTooSmall, needed as u32),
        _ => (ErrorKind::BadSettings, 7),
    })?;
    let mut gen = Generation::new(&session, &tokens[..], steps).map_err(|_| (ErrorKind::PromptTooLong, ctx as u32))?;
    let (mut generated, mut forwards) = (0u32, 0u64);
    // A model that adds no BOS starts with a text token: send it too, as `microlm generate` prints it.
    if let Some(&first) = tokens.first().filter(|&&t| t != tok.bos_id()) {
        send(port, out, &Response::Token { id: first, text: tok.decode(tok.bos_id(), first) });
    }
    let start = port.counter();
    let stop = loop {
        match gen.step(&mut session, &mut sampler) {
            Ok(Step::Token { prev, token, forced }) => {
                forwards += 1;
                generated += u32::from(!forced);
                send(port, out, &Response::Token { id: token, text: tok.decode(prev, token) });
                if cancelled(port, frames, out) {
                    break StopReason::Cancelled;
                }
            }
            Ok(Step::Done(stop)) => break stop_reason(stop),
            Err(GenerateError::Sampler(e)) => return Err((ErrorKind::BadSettings, sampler_setting(e))),
            Err(_) => return Err((ErrorKind::Model, 1)),
        }
    };
    let counted = port.counter().wrapping_sub(start);
    Ok(Done {
        tokens: generated,
        prompt_tokens: n as u32,
        stop,
        instructions_per_token: counted.checked_div(forwards).unwrap_or(0),
        arena_bytes: plan.total as u32,
        stack_peak_bytes: port.stack_peak(),
    })
}

/// Reads what arrived during the last token: true when it held a `Cancel`.
/// Any other complete request is refused as `UploadState` (busy generating).
fn cancelled<P: Port>(port: &mut P, frames: &mut Frames<MAX_FRAME>, out: &mut [u8; MAX_FRAME]) -> bool {
    let mut cancel = false;
    while let Some(b) = port.read() {
        let reply = match frames.push(b) {
            Feed::Pending => None,
            Feed::Oversized => Some(FrameError::Oversized.reply()),
            Feed::Frame(f) => match frame::decode::<Request<'_>>(f) {
                Ok(Request::Cancel) => {
                    cancel = true;
                    None
                }
                Ok(_) => Some((ErrorKind::UploadState, 2)),
                Err(e) => Some(e.reply()),
            },
        };
        if let Some((kind, detail)) = reply {
            send_error(port, out, kind, detail);
        }
    }
    cancel
}

/// Keeps DATA_OFFSET in the public docs' sense: the file follows the slot header.
const _: () = assert!(DATA_OFFSET.is_multiple_of(32));
