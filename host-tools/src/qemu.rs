//! `microlm qemu`: run a model file on a board firmware in QEMU, streaming its text.
//!
//! The firmware (`boards/qemu-<machine>/`, `boards/stm32f405/`) reads the model from a fixed PSRAM
//! address, where QEMU's generic loader puts the file and a length word
//! (mps2-an386, mps2-an505, mps3-an547), or from its own flash, where the build embedded it
//! (lm3s6965evb, netduinoplus2, riscv32-virt), and its settings from the semihosting command line. It prints the
//! text, then one `stats: ... ids=...` line, or an `error: ...` line and exits 1: on semihosting
//! stdout, or on its first serial port (netduinoplus2's USART1, read here from a Unix socket),
//! with defmt log frames on semihosting stdout, decoded here into log lines on stderr.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use clap::Args;

use crate::generate::SamplingArgs;

/// A QEMU machine with a board crate.
#[derive(Debug)]
pub struct Machine {
    /// `--machine` name (QEMU's `-M` name for the Arm boards).
    pub name: &'static str,
    /// The QEMU system emulator that runs it.
    pub qemu: &'static str,
    /// QEMU's `-M` name and any other machine options (`-m`, `-bios`).
    pub qemu_machine: &'static [&'static str],
    /// The firmware ELF's architecture.
    pub arch: object::Architecture,
    /// Board crate directory, relative to the checkout.
    pub board_dir: &'static str,
    /// How the firmware gets the model file.
    pub model: Placement,
    /// Where the firmware prints its text and stats line.
    pub text: TextChannel,
    /// Extra `cargo build` arguments for QEMU (features).
    pub build_args: &'static [&'static str],
}

/// Where a board's firmware prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextChannel {
    /// Semihosting stdout (QEMU's stdout).
    Semihosting,
    /// The first serial port (`-serial` #0), served by QEMU on a Unix socket
    /// that this tool connects to before the guest starts (`wait=on`), so no
    /// byte is lost; semihosting stdout then carries defmt log frames.
    Serial,
}

/// How a board's firmware gets the model file.
#[derive(Debug)]
pub enum Placement {
    /// QEMU's generic loader writes the file's length as a 32-bit word and the
    /// file itself where the firmware's memory.x says, in RAM no section uses:
    /// the addresses are the firmware ELF's symbols (see [`LoadAddresses`]).
    Loaded,
    /// Embedded in the firmware's flash at build time (`MICROLM_MODEL`), with
    /// the arena a static sized by build.rs for `MICROLM_CTX` positions.
    Embedded {
        /// Flash bytes (firmware and model).
        flash_bytes: u64,
        /// SRAM bytes (data, arena and stack).
        ram_bytes: u64,
    },
}

/// The machines `microlm qemu` knows.
pub const MACHINES: &[Machine] = &[
    Machine {
        name: "mps2-an386",
        qemu: "qemu-system-arm",
        qemu_machine: &["-M", "mps2-an386"],
        arch: object::Architecture::Arm,
        board_dir: "boards/qemu-mps2-an386",
        model: Placement::Loaded,
        text: TextChannel::Semihosting,
        build_args: &[],
    },
    Machine {
        name: "mps2-an505",
        qemu: "qemu-system-arm",
        qemu_machine: &["-M", "mps2-an505"],
        arch: object::Architecture::Arm,
        board_dir: "boards/qemu-mps2-an505",
        model: Placement::Loaded,
        text: TextChannel::Semihosting,
        build_args: &[],
    },
    // Cortex-M55 with MVE (Helium): the firmware's runtime runs the MVE kernels.
    Machine {
        name: "mps3-an547",
        qemu: "qemu-system-arm",
        qemu_machine: &["-M", "mps3-an547"],
        arch: object::Architecture::Arm,
        board_dir: "boards/qemu-mps3-an547",
        model: Placement::Loaded,
        text: TextChannel::Semihosting,
        build_args: &[],
    },
    Machine {
        name: "lm3s6965evb",
        qemu: "qemu-system-arm",
        qemu_machine: &["-M", "lm3s6965evb"],
        arch: object::Architecture::Arm,
        board_dir: "boards/qemu-lm3s6965evb",
        model: Placement::Embedded { flash_bytes: 256 << 10, ram_bytes: 64 << 10 },
        text: TextChannel::Semihosting,
        build_args: &[],
    },
    // STM32F405RG: QEMU's netduinoplus2 maps 192 KiB at 0x20000000, the chip
    // (and the firmware's memory.x) 128 KiB.
    Machine {
        name: "netduinoplus2",
        qemu: "qemu-system-arm",
        qemu_machine: &["-M", "netduinoplus2"],
        arch: object::Architecture::Arm,
        board_dir: "boards/stm32f405",
        model: Placement::Embedded { flash_bytes: 1 << 20, ram_bytes: 128 << 10 },
        text: TextChannel::Serial,
        build_args: &["--no-default-features", "--features", "qemu"],
    },
    // RV32IMC (the ESP32-C3's instruction set) on QEMU's virt machine with no
    // firmware of its own: the ELF (with the model) is loaded to DRAM at
    // 0x80000000. The firmware links for the lower 14 MiB of `-m 16M`: QEMU
    // puts its device tree in the top 2 MiB.
    Machine {
        name: "riscv32-virt",
        qemu: "qemu-system-riscv32",
        qemu_machine: &["-M", "virt", "-m", "16M", "-bios", "none"],
        arch: object::Architecture::Riscv32,
        board_dir: "boards/qemu-riscv32-virt",
        model: Placement::Embedded { flash_bytes: 14 << 20, ram_bytes: 14 << 20 },
        text: TextChannel::Semihosting,
        build_args: &[],
    },
];

