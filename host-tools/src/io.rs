//! Every file the CLI reads or writes goes through here.
//!
//! Reading: an input must be a regular file (symlinks to one are fine) and is
//! read up to its kind's [`Limit`], so a device, a FIFO or a runaway file is
//! refused with one line instead of growing until the machine runs out of memory.
//!
//! Writing: an [`Output`] is never one of the command's inputs (same device and
//! inode, whatever the names), goes to a temporary file unique to this process
//! in the target's directory, and is renamed over the target only once complete,
//! so a reader or a concurrent run never sees a partial file and a failed or
//! interrupted run (Ctrl-C, SIGTERM) leaves nothing behind and exits with 128 +
//! the signal's number (130, 143). Writing through a symlink replaces its target
//! and keeps the symlink; devices and pipes (e.g. `-o /dev/null`) are written in
//! place. `-` is standard output, and so is any path that leads to it through a
//! process's file-descriptor links (`/dev/stdout`, `/dev/fd/1`, `/proc/self/fd/1`),
//! whether it is a pipe, a terminal or a regular file: the bytes are written to the
//! open descriptor, at its offset, as `>` or `>>` opened it.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, Once};

use anyhow::{bail, Context, Result};

/// The largest input of one kind the CLI reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit {
    /// What the file is, as the error names it.
    pub what: &'static str,
    /// Bytes at most.
    pub max: u64,
}

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

/// `.mlm` model files.
pub const MODEL: Limit = Limit { what: "model file", max: 4 * GIB };
/// llama2.c checkpoints.
pub const CHECKPOINT: Limit = Limit { what: "checkpoint", max: 4 * GIB };
/// llama2.c `tokenizer.bin` files.
pub const TOKENIZER: Limit = Limit { what: "tokenizer", max: 64 * MIB };
/// Evaluation and calibration text.
pub const TEXT: Limit = Limit { what: "text file", max: 256 * MIB };

impl Limit {
    /// A human-readable size: "4 GiB", "64 MiB", or bytes.
    fn size(&self) -> String {
        match self.max {
            m if m % GIB == 0 => format!("{} GiB", m / GIB),
            m if m % MIB == 0 => format!("{} MiB", m / MIB),
            m => format!("{m} bytes"),
        }
    }
}

/// Opens `path` for reading after checking that it is a regular file of at most
/// `limit.max` bytes; returns the file and its length in bytes at opening.
///
/// The path is checked before it is opened (opening a FIFO would block) and the
/// opened file again (the path may have been replaced in between).
pub fn open(path: &Path, limit: Limit) -> Result<(File, u64)> {
    let what = limit.what;
    let meta = fs::metadata(path).with_context(|| format!("cannot read {what} {}", path.display()))?;
    if !meta.is_file() {
        bail!("{} is not a regular file (the {what} must be one)", path.display());
    }
    if meta.len() > limit.max {
        return Err(too_big(path, limit));
    }
    let file = File::open(path).with_context(|| format!("cannot read {what} {}", path.display()))?;
    let meta = file.metadata().with_context(|| format!("cannot read {what} {}", path.display()))?;
    if !meta.is_file() {
        bail!("{} is not a regular file (the {what} must be one)", path.display());
    }
    if meta.len() > limit.max {
        return Err(too_big(path, limit));
    }
    Ok((file, meta.len()))
}

/// The error for a file over its kind's limit.
pub(crate) fn too_big(path: &Path, limit: Limit) -> anyhow::Error {
    anyhow::anyhow!(
        "{} is larger than the {} limit of {} ({} bytes)",
        path.display(),
        limit.what,
        limit.size(),
        limit.max
    )
}

/// Reads the whole of `path`, a regular file of at most `limit.max` bytes.
pub fn read(path: &Path, limit: Limit) -> Result<Vec<u8>> {
    let (file, len) = open(path, limit)?;
    read_open(path, file, len, limit)
}

/// Reads an already [`open`]ed file to its end (at most `limit.max` bytes).
pub(crate) fn read_open(path: &Path, file: File, len: u64, limit: Limit) -> Result<Vec<u8>> {
    // The size may change while reading: never take more than the limit and one byte.
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(limit.max + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {} {}", limit.what, path.display()))?;
    if bytes.len() as u64 > limit.max {
        return Err(too_big(path, limit));
    }
    Ok(bytes)
}

/// Reads `path` as UTF-8 text (see [`read`]).
pub fn read_text(path: &Path, limit: Limit) -> Result<String> {
    let bytes = read(path, limit)?;
    String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "{} is not UTF-8 text (invalid byte at offset {})",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })
}

/// Temporary files to remove if the process is interrupted.
static PENDING: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
static HANDLER: Once = Once::new();

/// The exit code of a process ended by signal `signal`, as a shell reports it: 128 + its number.
pub fn signal_exit_code(signal: i32) -> i32 {
    128 + signal
}

