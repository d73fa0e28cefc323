//! `microlm`: convert, inspect and run tiny language models.
// The doc comments of the argument structs are clap's --help text, printed as written.
#![allow(rustdoc::bare_urls)]

mod bench;
mod budget;
mod calibrate;
mod convert;
mod device;
mod eval;
mod generate;
mod inspect;
mod models;
mod plot;
mod qemu;
mod quantize;
mod values;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand};

/// microlm: tiny language models for microcontrollers, and the host tools around them.
#[derive(Debug, Parser)]
#[command(name = "microlm", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Convert a llama2.c checkpoint and tokenizer into one .mlm file.
    #[command(after_help = "Example:\n  microlm convert stories260K.bin --tokenizer tok512.bin -o stories260K.mlm")]
    Convert(convert::ConvertArgs),
    /// Re-encode an f32/f16 model file with quantized weights (q8_0, q4_0, q4_16), optionally calibrated.
    #[command(
        after_help = "Example:\n  microlm quantize stories260K.mlm --dtype q4_0 --tensor-dtype embedding=q8_0 -o s-q4.mlm"
    )]
    Quantize(quantize::QuantizeArgs),
    /// Perplexity on text, and KL divergence / agreement against a reference model.
    #[command(after_help = "Example:\n  microlm eval s-q8.mlm --text stories.txt --reference stories260K.mlm --json")]
    Eval(eval::EvalArgs),
    /// Print a model file's configuration, tensor table, tokenizer and memory plan.
    #[command(after_help = "Example:\n  microlm inspect stories260K.mlm --ctx 512 --kv i8 --board rp2350 --json")]
    Inspect(inspect::InspectArgs),
    /// Measure host decoding throughput (median tokens/s of greedy runs).
    #[command(after_help = "Example:\n  microlm bench stories260K.mlm --runs 9 --json")]
    Bench(bench::BenchArgs),
    /// Generate text from a model file, streaming tokens to stdout.
    #[command(after_help = "Example:\n  microlm generate stories260K.mlm -p \"Once upon a time\" -n 128 -t 0.8 -s 42")]
    Generate(generate::GenerateArgs),
    /// Run a model file on a board firmware in QEMU (default machine: mps2-an386, Cortex-M4F).
    #[command(after_help = "Example:\n  microlm qemu stories260K.mlm -p \"Once upon a time\" -n 128 -t 0 --json\n\n\
                      Builds boards/qemu-MACHINE with cargo (or runs --firmware ELF), loads the model with \
                      QEMU's generic loader and passes the flags on the semihosting command line.")]
    Qemu(qemu::QemuArgs),
    /// Talk to a board over its serial link: info, generate, upload a model.
    #[command(after_help = "Examples:\n  microlm device --port /dev/ttyACM0 info\n  \
                            microlm device --port /dev/ttyACM0 generate -p \"Once upon a time\" -n 128 -t 0.8\n  \
                            microlm device --socket /tmp/board.sock upload stories260K-q8_0.mlm\n\n\
                      Frames are postcard messages with a CRC-32 in COBS (see link/src/lib.rs); each reply is \
                      awaited --timeout seconds. Ctrl-C during a generation stops it after the current token.")]
    Device(device::DeviceArgs),
    /// Run the demo: find (or download) stories260K, convert it, and generate a story.
    #[command(
        after_help = "Example:\n  microlm demo            # models from $MICROLM_MODELS or ../shared/models, else downloaded\n  \
                            microlm demo --models ~/tinyllamas -t 0\n  \
                            microlm demo --board mps2-an386   # on the Cortex-M4F board in QEMU\n\n\
                      Without the files in $MICROLM_MODELS (or ../shared/models beside the checkout), the demo \
                      downloads stories260K.bin and tok512.bin from the Hugging Face hub (karpathy/tinyllamas; \
                      --hub-url or $HF_ENDPOINT to use another endpoint) into $MICROLM_CACHE or the hub's cache \
                      (~/.cache/huggingface/hub, or $HF_HOME/hub) and checks their SHA-256."
    )]
    Demo(DemoArgs),
}