/// Where a firmware that loads its model wants it, from the symbols its
/// memory.x defines: `_model_len_word` (the file's length, a 32-bit word),
/// `_model_start` (the file) and `_model_end` (the end of the window for it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadAddresses {
    /// Address of the length word.
    pub len_addr: u64,
    /// Address of the file's first byte.
    pub model_addr: u64,
    /// Bytes available for the file at `model_addr`.
    pub model_max: u64,
}

/// The firmware ELF at `path`, parsed: it must be an ELF file for `arch`.
fn read_firmware<'d>(path: &Path, data: &'d [u8], arch: object::Architecture) -> Result<object::File<'d>> {
    use object::Object as _;
    let not = |why: &str| anyhow::anyhow!("{} is not a microlm board firmware ({why})", path.display());
    let file = object::File::parse(data).map_err(|_| not("not an ELF file"))?;
    ensure!(file.format() == object::BinaryFormat::Elf, not("not an ELF file"));
    let found = file.architecture();
    ensure!(found == arch, not(&format!("an ELF file for {found:?}, not {arch:?}")));
    Ok(file)
}

/// Checks that `path` is an ELF file for the machine's architecture (what QEMU's `-kernel` boots).
pub fn check_firmware(machine: &Machine, path: &Path) -> Result<()> {
    let data = std::fs::read(path).with_context(|| format!("cannot read firmware {}", path.display()))?;
    read_firmware(path, &data, machine.arch).map(|_| ())
}

/// The model load addresses of the firmware at `path` (for `machine`), from its ELF symbols.
pub fn load_addresses(machine: &Machine, path: &Path) -> Result<LoadAddresses> {
    use object::{Object as _, ObjectSymbol as _};
    let data = std::fs::read(path).with_context(|| format!("cannot read firmware {}", path.display()))?;
    let file = read_firmware(path, &data, machine.arch)?;
    let symbol = |name: &str| {
        file.symbols()
            .find(|s| s.name() == Ok(name))
            .map(|s| s.address())
            .with_context(|| format!("{} is not a microlm board firmware (no {name} symbol)", path.display()))
    };
    // _model_start first: it names what a firmware without a loaded model lacks.
    let model_addr = symbol("_model_start")?;
    let len_addr = symbol("_model_len_word")?;
    let end = symbol("_model_end")?;
    ensure!(
        end > model_addr && len_addr.checked_add(4).is_some_and(|e| e <= model_addr || len_addr >= end),
        "{}: its model window is inconsistent (_model_len_word {len_addr:#x}, _model_start {model_addr:#x}, \
         _model_end {end:#x})",
        path.display()
    );
    Ok(LoadAddresses { len_addr, model_addr, model_max: end - model_addr })
}

/// Arguments of `microlm qemu`.
#[derive(Debug, Args)]
pub struct QemuArgs {
    /// Model file (.mlm).
    pub model: PathBuf,
    /// QEMU machine to run on (firmware in boards/qemu-MACHINE).
    #[arg(long, default_value = "mps2-an386", value_parser = crate::values::machine())]
    pub machine: String,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Print one JSON object with ids, text and the firmware's figures as the last line.
    #[arg(long)]
    pub json: bool,
    /// Firmware ELF to run (default: build the machine's board crate with cargo).
    #[arg(long)]
    pub firmware: Option<PathBuf>,
    /// Kill QEMU after this many seconds (1 to 4294967295).
    #[arg(long, default_value_t = 600, allow_hyphen_values = true, value_parser = crate::values::timeout_secs)]
    pub timeout: u64,
    /// Run the machine's link firmware instead (no model built in): upload the model
    /// over its serial link, then generate through it, as `microlm device` does.
    #[arg(long)]
    pub link: bool,
}

/// The link firmware of a machine: (cargo features, binary name).
pub fn link_firmware(machine: &Machine) -> Option<(&'static str, &'static str)> {
    match machine.name {
        "mps2-an386" => Some(("link", "microlm-qemu-mps2-an386-link")),
        _ => None,
    }
}

