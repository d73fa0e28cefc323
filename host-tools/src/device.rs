//! `microlm device`: talk to a board over the link (`microlm-link`): its
//! info, a generation streamed token by token, a model upload.
//!
//! The link is a serial port (`--port`, through the `serialport` crate) or a
//! Unix socket (`--socket`, e.g. a QEMU `-chardev socket`). Every reply is
//! awaited for at most `--timeout` seconds, so a silent or unplugged board is
//! an error, never a hang.

use std::io::{ErrorKind as IoKind, Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use microlm::{KvDtype, Utf8Stream};
use microlm_link::frame::{self, Feed, Frames};
use microlm_link::{
    file_crc, Done, ErrorKind, GenerateParams, Info, Kv, Request, Response, StopReason, MAX_CHUNK, MAX_FRAME,
    MAX_PROMPT, VERSION,
};

use crate::generate::SamplingArgs;
use microlm_cli::io;

/// Arguments of `microlm device`.
#[derive(Debug, Args)]
pub struct DeviceArgs {
    /// Serial port of the board (e.g. /dev/ttyACM0).
    #[arg(long, conflicts_with = "socket", required_unless_present = "socket")]
    pub port: Option<String>,
    /// Baud rate of --port.
    #[arg(long, default_value_t = 115_200)]
    pub baud: u32,
    /// Unix socket carrying the board's serial line (QEMU `-chardev socket,path=...`).
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Seconds to wait for each reply (each token, during a generation); more than 0.
    #[arg(long, default_value_t = 30.0, allow_hyphen_values = true, value_parser = crate::values::timeout_real)]
    pub timeout: f32,
    /// Print one JSON object as the last line.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: DeviceCommand,
}

/// What to do on the board.
#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// Print the board, its firmware and the model it serves.
    Info,
    /// Generate on the board, printing tokens as they arrive (KV cache default: i8).
    Generate(SamplingArgs),
    /// Upload a model file into the board's inactive slot, then make it active.
    Upload {
        /// Model file (.mlm).
        file: PathBuf,
    },
}

/// A byte stream with a read timeout.
trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

/// The host end of the link.
struct Link {
    stream: Box<dyn Stream>,
    frames: Frames<MAX_FRAME>,
    /// Received bytes not yet fed to `frames`.
    pending: Vec<u8>,
    timeout: Duration,
}

impl Link {
    /// The link on a Unix socket.
    fn socket(path: &std::path::Path, timeout: Duration) -> Result<Link> {
        let s = std::os::unix::net::UnixStream::connect(path)
            .with_context(|| format!("cannot connect to {}", path.display()))?;
        s.set_read_timeout(Some(Duration::from_millis(50)))?;
        Ok(Link { stream: Box::new(s), frames: Frames::new(), pending: Vec::new(), timeout })
    }

    fn open(args: &DeviceArgs) -> Result<Link> {
        let timeout = Duration::from_secs_f32(args.timeout.max(0.001));
        // Reads return after at most this long so the reply deadline is checked.
        let poll = Duration::from_millis(50);
        let stream: Box<dyn Stream> = match (&args.port, &args.socket) {
            (Some(port), _) => Box::new(
                serialport::new(port, args.baud)
                    .timeout(poll)
                    .open()
                    .with_context(|| format!("cannot open serial port {port}"))?,
            ),
            (None, Some(path)) => {
                let s = std::os::unix::net::UnixStream::connect(path)
                    .with_context(|| format!("cannot connect to {}", path.display()))?;
                s.set_read_timeout(Some(poll))?;
                Box::new(s)
            }
            (None, None) => bail!("give --port PATH or --socket PATH"),
        };
        Ok(Link { stream, frames: Frames::new(), pending: Vec::new(), timeout })
    }

    fn send(&mut self, req: &Request<'_>) -> Result<()> {
        let mut buf = [0u8; MAX_FRAME];
        let f = frame::encode(req, &mut buf).map_err(|e| anyhow::anyhow!("cannot encode {req:?}: {e:?}"))?;
        self.stream.write_all(f).context("cannot write to the board")?;
        self.stream.flush().context("cannot write to the board")
    }