/// Installs (once) the SIGINT/SIGTERM/SIGHUP handler that removes pending
/// temporary files and exits with 128 + the signal's number (130, 143, 129).
fn install_interrupt_handler() {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    HANDLER.call_once(|| {
        let mut signals = match signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) {
            Ok(signals) => signals,
            Err(e) => {
                eprintln!(
                    "warning: cannot install the interrupt handler ({e}); an interrupted write may leave a temporary file"
                );
                return;
            }
        };
        // The handler only records the signal; this thread does the rest outside the signal context.
        std::thread::spawn(move || {
            if let Some(signal) = signals.forever().next() {
                let pending = PENDING.lock().unwrap_or_else(|e| e.into_inner());
                for path in pending.iter() {
                    let _ = fs::remove_file(path);
                }
                let name = match signal {
                    SIGINT => "SIGINT",
                    SIGTERM => "SIGTERM",
                    _ => "SIGHUP",
                };
                eprintln!("error: interrupted by {name}; nothing was written");
                std::process::exit(signal_exit_code(signal));
            }
        });
    });
}

fn pending(path: &Path, add: bool) {
    let mut list = PENDING.lock().unwrap_or_else(|e| e.into_inner());
    if add {
        list.push(path.to_path_buf());
    } else {
        list.retain(|p| p != path);
    }
}

/// Fails if `output` is the same file as one of `inputs` (device and inode, so
/// symlinks and hard links are seen through).
pub fn ensure_not_an_input(output: &Path, inputs: &[&Path]) -> Result<()> {
    let Ok(out) = fs::metadata(output) else { return Ok(()) };
    ensure_not_the_file(&output.display().to_string(), &out, inputs)
}

/// Fails if the file `out` (shown as `shown`) is one of `inputs`.
fn ensure_not_the_file(shown: &str, out: &fs::Metadata, inputs: &[&Path]) -> Result<()> {
    for input in inputs {
        if let Ok(inp) = fs::metadata(input) {
            if inp.dev() == out.dev() && inp.ino() == out.ino() {
                bail!("output {shown} is the input {} (the same file): choose another output", input.display());
            }
        }
    }
    Ok(())
}

/// `-o -`: the command's standard output.
pub const STDOUT: &str = "-";

/// An output path for messages: `stdout` for `-`, else the path as given.
pub fn display(path: &Path) -> String {
    if path == Path::new(STDOUT) {
        "stdout".to_string()
    } else {
        path.display().to_string()
    }
}

/// The file this process's standard output is open on, if it is open.
fn stdout_file() -> Option<fs::Metadata> {
    let fd = std::io::stdout().as_fd().try_clone_to_owned().ok()?;
    File::from(fd).metadata().ok()
}

/// True for a symlink in /proc: a process's open file (`/proc/self/fd/1`, or
/// `/dev/fd/63` for bash's `>(...)`), whose target may be no path at all
/// (`pipe:[1234]`); opening the link opens the file the descriptor holds.
fn is_descriptor_link(path: &Path) -> bool {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    fs::canonicalize(dir).is_ok_and(|d| d.starts_with("/proc"))
}

/// What an output path names.
enum Resolved {
    /// `-`: standard output.
    Stdout,
    /// A link to an open file descriptor (see [`is_descriptor_link`]): written through the link itself.
    Descriptor(PathBuf),
    /// A path: a symlink's final target (which need not exist yet), else the path.
    Path(PathBuf),
}

/// The file a path names, following symlinks, but not past a descriptor link.
fn resolve(path: &Path) -> Result<Resolved> {
    if path == Path::new(STDOUT) {
        return Ok(Resolved::Stdout);
    }
    let mut path = path.to_path_buf();
    for _ in 0..40 {
        match fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() => {
                if is_descriptor_link(&path) {
                    return Ok(Resolved::Descriptor(path));
                }
                let target = fs::read_link(&path).with_context(|| format!("cannot read symlink {}", path.display()))?;
                path = match path.parent() {
                    Some(dir) => dir.join(target),
                    None => target,
                };
            }
            _ => return Ok(Resolved::Path(path)),
        }
    }
    bail!("{}: too many levels of symbolic links", path.display())
}

/// True if `path` names this process's standard output: `-`, or a descriptor
/// link to it (`/dev/stdout`, `/dev/fd/1`, `/proc/self/fd/1`).
pub fn names_stdout(path: &Path) -> bool {
    match resolve(path) {
        Ok(Resolved::Stdout) => true,
        Ok(Resolved::Descriptor(link)) => fs::metadata(link)
            .ok()
            .zip(stdout_file())
            .is_some_and(|(m, out)| m.dev() == out.dev() && m.ino() == out.ino()),
        _ => false,
    }
}

/// An output file being prepared: create it before the work (so a bad output is
/// reported before minutes of conversion), then [`Output::commit`] the bytes.
/// Dropping it uncommitted (an error, a panic) removes the temporary file.
#[derive(Debug)]
pub struct Output {
    /// The path as given (for messages).
    path: PathBuf,
    /// The file that will hold the bytes (a symlink's target).
    target: PathBuf,
    /// How the bytes get there.
    sink: Sink,
}