/// Builds the machine's link firmware and returns the ELF path.
pub fn build_link_firmware(machine: &Machine) -> Result<PathBuf> {
    let (features, bin) = link_firmware(machine).with_context(|| {
        let with: Vec<_> = MACHINES.iter().filter(|m| link_firmware(m).is_some()).map(|m| m.name).collect();
        format!("machine {} has no link firmware (--link runs on: {})", machine.name, with.join(", "))
    })?;
    let dir = checkout().join(machine.board_dir);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(&dir)
        .args(["build", "--release", "--locked", "--message-format=json-render-diagnostics", "--features", features])
        .args(["--bin", bin])
        .args(microlm_cli::reproducible::cargo_args(&checkout()))
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run cargo to build {}", dir.display()))?;
    ensure!(out.status.success(), "building the link firmware in {} failed", dir.display());
    let stdout = String::from_utf8_lossy(&out.stdout);
    for line in stdout.lines().rev() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if let Some(exe) = msg.get("executable").and_then(|e| e.as_str()) {
            return Ok(PathBuf::from(exe));
        }
    }
    bail!("cargo built {} but named no executable", dir.display())
}

/// The QEMU command that boots a link firmware with its first serial port on
/// the Unix socket `socket` (QEMU waits for the first client before the guest runs).
pub fn link_command(machine: &Machine, firmware: &Path, socket: &Path) -> Command {
    let mut cmd = Command::new("qemu-system-arm");
    cmd.args(["-M", machine.name, "-nographic", "-monitor", "none"])
        .arg("-chardev")
        .arg(format!("socket,id=link,path={},server=on,wait=on", qemu_opt(&socket.to_string_lossy())))
        .args(["-serial", "chardev:link", "-semihosting-config", "enable=on,target=native", "-icount", "shift=0"])
        .arg("-kernel")
        .arg(firmware)
        .stdin(Stdio::null());
    cmd
}

/// `microlm qemu --link`: boot the link firmware, upload the model, generate over the link.
fn run_link(args: &QemuArgs, machine: &Machine) -> Result<()> {
    let firmware = match &args.firmware {
        Some(path) => {
            check_firmware(machine, path)?;
            path.clone()
        }
        None => build_link_firmware(machine)?,
    };
    let dir = tempfile::tempdir().context("cannot create a directory for QEMU's serial socket")?;
    let socket = dir.path().join("link.sock");
    let mut child = link_command(machine, &firmware, &socket)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start qemu-system-arm")?;
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let result = (|| {
        while !socket.exists() {
            if let Some(status) = child.try_wait()? {
                bail!("QEMU exited with {status} before its serial socket appeared");
            }
            ensure!(Instant::now() < deadline, "QEMU's serial socket did not appear within {} s", args.timeout);
            std::thread::sleep(Duration::from_millis(10));
        }
        crate::device::upload_and_generate(&socket, &args.model, &args.sampling, args.json, args.timeout as f32)
    })();
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// What the firmware reported for a successful run: `qemu --json`'s object,
/// with `generate --json`'s keys for the same things ([`crate::generate::Output`];
/// docs/CLI.md lists them) and the board's figures in place of the host's
/// throughput.
#[derive(Debug, serde::Serialize)]
pub struct Output {
    /// BOS followed by every next token, as `microlm generate --json` lists them.
    pub ids: Vec<u32>,
    /// The printed text.
    pub text: String,
    /// Prompt tokens, BOS included.
    pub prompt_tokens: usize,
    /// Tokens chosen by the sampler.
    pub generated_tokens: usize,
    /// Positions run (forward passes).
    pub positions: usize,
    /// Why generation ended: `steps`, `bos`, `eos` or `context_full`.
    pub stop: String,
    /// The same in words, as `generate` prints it (set by [`run`], which knows `-n`).
    pub stop_reason: String,
    /// Arena bytes the session used (`Model::plan`).
    pub arena_bytes: usize,
    /// Guest instructions per position, counted with SysTick under `-icount shift=0`.
    pub instructions_per_token: u64,
    /// Peak stack bytes, from the painted stack.
    pub stack_peak_bytes: usize,
}

/// Finds a machine by name.
pub fn machine(name: &str) -> Result<&'static Machine> {
    MACHINES.iter().find(|m| m.name == name).with_context(|| {
        let known = MACHINES.iter().map(|m| m.name).collect::<Vec<_>>().join(", ");
        format!("unknown machine '{name}' (known: {known})")
    })
}

/// The checkout this binary was built from (board crates live there).
fn checkout() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Builds the machine's firmware in release mode with `env` set and returns the ELF path.
pub fn build_firmware(machine: &Machine, env: &[(&str, std::ffi::OsString)]) -> Result<PathBuf> {
    let dir = checkout().join(machine.board_dir);
    ensure!(
        dir.join("Cargo.toml").is_file(),
        "board crate {} not found (this microlm was built outside its checkout): pass --firmware ELF",
        dir.display()
    );
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let embedded = matches!(machine.model, Placement::Embedded { .. });
    // The board has its own target and runner in its .cargo/config.toml, read from its directory.
    // The board's own firmware binary, `microlm-` + the crate directory's name: a board
    // crate may hold more binaries (mps3-an547's kernel tests), and cargo names each.
    let bin = format!("microlm-{}", Path::new(machine.board_dir).file_name().and_then(|n| n.to_str()).unwrap_or(""));
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&dir).args(["build", "--release", "--locked", "--message-format=json-render-diagnostics"]);
    cmd.args(["--bin", &bin]);
    cmd.args(microlm_cli::reproducible::cargo_args(&checkout()));
    cmd.args(machine.build_args);
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    // A board with the model in flash can fail to link for the model's sake:
    // keep cargo's messages to turn the linker's into one line.
    cmd.stderr(if embedded { Stdio::piped() } else { Stdio::inherit() });
    let out = cmd.output().with_context(|| format!("cannot run cargo to build {}", dir.display()))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        if let Some(msg) = link_error(machine, &stderr) {
            bail!("{msg}");
        }
        if embedded {
            eprint!("{stderr}");
        }
        bail!("building the firmware in {} failed", dir.display());
    }
    // cargo names the built ELF in its JSON messages, wherever the target directory is.
    let stdout = String::from_utf8_lossy(&out.stdout);
    for line in stdout.lines().rev() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if let Some(exe) = msg.get("executable").and_then(|e| e.as_str()) {
            return Ok(PathBuf::from(exe));
        }
    }
    bail!("cargo built {} but named no executable", dir.display())
}