/// Arguments of `microlm demo`.
#[derive(Debug, Args)]
struct DemoArgs {
    /// Directory holding stories260K.bin and tok512.bin; nothing is downloaded when given
    /// (default: $MICROLM_MODELS, else ../shared/models, else the download cache).
    #[arg(long, value_name = "DIR")]
    models: Option<PathBuf>,
    /// Hugging Face hub to download from (default: $HF_ENDPOINT, else https://huggingface.co).
    #[arg(long, value_name = "URL")]
    hub_url: Option<String>,
    /// Run on this QEMU machine's firmware instead of the host.
    #[arg(long, value_parser = values::machine())]
    board: Option<String>,
    /// Print the conversion's per-tensor table (bytes, RMSE, cosine) on stderr.
    #[arg(long)]
    report: bool,
    #[command(flatten)]
    sampling: generate::SamplingArgs,
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Convert(args) => convert::run(&args),
        Command::Inspect(args) => inspect::run(&args),
        Command::Quantize(args) => quantize::run(&args),
        Command::Eval(args) => eval::run(&args),
        Command::Generate(args) => generate::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Qemu(args) => qemu::run(&args),
        Command::Device(args) => device::run(&args),
        Command::Demo(args) => {
            // The board is checked by the parser; the QEMU check is cheap: both come before any download or conversion.
            if let Some(board) = &args.board {
                qemu::check_qemu(qemu::machine(board)?)?;
            }
            let sources = models::find_or_download(args.models.as_deref(), args.hub_url.as_deref())?;
            let model = models::demo_model(&sources, args.report)?;
            match args.board {
                Some(machine) => qemu::run(&qemu::QemuArgs {
                    model,
                    machine,
                    sampling: args.sampling,
                    json: false,
                    firmware: None,
                    timeout: 600,
                    link: false,
                }),
                None => generate::run(&generate::GenerateArgs {
                    model,
                    sampling: args.sampling,
                    json: false,
                    no_checksum: false,
                }),
            }
        }
    }
}

/// The subcommand named on the command line, for the `--help` hint of a usage error.
fn subcommand_in_args() -> Option<String> {
    let cmd = Cli::command();
    std::env::args().skip(1).find(|a| cmd.get_subcommands().any(|s| s.get_name() == a))
}

/// A clap error as one line: its message with the valid values, and where to look;
/// clap's tips (`tip: a similar argument exists: '--temperature'`) follow, each on
/// a line of its own. `--help` and `--version` print normally and exit 0.
fn usage_error(e: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            // Output to a closed pipe (`microlm --help | head -1`) is no error worth a line.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let names: Vec<String> = Cli::command().get_subcommands().map(|s| s.get_name().to_string()).collect();
            eprintln!("error: a command is needed: {}; see 'microlm --help'", names.join(", "));
            return ExitCode::FAILURE;
        }
        _ => {}
    }
    let rendered = e.render().to_string();
    // clap's message, the list of possible values and any tips, up to the usage block.
    let (tips, parts): (Vec<&str>, Vec<&str>) = rendered
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .filter(|l| !l.is_empty())
        .partition(|l| l.starts_with("tip:"));
    let message = parts.join(" ");
    let message = message.strip_prefix("error: ").unwrap_or(&message);
    let help = match subcommand_in_args() {
        Some(sub) => format!("microlm {sub} --help"),
        None => "microlm --help".to_string(),
    };
    eprintln!("error: {message}; see '{help}'");
    for tip in tips {
        eprintln!("{tip}");
    }
    ExitCode::FAILURE
}

/// True when the error only says that stdout's reader went away (`microlm generate | head`).
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // Nobody reads the rest: end quietly, as `yes | head` does.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