    /// Discards what arrives until the line is quiet for 100 ms (at most 1 s):
    /// replies meant for an earlier connection.
    fn drain(&mut self) {
        let start = Instant::now();
        let mut quiet = Instant::now();
        let mut buf = [0u8; 4096];
        while quiet.elapsed() < Duration::from_millis(100) && start.elapsed() < Duration::from_secs(1) {
            match self.stream.read(&mut buf) {
                Ok(0) => return,
                Ok(_) => quiet = Instant::now(),
                Err(e) if matches!(e.kind(), IoKind::TimedOut | IoKind::WouldBlock | IoKind::Interrupted) => {}
                Err(_) => return,
            }
        }
        self.pending.clear();
        self.frames.clear();
    }

    /// Waits for the next frame and hands its response to `f`.
    fn recv<T>(&mut self, f: impl FnOnce(Response<'_>) -> Result<T>) -> Result<T> {
        let deadline = Instant::now() + self.timeout;
        let mut byte_at = 0;
        loop {
            while byte_at < self.pending.len() {
                let b = self.pending[byte_at];
                byte_at += 1;
                match self.frames.push(b) {
                    Feed::Pending => {}
                    Feed::Oversized => bail!("the board sent a frame longer than {MAX_FRAME} bytes"),
                    Feed::Frame(fr) => {
                        let msg = frame::decode::<Response<'_>>(fr)
                            .map_err(|e| anyhow::anyhow!("the board sent a damaged frame ({e:?})"))?;
                        let out = f(msg);
                        self.pending.drain(..byte_at);
                        return out;
                    }
                }
            }
            self.pending.clear();
            byte_at = 0;
            if Instant::now() > deadline {
                bail!("no reply from the board within {:.1} s (--timeout)", self.timeout.as_secs_f32());
            }
            let mut buf = [0u8; 4096];
            match self.stream.read(&mut buf) {
                Ok(0) => bail!("the board closed the link"),
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), IoKind::TimedOut | IoKind::WouldBlock | IoKind::Interrupted) => {}
                Err(e) => return Err(e).context("cannot read from the board"),
            }
        }
    }
}

/// A device error reply as one line.
fn device_error(kind: ErrorKind, detail: u32) -> anyhow::Error {
    let what = match kind {
        ErrorKind::Frame => format!("the board received a damaged frame (detail {detail})"),
        ErrorKind::Oversized => format!("the board refused a frame longer than {detail} bytes"),
        ErrorKind::Decode => "the board did not understand the request (firmware too old or too new?)".into(),
        ErrorKind::Version => format!("the board speaks link version {detail}, this microlm speaks {VERSION}"),
        ErrorKind::NoModel => "the board has no model: upload one with `microlm device ... upload FILE`".into(),
        ErrorKind::BadSettings => {
            let names = ["prompt length", "steps", "temperature", "top-p", "top-k", "min-p", "seed", "ctx"];
            format!("the board refused the {} setting", names.get(detail as usize).unwrap_or(&"generation"))
        }
        ErrorKind::PromptTooLong => format!("the prompt is too long for the board (limit {detail} tokens)"),
        ErrorKind::ArenaTooSmall => {
            format!("the board cannot allocate the {detail}-byte arena: use a smaller --ctx or --kv i8")
        }
        ErrorKind::Model => "the board's model failed a check during generation".into(),
        ErrorKind::UploadState => "the board is busy (an upload or a generation is in progress)".into(),
        ErrorKind::UploadTooLarge => format!("the model does not fit the board's slot of {detail} bytes"),
        ErrorKind::UploadOffset => format!("the board expected the upload to go on at byte {detail}"),
        ErrorKind::UploadIncomplete => format!("the board received only {detail} bytes of the upload"),
        ErrorKind::UploadCrc => format!("the upload arrived damaged (CRC-32 {detail:08x})"),
        ErrorKind::UploadModel => "the board refused the uploaded file: not a model its runtime can run".into(),
        ErrorKind::Flash => "the board's flash driver failed".into(),
    };
    anyhow::anyhow!("{what}")
}