/// Bytes by which the linker says `region` overflowed (`... will not fit in region 'FLASH': overflowed by N bytes`).
fn overflow(stderr: &str, region: &str) -> Option<u64> {
    let marker = format!("will not fit in region '{region}': overflowed by ");
    stderr.lines().find_map(|l| l.split_once(&marker)?.1.split_whitespace().next()?.parse().ok())
}

/// One line for a build that failed because the model or its arena does not
/// fit the board, or for a build script's own `error: ` line.
pub fn link_error(machine: &Machine, stderr: &str) -> Option<String> {
    let Placement::Embedded { flash_bytes, ram_bytes } = machine.model else { return None };
    if let Some(by) = overflow(stderr, "FLASH") {
        return Some(format!(
            "the model does not fit in {}'s {} KiB flash beside the firmware: overflowed by {by} bytes \
             (use a smaller or more quantized model)",
            machine.name,
            flash_bytes >> 10
        ));
    }
    if let Some(by) = overflow(stderr, "RAM") {
        return Some(format!(
            "the arena does not fit in {}'s {} KiB SRAM beside the stack: overflowed by {by} bytes (use a smaller --ctx)",
            machine.name,
            ram_bytes >> 10
        ));
    }
    // memory.x's ASSERT that the stack keeps its share of the SRAM (the stack is at the bottom, flip-link):
    // "microlm: the arena does not fit in the SRAM beside the N KiB kept for the stack".
    if let Some(rest) = stderr.split("microlm: the arena does not fit in the SRAM beside the ").nth(1) {
        let kept = rest.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
        return Some(format!(
            "the arena does not fit in {}'s {} KiB SRAM beside the stack ({kept} are kept for it; use a smaller --ctx)",
            machine.name,
            ram_bytes >> 10
        ));
    }
    // build.rs reports bad settings (MICROLM_CTX, an unreadable file) as one `error: ` line.
    stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("error: ").filter(|m| m.starts_with("MICROLM_")).map(String::from))
}

/// The context an embedded board's arena is built for: `--ctx`, else the
/// positions the run needs (`-n`, at most the model's `seq_len`; 0 = `seq_len`).
pub fn embedded_ctx(seq_len: usize, sampling: &SamplingArgs) -> usize {
    match (sampling.ctx, sampling.steps) {
        (Some(ctx), _) => ctx,
        (None, 0) => seq_len,
        (None, steps) => steps.min(seq_len),
    }
}

/// Quotes a value for the firmware's command-line parser (double quotes, backslash escapes).
pub fn quote(value: &str) -> String {
    let mut q = String::with_capacity(value.len() + 2);
    q.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            q.push('\\');
        }
        q.push(c);
    }
    q.push('"');
    q
}

/// Escapes a value inside a QEMU `-device`/`-semihosting-config` option (commas are doubled).
fn qemu_opt(value: &str) -> String {
    value.replace(',', ",,")
}

/// The firmware's command line words for these settings (`argv[0]` first).
pub fn firmware_args(s: &SamplingArgs) -> Vec<String> {
    let mut words = vec!["microlm".to_string(), "-p".into(), quote(&s.prompt), "-n".into(), s.steps.to_string()];
    // f32 Display prints the shortest text that parses back to the same value.
    words.extend(["-t".into(), s.temperature.to_string(), "--top-p".into(), s.top_p.to_string()]);
    words.extend(["--top-k".into(), s.top_k.to_string(), "--min-p".into(), s.min_p.to_string()]);
    if let Some(seed) = s.seed {
        words.extend(["-s".into(), seed.to_string()]);
    }
    if let Some(ctx) = s.ctx {
        words.extend(["--ctx".into(), ctx.to_string()]);
    }
    // Without --kv the firmware uses the dtype it was built for (MICROLM_KV, default f32).
    if let Some(kv) = s.kv {
        words.extend(["--kv".into(), kv.name().into()]);
    }
    if let Some(sinks) = s.window {
        words.extend(["--window".into(), sinks.to_string()]);
    }
    words
}

