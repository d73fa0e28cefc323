//! A link firmware under QEMU for the tests: building it, booting it with its
//! link UART on a Unix socket (QEMU `-chardev socket`), and speaking the link
//! frame by frame with owned replies and a read timeout, so a silent board
//! fails the test instead of hanging it.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use microlm_link::frame::{self, Feed, Frames};
use microlm_link::{file_crc, ErrorKind, Request, Response, StopReason, CRC, MAX_CHUNK, MAX_FRAME};

use crate::{build_firmware, scratch_dir};

/// The mps2-an386 link firmware (`--features link`).
pub fn an386_firmware() -> PathBuf {
    build_firmware("qemu-mps2-an386", Some("microlm-qemu-mps2-an386-link"), &["--features", "link"], &[])
}

/// The STM32F405 link firmware for QEMU netduinoplus2 (`--no-default-features
/// --features qemu,link`) with `model` embedded.
pub fn f405_qemu_firmware(model: &Path) -> PathBuf {
    let args = ["--no-default-features", "--features", "qemu,link"];
    build_firmware("stm32f405", Some("microlm-stm32f405-link"), &args, &[("MICROLM_MODEL", model)])
}

/// QEMU running a link firmware, killed on drop.
#[derive(Debug)]
pub struct Board {
    qemu: Child,
    /// The Unix socket of the board's link UART.
    pub socket: PathBuf,
}

impl Drop for Board {
    fn drop(&mut self) {
        let _ = self.qemu.kill();
        let _ = self.qemu.wait();
    }
}

impl Board {
    /// Boots `elf` on QEMU `machine` (`qemu-system-arm -M machine`), its first
    /// serial port on a fresh socket named `name` under the scratch dir, with
    /// semihosting and `-icount shift=0`. Waits until QEMU made the socket.
    pub fn boot(machine: &str, elf: &Path, name: &str) -> Board {
        let socket = scratch_dir("qemu-link").join(format!("{name}.sock"));
        let _ = std::fs::remove_file(&socket);
        let qemu = Command::new("qemu-system-arm")
            .args(["-M", machine, "-nographic", "-monitor", "none"])
            .arg("-chardev")
            .arg(format!("socket,id=link,path={},server=on,wait=on", socket.display()))
            .args(["-serial", "chardev:link", "-semihosting-config", "enable=on,target=native", "-icount", "shift=0"])
            .arg("-kernel")
            .arg(elf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("qemu-system-arm");
        let start = Instant::now();
        while !socket.exists() {
            assert!(start.elapsed() < Duration::from_secs(30), "QEMU made no socket");
            std::thread::sleep(Duration::from_millis(10));
        }
        Board { qemu, socket }
    }
}

/// A reply, owned.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// `Info`: the active model's CRC and slot, if any.
    Info {
        /// (CRC-32, slot) of the active model.
        model: Option<(u32, u8)>,
    },
    /// One token.
    Token {
        /// Its id.
        id: u32,
    },
    /// The end of a generation.
    Done {
        /// Why it ended.
        stop: StopReason,
        /// Tokens generated.
        tokens: u32,
    },
    /// `Error { kind, detail }`.
    Error {
        /// What went wrong.
        kind: ErrorKind,
        /// The detail number.
        detail: u32,
    },
    /// Upload progress.
    Progress {
        /// Bytes received.
        received: u32,
    },
}

impl Reply {
    fn of(r: Response<'_>) -> Reply {
        match r {
            Response::Info(i) => Reply::Info { model: i.model.map(|m| (m.crc, m.slot)) },
            Response::Token { id, .. } => Reply::Token { id },
            Response::Done(d) => Reply::Done { stop: d.stop, tokens: d.tokens },
            Response::Error { kind, detail } => Reply::Error { kind, detail },
            Response::UploadProgress { received, .. } => Reply::Progress { received },
        }
    }
}

/// The link spoken directly, for what the CLI never does.
#[derive(Debug)]
pub struct Raw {
    s: UnixStream,
    frames: Frames<MAX_FRAME>,
}