/// Owned parts of an Info reply.
#[derive(Debug, serde::Serialize)]
struct InfoOut {
    version: u16,
    firmware: String,
    runtime: String,
    board: String,
    flash_bytes: u32,
    ram_bytes: u32,
    slot_bytes: u32,
    arena_free_bytes: u32,
    model: Option<ModelOut>,
}

#[derive(Debug, serde::Serialize)]
struct ModelOut {
    name: String,
    file_bytes: u32,
    crc: String,
    dim: u32,
    n_layers: u32,
    vocab_size: u32,
    seq_len: u32,
    slot: String,
}

fn info_out(i: &Info<'_>) -> InfoOut {
    InfoOut {
        version: i.version,
        firmware: i.firmware.into(),
        runtime: i.runtime.into(),
        board: i.board.into(),
        flash_bytes: i.flash_bytes,
        ram_bytes: i.ram_bytes,
        slot_bytes: i.slot_bytes,
        arena_free_bytes: i.arena_free_bytes,
        model: i.model.map(|m| ModelOut {
            name: m.name.into(),
            file_bytes: m.file_bytes,
            crc: format!("{:08x}", m.crc),
            dim: m.dim,
            n_layers: m.n_layers,
            vocab_size: m.vocab_size,
            seq_len: m.seq_len,
            slot: match m.slot {
                0 => "A".into(),
                1 => "B".into(),
                _ => "built-in".into(),
            },
        }),
    }
}

fn print_info(i: &InfoOut) {
    println!("board       {} ({} KiB flash, {} KiB RAM)", i.board, i.flash_bytes / 1024, i.ram_bytes / 1024);
    println!("firmware    {} (runtime {}, link version {})", i.firmware, i.runtime, i.version);
    println!(
        "uploads     {}",
        if i.slot_bytes == 0 { "no".into() } else { format!("slots of {} bytes", i.slot_bytes) }
    );
    println!("arena       {} bytes free", i.arena_free_bytes);
    match &i.model {
        Some(m) => println!(
            "model       {} ({} bytes, crc32 {}, slot {}): dim {} layers {} vocab {} seq_len {}",
            m.name, m.file_bytes, m.crc, m.slot, m.dim, m.n_layers, m.vocab_size, m.seq_len
        ),
        None => println!("model       none"),
    }
}

/// Hello → Info. A lone `0x00` first ends any partial frame the board holds
/// (line noise, a cable plugged in mid-frame); a reply saying the board got a
/// damaged frame (bytes lost while it was resetting, say) gets one more Hello.
fn hello(link: &mut Link) -> Result<InfoOut> {
    let mut damaged = 0;
    link.stream.write_all(&[0]).context("cannot write to the board")?;
    link.drain();
    loop {
        link.send(&Request::Hello { version: VERSION })?;
        let reply = link.recv(|r| match r {
            Response::Info(i) => Ok(Some(info_out(&i))),
            Response::Error { kind: ErrorKind::Frame | ErrorKind::Oversized | ErrorKind::Decode, .. } => Ok(None),
            Response::Error { kind, detail } => Err(device_error(kind, detail)),
            other => bail!("the board answered Hello with {other:?}"),
        })?;
        match reply {
            Some(info) => return Ok(info),
            None if damaged < 2 => damaged += 1,
            None => bail!("the board received only damaged frames: check the port, the baud rate and the cable"),
        }
    }
}

pub fn run(args: &DeviceArgs) -> Result<()> {
    // Settings are checked before the link is opened.
    if let DeviceCommand::Generate(s) = &args.command {
        anyhow::ensure!(s.window.is_none(), "--window is not available over the link");
        anyhow::ensure!(
            s.prompt.len() <= MAX_PROMPT,
            "the prompt is {} bytes; the link takes at most {MAX_PROMPT}",
            s.prompt.len()
        );
    }
    let file = match &args.command {
        DeviceCommand::Upload { file } => {
            let bytes = io::read(file, io::MODEL)?;
            microlm_cli::load::ModelFile::from_bytes(&bytes)
                .parse(false)
                .with_context(|| format!("{} is not a model file", file.display()))?;
            Some(bytes)
        }
        _ => None,
    };
    let mut link = Link::open(args)?;
    let info = hello(&mut link)?;
    match &args.command {
        DeviceCommand::Info => {
            if args.json {
                println!("{}", serde_json::to_string(&info)?);
            } else {
                print_info(&info);
            }
            Ok(())
        }
        DeviceCommand::Generate(s) => generate(&mut link, s, args.json),
        DeviceCommand::Upload { file: path } => {
            upload(&mut link, path, file.as_deref().unwrap_or_default(), &info, args.json)
        }
    }
}