/// The QEMU command that boots `firmware` with `model` loaded and `words` as its command line.
/// With `model` (and its length) and the firmware's load addresses for a board
/// that loads it; an embedded board's firmware carries its own. `serial`: the
/// Unix socket QEMU serves the first serial port on (a [`TextChannel::Serial`]
/// board); QEMU waits for a client there before it starts the guest.
pub fn qemu_command(
    machine: &Machine,
    firmware: &Path,
    model: Option<(&Path, u64, LoadAddresses)>,
    words: &[String],
    serial: Option<&Path>,
) -> Command {
    let mut semihosting = String::from("enable=on,target=native");
    // One arg= per word keeps spaces inside the (quoted) prompt; -append would collapse them.
    for w in words {
        semihosting.push_str(",arg=");
        semihosting.push_str(&qemu_opt(w));
    }
    let mut cmd = Command::new(machine.qemu);
    cmd.args(machine.qemu_machine).args(["-nographic", "-monitor", "none"]);
    match serial {
        Some(socket) => cmd
            .arg("-chardev")
            .arg(format!("socket,id=usart,path={},server=on,wait=on", qemu_opt(&socket.to_string_lossy())))
            .args(["-serial", "chardev:usart"]),
        None => cmd.args(["-serial", "null"]),
    };
    cmd.args(["-semihosting-config", &semihosting])
        // 1 ns of virtual time per instruction: the firmware's SysTick (or minstret) counts instructions.
        .args(["-icount", "shift=0"]);
    if let Some((model, model_len, LoadAddresses { len_addr, model_addr, .. })) = model {
        cmd.arg("-device")
            .arg(format!("loader,addr={len_addr:#x},data={model_len},data-len=4"))
            .arg("-device")
            .arg(format!("loader,file={},addr={model_addr:#x},force-raw=on", qemu_opt(&model.to_string_lossy())));
    }
    cmd.arg("-kernel").arg(firmware).stdin(Stdio::null());
    cmd
}

/// Fails with install instructions when the machine's QEMU is not on PATH.
pub fn check_qemu(machine: &Machine) -> Result<()> {
    let qemu = machine.qemu;
    match Command::new(qemu).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status() {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // Debian packages qemu-system-riscv32 in qemu-system-misc.
            let package = if qemu == "qemu-system-arm" { "qemu-system-arm" } else { "qemu-system-misc" };
            bail!("{qemu} not found: install it with 'sudo apt-get install {package}' (or run scripts/setup.sh)")
        }
        Err(e) => Err(e).context(format!("cannot run {qemu}")),
    }
}

/// Markers of the firmware's last line.
const MARKERS: [&[u8]; 2] = [b"stats: ", b"error: "];

/// True if `line` (the start of a line) may be or become a marker line.
fn may_be_marker(line: &[u8]) -> bool {
    MARKERS.iter().any(|m| m.starts_with(line) || line.starts_with(m))
}

/// Copies the firmware's text to `sink` as it arrives, holding back a line that
/// may be the final stats or error line until more output follows it.
/// Returns everything read.
fn stream(mut from: impl Read, mut sink: impl Write) -> std::io::Result<Vec<u8>> {
    let mut all = Vec::new();
    // Bytes of `all` already passed to `sink`.
    let mut shown = 0usize;
    let mut chunk = [0u8; 4096];
    loop {
        let n = from.read(&mut chunk)?;
        if n == 0 {
            return Ok(all);
        }
        all.extend_from_slice(&chunk[..n]);
        // The last line (complete or not) may be the final stats or error line: hold it back.
        let end = if all.ends_with(b"\n") { all.len() - 1 } else { all.len() };
        let start = all[..end].iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let held_from = if may_be_marker(&all[start..end]) { start } else { all.len() };
        if held_from > shown {
            sink.write_all(&all[shown..held_from])?;
            sink.flush()?;
            shown = held_from;
        }
    }
}

/// Parses the firmware's stats line (without the `stats: ` prefix).
fn parse_stats(line: &str, text: String) -> Result<Output> {
    let mut out = Output {
        ids: Vec::new(),
        text,
        prompt_tokens: 0,
        generated_tokens: 0,
        positions: 0,
        stop: String::new(),
        stop_reason: String::new(),
        arena_bytes: 0,
        instructions_per_token: 0,
        stack_peak_bytes: 0,
    };
    for field in line.split_whitespace() {
        let (key, value) = field.split_once('=').with_context(|| format!("bad stats field '{field}'"))?;
        let bad = || format!("bad stats value {key}={value}");
        match key {
            // The firmware's name for the positions run.
            "tokens" => out.positions = value.parse().with_context(bad)?,
            "prompt_tokens" => out.prompt_tokens = value.parse().with_context(bad)?,
            "stop" => out.stop = value.to_string(),
            "instructions_per_token" => out.instructions_per_token = value.parse().with_context(bad)?,
            "arena_bytes" => out.arena_bytes = value.parse().with_context(bad)?,
            "stack_peak_bytes" => out.stack_peak_bytes = value.parse().with_context(bad)?,
            "ids" => {
                out.ids = value.split(',').map(|id| id.parse()).collect::<Result<_, _>>().with_context(bad)?;
            }
            // Newer firmware may report more; ignore what this tool does not know.
            _ => {}
        }
    }
    ensure!(!out.ids.is_empty(), "the firmware's stats line has no ids");
    // BOS (or the prompt's first token), then one token per position: those past the prompt were sampled.
    out.generated_tokens = out.ids.len().saturating_sub(out.prompt_tokens);
    Ok(out)
}