/// How an [`Output`]'s bytes are written.
#[derive(Debug)]
enum Sink {
    /// A regular file: a temporary file renamed over the target at commit.
    Temp(tempfile::NamedTempFile),
    /// A device or a pipe, opened and written in place at commit.
    InPlace,
    /// Standard output, written as it is open.
    Stdout,
}

impl Output {
    /// Checks `path` against `inputs` and opens a unique temporary file beside its target.
    pub fn create(path: &Path, inputs: &[&Path]) -> Result<Output> {
        let stdout = || Output { path: path.to_path_buf(), target: path.to_path_buf(), sink: Sink::Stdout };
        let target = match resolve(path)? {
            Resolved::Stdout => {
                if let Some(out) = stdout_file() {
                    ensure_not_the_file(&format!("{} (stdout)", path.display()), &out, inputs)?;
                }
                return Ok(stdout());
            }
            Resolved::Descriptor(link) => {
                let meta = fs::metadata(&link).with_context(|| format!("cannot write {}", path.display()))?;
                ensure_not_the_file(&path.display().to_string(), &meta, inputs)?;
                if stdout_file().is_some_and(|out| out.dev() == meta.dev() && out.ino() == meta.ino()) {
                    return Ok(stdout());
                }
                if meta.is_dir() {
                    bail!("output {} is a directory", path.display());
                }
                if meta.is_file() {
                    // Another descriptor on a regular file: reopening it would lose its offset and mode.
                    bail!(
                        "output {} is a file descriptor open on a regular file: name the file itself, or use -o - \
                         for stdout",
                        path.display()
                    );
                }
                // A pipe or a terminal (`>(...)`, /dev/stderr): written in place through the link.
                return Ok(Output { path: path.to_path_buf(), target: link, sink: Sink::InPlace });
            }
            Resolved::Path(target) => target,
        };
        ensure_not_an_input(path, inputs)?;
        if fs::metadata(&target).is_ok_and(|m| m.is_dir()) {
            bail!("output {} is a directory", path.display());
        }
        if fs::metadata(&target).is_ok_and(|m| !m.is_file()) {
            // A device or pipe (e.g. `-o /dev/null`) is written in place; renaming over it would replace it.
            return Ok(Output { path: path.to_path_buf(), target, sink: Sink::InPlace });
        }
        let dir = match target.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        install_interrupt_handler();
        let prefix = format!(".{name}.");
        let mut builder = tempfile::Builder::new();
        builder.prefix(&prefix).suffix(".partial");
        // Permissions as a new file gets them (the umask applies), not the 0600 of a temporary file.
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&target).map_or(0o666, |m| m.permissions().mode() & 0o7777);
        builder.permissions(fs::Permissions::from_mode(mode));
        // tempfile's error names its random temporary file; say why without it (the
        // directory's own error when it is missing, else the kind).
        let temp = builder.tempfile_in(&dir).map_err(|e| {
            let why = std::fs::metadata(&dir).err().unwrap_or_else(|| e.kind().into());
            anyhow::anyhow!("cannot create a file in {}: {why}", dir.display())
        })?;
        pending(temp.path(), true);
        Ok(Output { path: path.to_path_buf(), target, sink: Sink::Temp(temp) })
    }

    /// True when the bytes go to standard output (`-`, `/dev/stdout`).
    pub fn is_stdout(&self) -> bool {
        matches!(self.sink, Sink::Stdout)
    }

    /// Writes `bytes` and moves them into place atomically.
    pub fn commit(mut self, bytes: &[u8]) -> Result<()> {
        let shown = display(&self.path);
        let mut temp = match std::mem::replace(&mut self.sink, Sink::InPlace) {
            Sink::Temp(temp) => temp,
            Sink::InPlace => {
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .open(&self.target)
                    .with_context(|| format!("cannot write {shown}"))?;
                return f.write_all(bytes).with_context(|| format!("cannot write {shown}"));
            }
            Sink::Stdout => {
                // A reader that closed the pipe gives BrokenPipe, which `main` ends quietly.
                let mut out = std::io::stdout().lock();
                return out
                    .write_all(bytes)
                    .and_then(|()| out.flush())
                    .with_context(|| format!("cannot write {shown}"));
            }
        };
        let temp_path = temp.path().to_path_buf();
        let written = temp.write_all(bytes).and_then(|()| temp.as_file().sync_all());
        let result = match written {
            Ok(()) => temp.persist(&self.target).map(drop).map_err(|e| e.error),
            Err(e) => Err(e),
        };
        pending(&temp_path, false);
        result.with_context(|| format!("cannot write {shown}"))
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        if let Sink::Temp(temp) = &self.sink {
            pending(temp.path(), false);
            // NamedTempFile removes the file when dropped.
        }
    }
}

/// Writes `bytes` to `path` as [`Output`] does, in one call.
pub fn write(path: &Path, bytes: &[u8], inputs: &[&Path]) -> Result<()> {
    Output::create(path, inputs)?.commit(bytes)
}
