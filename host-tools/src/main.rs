//! `microlm`: convert, inspect and run tiny language models.

mod bench;
mod calibrate;
mod convert;
mod eval;
mod generate;
mod inspect;
mod models;
mod qemu;
mod quantize;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

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
    /// Re-encode an f32/f16 model file with quantized weights (q8_0, q4_0), optionally calibrated.
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
    /// Run the demo: find stories260K, convert it, and generate a story.
    #[command(
        after_help = "Example:\n  microlm demo            # models from $MICROLM_MODELS or ../shared/models\n  \
                            microlm demo --models ~/tinyllamas -t 0\n  \
                            microlm demo --board mps2-an386   # on the Cortex-M4F board in QEMU"
    )]
    Demo(DemoArgs),
}

/// Arguments of `microlm demo`.
#[derive(Debug, Args)]
struct DemoArgs {
    /// Directory holding stories260K.bin and tok512.bin (default: $MICROLM_MODELS, then ../shared/models).
    #[arg(long)]
    models: Option<PathBuf>,
    /// Run on this QEMU machine's firmware instead of the host (e.g. mps2-an386).
    #[arg(long)]
    board: Option<String>,
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
        Command::Demo(args) => {
            let model = models::demo_model(args.models.as_deref())?;
            match args.board {
                Some(machine) => qemu::run(&qemu::QemuArgs {
                    model,
                    machine,
                    sampling: args.sampling,
                    json: false,
                    firmware: None,
                    timeout: 600,
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

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