/// A finished QEMU run.
#[derive(Debug)]
pub struct Run {
    /// QEMU's exit status.
    pub status: ExitStatus,
    /// Everything the firmware printed.
    pub stdout: Vec<u8>,
    /// QEMU's own messages.
    pub stderr: String,
}

/// Where the text of a [`TextChannel::Serial`] board comes from.
#[derive(Debug)]
pub struct SerialText<'a> {
    /// The Unix socket QEMU serves the serial port on (`qemu_command`'s `serial`).
    pub socket: &'a Path,
    /// The firmware ELF, whose defmt table decodes the log frames on QEMU's stdout.
    pub firmware: &'a Path,
}

/// Runs `cmd`, streaming the firmware's text to `sink`; kills QEMU after `timeout`.
/// The text is QEMU's stdout, or with `serial` what the firmware writes on its
/// serial port (QEMU's stdout then carries defmt frames, printed as log lines on stderr).
pub fn run_qemu(
    mut cmd: Command,
    timeout: Duration,
    sink: impl Write + Send + 'static,
    serial: Option<SerialText<'_>>,
) -> Result<Run> {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().context("cannot start QEMU")?;
    let stdout = child.stdout.take().context("no stdout pipe")?;
    let mut stderr = child.stderr.take().context("no stderr pipe")?;
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let (reader, logger) = match serial {
        None => (std::thread::spawn(move || stream(stdout, sink)), None),
        Some(SerialText { socket, firmware }) => {
            let elf =
                std::fs::read(firmware).with_context(|| format!("cannot read firmware {}", firmware.display()))?;
            let logger = std::thread::spawn(move || print_log(stdout, &elf, std::io::stderr()));
            // QEMU creates the socket, then waits for this connection before the guest runs.
            let text = loop {
                if let Ok(text) = std::os::unix::net::UnixStream::connect(socket) {
                    break text;
                }
                if let Some(status) = child.try_wait()? {
                    let qemu = err_reader.join().unwrap_or_default();
                    bail!("QEMU exited with {status} before its serial port was connected: {}", qemu.trim());
                }
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    bail!("QEMU's serial socket {} did not appear within {} s", socket.display(), timeout.as_secs());
                }
                std::thread::sleep(Duration::from_millis(10));
            };
            (std::thread::spawn(move || stream(text, sink)), Some(logger))
        }
    };
    let mut reader = Some(reader);
    let mut text = None;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        // The text's reader stopped while QEMU runs: at the end of its output (then wait
        // for the exit), or on an error such as a reader that closed the pipe (`| head`),
        // which would otherwise leave the guest spinning until the timeout.
        if let Some(done) = reader.take_if(|r| r.is_finished()) {
            match done.join().map_err(|_| anyhow::anyhow!("output reader panicked"))? {
                Ok(all) => text = Some(all),
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(e.into());
                }
            }
        }
        if Instant::now() >= deadline {
            // Best effort: the process may have exited just now.
            let _ = child.kill();
            let _ = child.wait();
            bail!("QEMU did not finish within {} s and was killed", timeout.as_secs());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = match (text, reader) {
        (Some(all), _) => all,
        (None, Some(r)) => r.join().map_err(|_| anyhow::anyhow!("output reader panicked"))??,
        (None, None) => Vec::new(),
    };
    if let Some(logger) = logger {
        logger.join().map_err(|_| anyhow::anyhow!("log reader panicked"))??;
    }
    let stderr = err_reader.join().unwrap_or_default();
    Ok(Run { status, stdout, stderr })
}

/// Decodes the defmt frames arriving on `from` with the table of the firmware
/// `elf` and writes each as one `LEVEL message` line to `to`. Without a defmt
/// table in the ELF, the bytes are passed on as they are.
fn print_log(mut from: impl Read, elf: &[u8], mut to: impl Write) -> Result<()> {
    let table = match defmt_decoder::Table::parse(elf) {
        Ok(Some(table)) => table,
        Ok(None) | Err(_) => {
            std::io::copy(&mut from, &mut to)?;
            return Ok(());
        }
    };
    let mut decoder = table.new_stream_decoder();
    let mut chunk = [0u8; 1024];
    loop {
        let n = from.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        decoder.received(&chunk[..n]);
        loop {
            match decoder.decode() {
                Ok(frame) => {
                    let level = frame.level().map_or_else(|| "PRINT".to_string(), |l| l.as_str().to_uppercase());
                    writeln!(to, "{level} {}", frame.display_message())?;
                }
                Err(defmt_decoder::DecodeError::UnexpectedEof) => break,
                // A frame the table does not describe: skip it (the stream decoder resynchronizes).
                Err(defmt_decoder::DecodeError::Malformed) => writeln!(to, "(a malformed defmt frame)")?,
            }
        }
    }
}