/// The longest a test waits for one reply.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

impl Raw {
    /// Connects to the board's socket.
    pub fn connect(board: &Board) -> Raw {
        let s = UnixStream::connect(&board.socket).expect("connect to the board's socket");
        s.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
        Raw { s, frames: Frames::new() }
    }

    /// Sends one request as a frame.
    pub fn send(&mut self, req: &Request<'_>) {
        self.bytes(&encode(req));
    }

    /// Sends raw bytes.
    pub fn bytes(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).expect("write to the board");
    }

    /// The next reply; panics after [`REPLY_TIMEOUT`] without one, or on a
    /// frame from the board that does not decode.
    pub fn recv(&mut self) -> Reply {
        let mut b = [0u8; 256];
        loop {
            let n = match self.s.read(&mut b[..1]) {
                Ok(0) => panic!("the board closed the link"),
                Ok(n) => n,
                Err(e) => panic!("no reply from the board within {REPLY_TIMEOUT:?}: {e}"),
            };
            debug_assert_eq!(n, 1);
            match self.frames.push(b[0]) {
                Feed::Frame(f) => {
                    return Reply::of(frame::decode::<Response<'_>>(f).expect("a bad frame from the board"))
                }
                Feed::Oversized => panic!("an oversized frame from the board"),
                Feed::Pending => {}
            }
        }
    }

    /// Sends a request and returns its one reply.
    pub fn ask(&mut self, req: &Request<'_>) -> Reply {
        self.send(req);
        self.recv()
    }

    /// Ends any partial frame (a lone `0x00`), sends `Hello` and returns the
    /// replies that came before its `Info`, and that `Info`.
    pub fn sync(&mut self) -> (Vec<Reply>, Reply) {
        self.bytes(&[0]);
        self.send(&Request::Hello { version: microlm_link::VERSION });
        let mut before = Vec::new();
        loop {
            match self.recv() {
                info @ Reply::Info { .. } => return (before, info),
                other => before.push(other),
            }
        }
    }

    /// Uploads `file` (chunks of [`MAX_CHUNK`]) and commits it; returns the
    /// `Info` reply to the commit.
    pub fn upload(&mut self, file: &[u8]) -> Reply {
        let len = file.len() as u32;
        assert_eq!(self.ask(&Request::UploadBegin { len, crc: file_crc(file) }), Reply::Progress { received: 0 });
        for (i, piece) in file.chunks(MAX_CHUNK).enumerate() {
            let offset = (i * MAX_CHUNK) as u32;
            let got = self.ask(&Request::UploadChunk { offset, bytes: piece });
            assert_eq!(got, Reply::Progress { received: offset + piece.len() as u32 }, "chunk at {offset}");
        }
        self.ask(&Request::UploadCommit)
    }

    /// Reads the replies of a running generation up to its end: the token
    /// ids and the final `Done` or `Error`.
    pub fn finish_generation(&mut self) -> (Vec<u32>, Reply) {
        let mut ids = Vec::new();
        loop {
            match self.recv() {
                Reply::Token { id } => ids.push(id),
                end => return (ids, end),
            }
        }
    }
}

/// `msg` as one frame, delimiter included.
pub fn encode(msg: &Request<'_>) -> Vec<u8> {
    let mut buf = [0u8; MAX_FRAME];
    frame::encode(msg, &mut buf).expect("the request fits a frame").to_vec()
}

/// A frame around any `body` (not necessarily a request): COBS(body ‖ CRC-32 LE) ‖ 0x00.
pub fn frame_of_body(body: &[u8]) -> Vec<u8> {
    let mut raw = body.to_vec();
    raw.extend_from_slice(&CRC.checksum(body).to_le_bytes());
    let mut out = vec![0u8; cobs::max_encoding_length(raw.len())];
    let n = cobs::encode(&raw, &mut out);
    out.truncate(n);
    out.push(0);
    out
}