fn kv_of(kv: Option<KvDtype>) -> Kv {
    match kv.unwrap_or(KvDtype::I8) {
        KvDtype::F32 => Kv::F32,
        KvDtype::F16 => Kv::F16,
        KvDtype::I8 => Kv::I8,
    }
}

fn stop_name(stop: StopReason) -> &'static str {
    match stop {
        StopReason::Steps => "steps",
        StopReason::Bos => "bos",
        StopReason::Eos => "eos",
        StopReason::ContextFull => "context_full",
        StopReason::Cancelled => "cancelled",
    }
}

#[derive(Debug, serde::Serialize)]
struct GenerateOut {
    ids: Vec<u32>,
    text: String,
    prompt_tokens: u32,
    generated_tokens: u32,
    stop: &'static str,
    instructions_per_token: u64,
    arena_bytes: u32,
    stack_peak_bytes: u32,
    time_to_first_token_s: f64,
    tokens_per_s: f64,
}

fn generate(link: &mut Link, s: &SamplingArgs, json: bool) -> Result<()> {
    let seed = match s.seed {
        Some(seed) if seed != 0 => seed,
        _ => std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_secs().max(1)),
    };
    let p = GenerateParams {
        prompt: s.prompt.as_bytes(),
        steps: u32::try_from(s.steps).context("--steps is too large")?,
        temperature: s.temperature,
        top_p: s.top_p,
        top_k: u32::try_from(s.top_k).context("--top-k is too large")?,
        min_p: s.min_p,
        seed,
        ctx: u32::try_from(s.ctx.unwrap_or(0)).context("--ctx is too large")?,
        kv: kv_of(s.kv),
    };
    let start = Instant::now();
    link.send(&Request::Generate(p))?;
    // Ctrl-C asks the board to stop after the current token.
    let stop_asked = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop_asked.clone();
    let _ = ctrlc::set_handler(move || flag.store(true, std::sync::atomic::Ordering::SeqCst));
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let (mut ids, mut text, mut utf8) = (Vec::new(), String::new(), Utf8Stream::new());
    let mut first_token = None;
    let mut cancel_sent = false;
    let done: Done = loop {
        if stop_asked.load(std::sync::atomic::Ordering::SeqCst) && !cancel_sent {
            link.send(&Request::Cancel)?;
            cancel_sent = true;
        }
        let step = link.recv(|r| match r {
            Response::Token { id, text: bytes } => Ok(Err((id, bytes.to_vec()))),
            Response::Done(d) => Ok(Ok(d)),
            Response::Error { kind, detail } => Err(device_error(kind, detail)),
            other => bail!("the board sent {other:?} during a generation"),
        })?;
        match step {
            Ok(done) => break done,
            Err((id, bytes)) => {
                first_token.get_or_insert_with(|| start.elapsed());
                ids.push(id);
                let before = text.len();
                utf8.push(&bytes, |piece| text.push_str(piece));
                out.write_all(&text.as_bytes()[before..])?;
                out.flush()?;
            }
        }
    };
    let before = text.len();
    utf8.finish(|piece| text.push_str(piece));
    out.write_all(&text.as_bytes()[before..])?;
    writeln!(out)?;
    let elapsed = start.elapsed().as_secs_f64();
    let ttft = first_token.map_or(0.0, |d| d.as_secs_f64());
    let tokens_per_s = if elapsed > 0.0 { ids.len() as f64 / elapsed } else { 0.0 };
    eprintln!(
        "stopped: {} after {} tokens ({} prompt); {} instructions/token, arena {} bytes, stack peak {} bytes",
        stop_name(done.stop),
        done.tokens,
        done.prompt_tokens,
        done.instructions_per_token,
        done.arena_bytes,
        done.stack_peak_bytes
    );
    eprintln!("time to first token {ttft:.3} s, {tokens_per_s:.1} tok/s over the link");
    if json {
        let o = GenerateOut {
            ids,
            text,
            prompt_tokens: done.prompt_tokens,
            generated_tokens: done.tokens,
            stop: stop_name(done.stop),
            instructions_per_token: done.instructions_per_token,
            arena_bytes: done.arena_bytes,
            stack_peak_bytes: done.stack_peak_bytes,
            time_to_first_token_s: ttft,
            tokens_per_s,
        };
        writeln!(out, "{}", serde_json::to_string(&o)?)?;
    }
    Ok(())
}