/// Interprets a finished run: the stats on success, else the firmware's error line.
pub fn outcome(run: &Run) -> Result<Output> {
    let out = String::from_utf8_lossy(&run.stdout);
    let last = out.trim_end_matches('\n').rsplit('\n').next().unwrap_or("");
    if !run.status.success() {
        if let Some(msg) = last.strip_prefix("error: ") {
            bail!("the firmware reported: {msg}");
        }
        let qemu = run.stderr.trim();
        bail!(
            "QEMU exited with {} without a firmware error line{}",
            run.status,
            if qemu.is_empty() { String::new() } else { format!(": {qemu}") }
        );
    }
    let stats = last.strip_prefix("stats: ").context("the firmware's output does not end with a stats line")?;
    // The text is everything before the newline that precedes the stats line.
    let text_end = out.trim_end_matches('\n').len() - last.len();
    let text = out[..text_end.saturating_sub(1)].to_string();
    parse_stats(stats, text)
}

/// The checks of a run before anything slow (a firmware build, QEMU): the
/// model file parses (header, tables, CRC) and `generate` would take the
/// settings for it ([`crate::generate::check`], with its messages) at the
/// context the firmware runs at. Returns the file's length and its `seq_len`.
fn check_run(args: &QemuArgs, machine: &Machine) -> Result<(u64, usize)> {
    let file = microlm_cli::load::ModelFile::read(&args.model)?;
    let model = file.parse(false)?;
    let seq_len = model.config().seq_len;
    let s = &args.sampling;
    // An embedded board built here is built for the run's context; a prebuilt one
    // has its own (its firmware checks it); the others default to the model's seq_len.
    let ctx = match machine.model {
        Placement::Embedded { .. } if args.firmware.is_none() && !args.link => embedded_ctx(seq_len, s),
        _ => s.ctx.unwrap_or(seq_len),
    };
    // The KV dtype only sizes the plan here; the link firmware's default is i8.
    let kv = s.kv.unwrap_or(if args.link { microlm::KvDtype::I8 } else { microlm::KvDtype::F32 });
    ensure!(!(args.link && s.window.is_some()), "--window is not available over the link");
    crate::generate::check(&model, s, ctx, kv)?;
    Ok((file.bytes().len() as u64, seq_len))
}

pub fn run(args: &QemuArgs) -> Result<()> {
    let machine = machine(&args.machine)?;
    // Cheap checks first: the model and the settings, before minutes go into building a firmware.
    let (model_len, seq_len) = check_run(args, machine)?;
    check_qemu(machine)?;
    if args.link {
        return run_link(args, machine);
    }
    let mut words = firmware_args(&args.sampling);
    // A board that prints on its serial port: QEMU serves it on a socket in a fresh directory.
    let socket_dir = match machine.text {
        TextChannel::Serial => Some(tempfile::tempdir().context("cannot create a directory for QEMU's serial socket")?),
        TextChannel::Semihosting => None,
    };
    let socket = socket_dir.as_ref().map(|d| d.path().join("usart.sock"));
    let (cmd, firmware) = match machine.model {
        Placement::Loaded => {
            let firmware = match &args.firmware {
                Some(path) => path.clone(),
                None => build_firmware(machine, &[])?,
            };
            let at = load_addresses(machine, &firmware)?;
            ensure!(
                model_len <= at.model_max,
                "{} is {model_len} bytes; {} holds at most {} bytes for the model",
                args.model.display(),
                machine.name,
                at.model_max,
            );
            (qemu_command(machine, &firmware, Some((&args.model, model_len, at)), &words, None), firmware)
        }
        Placement::Embedded { flash_bytes, .. } => {
            ensure!(
                model_len <= flash_bytes,
                "{} is {model_len} bytes; {}'s flash holds {flash_bytes} bytes, firmware included",
                args.model.display(),
                machine.name,
            );
            let firmware = match &args.firmware {
                // A prebuilt firmware carries its own model (and context).
                Some(path) => {
                    check_firmware(machine, path)?;
                    path.clone()
                }
                None => {
                    let ctx = embedded_ctx(seq_len, &args.sampling);
                    let path = std::path::absolute(&args.model)
                        .with_context(|| format!("cannot resolve {}", args.model.display()))?;
                    // The arena is sized for the KV dtype the run asks for (`--kv`, passed to the firmware
                    // too); without it, for $MICROLM_KV or f32, which the firmware then takes as its default.
                    let mut env = vec![("MICROLM_MODEL", path.into_os_string())];
                    if let Some(kv) = args.sampling.kv {
                        env.push(("MICROLM_KV", kv.name().into()));
                    }
                    env.push(("MICROLM_CTX", ctx.to_string().into()));
                    if args.sampling.ctx.is_none() {
                        words.extend(["--ctx".into(), ctx.to_string()]);
                    }
                    build_firmware(machine, &env)?
                }
            };
            (qemu_command(machine, &firmware, None, &words, socket.as_deref()), firmware)
        }
    };
    let serial = socket.as_deref().map(|socket| SerialText { socket, firmware: &firmware });
    let run = run_qemu(cmd, Duration::from_secs(args.timeout), std::io::stdout(), serial)?;
    let mut out = outcome(&run)?;
    // Stopped by the context (or -n 0 in window mode): as many positions ran as the context holds.
    out.stop_reason = match crate::generate::stop_named(&out.stop) {
        Some(stop) => crate::generate::stop_reason(stop, out.positions, args.sampling.steps, out.positions),
        None => out.stop.clone(),
    };
    eprintln!("stopped: {}", out.stop_reason);
    eprintln!(
        "{}: {} positions, {} instructions per token, arena {} bytes, stack peak {} bytes",
        machine.name, out.positions, out.instructions_per_token, out.arena_bytes, out.stack_peak_bytes
    );
    if args.json {
        println!("{}", serde_json::to_string(&out)?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_holds_back_only_the_final_marker_line() {
        let input = b"Once upon a time.\nstats: in the story\nmore text\nstats: tokens=3 ids=1,2\n".as_slice();
        let mut shown = Vec::new();
        let all = stream(input, &mut shown).unwrap();
        assert_eq!(all, input);
        // With one read, the last line is held back and every earlier line shown.
        assert_eq!(shown, b"Once upon a time.\nstats: in the story\nmore text\n".as_slice());
    }

    #[test]
    fn firmware_args_leave_the_kv_dtype_to_the_firmware_unless_asked() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            sampling: SamplingArgs,
        }
        let words = |args: &[&str]| firmware_args(&Cli::parse_from(["microlm"].iter().chain(args)).sampling);
        // A firmware built with MICROLM_KV=i8 has an arena sized for i8: without --kv it uses that.
        assert!(!words(&[]).iter().any(|w| w == "--kv"), "{:?}", words(&[]));
        let asked = words(&["--kv", "f16"]);
        assert!(asked.windows(2).any(|w| w == ["--kv", "f16"]), "{asked:?}");
    }

    #[test]
    fn link_errors_name_the_board_and_the_stack_it_keeps() {
        let f405 = machine("netduinoplus2").unwrap();
        let assert = "rust-lld: error: microlm: the arena does not fit in the SRAM beside the 8 KiB kept for the stack";
        assert_eq!(
            link_error(f405, assert).unwrap(),
            "the arena does not fit in netduinoplus2's 128 KiB SRAM beside the stack (8 KiB are kept for it; \
             use a smaller --ctx)"
        );
        let lm3s = machine("lm3s6965evb").unwrap();
        let assert = assert.replace("8 KiB", "6 KiB");
        assert!(link_error(lm3s, &assert).unwrap().contains("64 KiB SRAM beside the stack (6 KiB are kept for it"));
        let flash = "rust-lld: error: section '.rodata' will not fit in region 'FLASH': overflowed by 1234 bytes";
        assert!(link_error(f405, flash).unwrap().starts_with(
            "the model does not fit in netduinoplus2's 1024 KiB flash beside the firmware: overflowed by 1234"
        ));
    }

    #[test]
    fn riscv32_virt_runs_on_qemu_system_riscv32_without_a_bios() {
        let rv = machine("riscv32-virt").unwrap();
        let cmd = qemu_command(rv, Path::new("fw.elf"), None, &["microlm".into()], None);
        assert_eq!(cmd.get_program(), "qemu-system-riscv32");
        let args: Vec<_> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        assert!(args.windows(2).any(|w| w == ["-M", "virt"]) && args.windows(2).any(|w| w == ["-bios", "none"]));
        // The firmware links for 14 MiB of DRAM: QEMU's device tree takes the top 2 MiB of the 16.
        assert!(args.windows(2).any(|w| w == ["-m", "16M"]), "{args:?}");
        assert!(args.windows(2).any(|w| w == ["-icount", "shift=0"]));
        assert_eq!(
            qemu_command(machine("mps2-an386").unwrap(), Path::new("fw.elf"), None, &[], None).get_program(),
            "qemu-system-arm"
        );
    }

    #[test]
    fn quote_round_trips_through_escapes() {
        assert_eq!(quote(r#"say "hi" \ there"#), r#""say \"hi\" \\ there""#);
    }

    #[cfg(unix)]
    #[test]
    fn outcome_splits_text_and_stats() {
        use std::os::unix::process::ExitStatusExt;
        let run = Run {
            status: ExitStatus::from_raw(0),
            stdout: b"Hi there\nstats: tokens=2 prompt_tokens=1 stop=steps instructions_per_token=9 arena_bytes=8 \
                      stack_peak_bytes=7 ids=1,5,6\n"
                .to_vec(),
            stderr: String::new(),
        };
        let out = outcome(&run).unwrap();
        assert_eq!(out.text, "Hi there");
        assert_eq!(out.ids, [1, 5, 6]);
        assert_eq!((out.instructions_per_token, out.arena_bytes, out.stack_peak_bytes), (9, 8, 7));
        // The firmware's tokens= is `positions`; past the one-token prompt, both tokens were sampled.
        assert_eq!((out.positions, out.generated_tokens, out.prompt_tokens), (2, 2, 1));
        let failed = Run { status: ExitStatus::from_raw(1 << 8), stdout: b"error: bad model\n".to_vec(), ..run };
        assert_eq!(outcome(&failed).unwrap_err().to_string(), "the firmware reported: bad model");
    }
}