fn progress_reply(r: Response<'_>) -> Result<u32> {
    match r {
        Response::UploadProgress { received, .. } => Ok(received),
        Response::Error { kind, detail } => Err(device_error(kind, detail)),
        other => bail!("the board answered an upload request with {other:?}"),
    }
}

fn upload(link: &mut Link, path: &std::path::Path, file: &[u8], info: &InfoOut, json: bool) -> Result<()> {
    anyhow::ensure!(info.slot_bytes > 0, "the board {} takes no uploads (its model is built in)", info.board);
    anyhow::ensure!(
        file.len() <= info.slot_bytes as usize,
        "{} is {} bytes; the board's slots hold {} bytes",
        path.display(),
        file.len(),
        info.slot_bytes
    );
    let len = u32::try_from(file.len())?;
    let start = Instant::now();
    link.send(&Request::UploadBegin { len, crc: file_crc(file) })?;
    link.recv(progress_reply)?;
    let bar = ProgressBar::new(len.into());
    bar.set_style(
        ProgressStyle::with_template("uploading [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    if json {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    for (i, piece) in file.chunks(MAX_CHUNK).enumerate() {
        link.send(&Request::UploadChunk { offset: (i * MAX_CHUNK) as u32, bytes: piece })?;
        let received = link.recv(progress_reply)?;
        bar.set_position(received.into());
    }
    bar.finish_and_clear();
    link.send(&Request::UploadCommit)?;
    let after = link.recv(|r| match r {
        Response::Info(i) => Ok(info_out(&i)),
        Response::Error { kind, detail } => Err(device_error(kind, detail)),
        other => bail!("the board answered the commit with {other:?}"),
    })?;
    let secs = start.elapsed().as_secs_f64();
    let m = after.model.as_ref().context("the board committed the upload but serves no model")?;
    eprintln!(
        "uploaded {} ({} bytes) to slot {} in {secs:.2} s ({:.1} KiB/s); the board now serves {}",
        path.display(),
        len,
        m.slot,
        f64::from(len) / 1024.0 / secs.max(1e-9),
        m.name
    );
    if json {
        #[derive(serde::Serialize)]
        struct UploadOut<'a> {
            bytes: u32,
            seconds: f64,
            kib_per_s: f64,
            info: &'a InfoOut,
        }
        let o =
            UploadOut { bytes: len, seconds: secs, kib_per_s: f64::from(len) / 1024.0 / secs.max(1e-9), info: &after };
        println!("{}", serde_json::to_string(&o)?);
    }
    Ok(())
}

/// Uploads `model` to the board on `socket` and generates with `sampling`
/// (`microlm qemu --link`); prints what `microlm device ... generate` prints.
pub fn upload_and_generate(
    socket: &std::path::Path,
    model: &std::path::Path,
    sampling: &SamplingArgs,
    json: bool,
    timeout_s: f32,
) -> Result<()> {
    anyhow::ensure!(sampling.window.is_none(), "--window is not available over the link");
    let bytes = io::read(model, io::MODEL)?;
    microlm_cli::load::ModelFile::from_bytes(&bytes)
        .parse(false)
        .with_context(|| format!("{} is not a model file", model.display()))?;
    let mut link = Link::socket(socket, Duration::from_secs_f32(timeout_s.max(0.001)))?;
    let info = hello(&mut link)?;
    upload(&mut link, model, &bytes, &info, false)?;
    generate(&mut link, sampling, json)
}
