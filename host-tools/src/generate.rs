//! `microlm generate`: stream a story from a model file.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::Args;
use microlm::tokenizer::Tokenizer;
use microlm::{Generation, KvDtype, Model, Sampler, SamplerConfig, Session, SessionError, Step, Stop, Utf8Stream};

use microlm_cli::load::{self, ModelFile};

use crate::values;

/// Prompt and sampling flags, shared by `generate`, `qemu` and `demo`.
///
/// Numeric options take values that start with '-' (`-t -1`, `-s -5`) so that
/// they reach the range checks and get a specific error, not "unexpected argument".
#[derive(Debug, Args, Clone)]
pub struct SamplingArgs {
    /// Prompt text (encoded with BOS when the model adds one, and for SentencePiece a dummy-prefix space).
    #[arg(short = 'p', long, default_value = "", allow_hyphen_values = true)]
    pub prompt: String,
    /// Positions to run, prompt included (0 = until the context is full).
    #[arg(short = 'n', long = "steps", default_value_t = 256, allow_hyphen_values = true, value_parser = values::count)]
    pub steps: usize,
    /// Temperature; 0 = greedy.
    #[arg(short = 't', long, default_value_t = 1.0, allow_hyphen_values = true, value_parser = values::real)]
    pub temperature: f32,
    /// Top-p (nucleus) mass in (0, 1]; 1 disables.
    #[arg(long = "top-p", default_value_t = 0.9, allow_hyphen_values = true, value_parser = values::real)]
    pub top_p: f32,
    /// Keep only the K most likely tokens (0 = off).
    #[arg(long = "top-k", default_value_t = 0, allow_hyphen_values = true, value_parser = values::count)]
    pub top_k: usize,
    /// Drop tokens below P × the top probability (0 = off).
    #[arg(long = "min-p", default_value_t = 0.0, allow_hyphen_values = true, value_parser = values::real)]
    pub min_p: f32,
    /// RNG seed (0 or omitted = from the clock).
    #[arg(short = 's', long, allow_hyphen_values = true, value_parser = values::seed)]
    pub seed: Option<u64>,
    /// Context length (KV cache positions); default the model's seq_len.
    #[arg(long, allow_hyphen_values = true, value_parser = values::count)]
    pub ctx: Option<usize>,
    /// KV cache dtype: f32 (exact; the default of `generate`), f16, or i8 (one f32 scale per
    /// layer and position). On a board the default is the dtype its firmware was built for.
    #[arg(long, value_parser = values::kv())]
    pub kv: Option<KvDtype>,
    /// Keep going when the context is full: keep the first SINKS positions and a
    /// rolling window of the most recent ones (bare --window = 4 sinks).
    #[arg(long, value_name = "SINKS", num_args = 0..=1, default_missing_value = "4", value_parser = values::count)]
    pub window: Option<usize>,
}

impl SamplingArgs {
    /// The KV cache dtype on the host: `--kv`, else f32.
    pub fn kv_or_f32(&self) -> KvDtype {
        self.kv.unwrap_or(KvDtype::F32)
    }
}

/// Arguments of `microlm generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Model file (.mlm).
    pub model: PathBuf,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Print one JSON object with ids, text and throughput as the last line.
    #[arg(long)]
    pub json: bool,
    /// Skip the CRC32 check (structural checks still run).
    #[arg(long)]
    pub no_checksum: bool,
}

/// The result of a generation run: `generate --json`'s object. `microlm qemu
/// --json` prints the same keys for the same things ([`crate::qemu::Output`]);
/// docs/CLI.md lists them.
#[derive(Debug, serde::Serialize)]
pub struct Output {
    /// BOS followed by every next token, as llama2.c's reference lists them.
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
    pub stop: &'static str,
    /// The same in words, with the position (as printed on stderr).
    pub stop_reason: String,
    /// Arena bytes of the session (`Model::plan`).
    pub arena_bytes: usize,
    /// Forward passes per second.
    pub tokens_per_s: f64,
}

/// The `stop` name of a stop reason (also the firmware's `stop=` word).
pub fn stop_name(stop: Stop) -> &'static str {
    match stop {
        Stop::Steps => "steps",
        Stop::Bos => "bos",
        Stop::Eos => "eos",
        Stop::ContextFull => "context_full",
    }
}

/// The stop reason named `name` (see [`stop_name`]).
pub fn stop_named(name: &str) -> Option<Stop> {
    [Stop::Steps, Stop::Bos, Stop::Eos, Stop::ContextFull].into_iter().find(|&s| stop_name(s) == name)
}

/// Encodes `prompt` with BOS as llama2.c does (with the workspace for O(n log n) merges).
pub fn encode_prompt(tok: &Tokenizer<'_>, prompt: &str) -> Result<Vec<u32>> {
    let mut ids = vec![0u32; Tokenizer::encode_workspace(prompt.as_bytes())];
    let n = tok.encode(prompt.as_bytes(), true, false, &mut ids)?;
    ids.truncate(n);
    Ok(ids)
}

/// Why generation stopped, in words for stderr: `pos` positions run with `-n
/// steps` in a context of `ctx`.
pub fn stop_reason(stop: Stop, pos: usize, steps: usize, ctx: usize) -> String {
    match stop {
        // Only in window mode: without a window, -n 0 runs until the context is full.
        Stop::Steps if steps == 0 => format!("steps reached (-n 0: the context's {ctx} positions)"),
        Stop::Steps => format!("steps reached (-n {steps})"),
        Stop::Bos => format!("the model produced BOS at position {pos}"),
        Stop::Eos => format!("the model produced EOS at position {pos}"),
        Stop::ContextFull => format!("context full ({ctx} positions; --window keeps going)"),
    }
}

/// A run's settings, checked as `generate` checks them before its first forward pass.
#[derive(Debug)]
pub struct Checked {
    /// The sampler settings, the seed resolved (0 or none: from the clock).
    pub sampler: SamplerConfig,
    /// The arena plan at the context length and KV dtype of the run.
    pub plan: microlm::Plan,
    /// The prompt's token ids, BOS first when the model adds one.
    pub prompt: Vec<u32>,
}

/// Checks the flags of a run of `model` with a context of `ctx` positions and a
/// `kv` cache, in `generate`'s order and with its messages: the sampling
/// settings, the context length, the prompt's length (refused before it is
/// encoded when it cannot fit) and the window. `microlm qemu` checks a run with
/// it on the host before it builds or boots a firmware.
pub fn check(model: &Model<'_>, s: &SamplingArgs, ctx: usize, kv: KvDtype) -> Result<Checked> {
    let seed = match s.seed {
        Some(seed) if seed != 0 => seed,
        _ => SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |d| d.as_secs().max(1)),
    };
    let sampler = SamplerConfig { temperature: s.temperature, top_p: s.top_p, top_k: s.top_k, min_p: s.min_p, seed };
    Sampler::new(sampler, model.config().vocab_size).context("invalid sampling settings")?;
    let plan = model.plan(ctx, kv)?;
    let at_least = model.tokenizer().min_tokens(s.prompt.as_bytes(), true);
    anyhow::ensure!(
        at_least <= ctx,
        "prompt is at least {at_least} tokens ({} bytes), longer than the context of {ctx}",
        s.prompt.len()
    );
    let prompt = encode_prompt(model.tokenizer(), &s.prompt)?;
    if prompt.len() > ctx {
        return Err(SessionError::PromptTooLong { tokens: prompt.len(), ctx_len: ctx }.into());
    }
    if let Some(sinks) = s.window {
        anyhow::ensure!(sinks < ctx, "--window {sinks}: the context ({ctx}) must be longer than the sinks");
    }
    Ok(Checked { sampler, plan, prompt })
}

pub fn run(args: &GenerateArgs) -> Result<()> {
    let file = ModelFile::read(&args.model)?;
    let model = file.parse(args.no_checksum)?;
    let s = &args.sampling;
    let ctx = s.ctx.unwrap_or(model.config().seq_len);
    let kv = s.kv_or_f32();
    let Checked { sampler, plan, prompt } = check(&model, s, ctx, kv)?;
    let mut sampler = Sampler::new(sampler, model.config().vocab_size).context("invalid sampling settings")?;
    let mut arena = load::arena(plan.total);
    let mut session = Session::new(&model, bytemuck::cast_slice_mut(&mut arena), ctx, kv)?;
    let mut generation = Generation::new(&session, &prompt, s.steps)?;
    if let Some(sinks) = s.window {
        generation = generation.with_window(sinks);
    }

    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut utf8 = Utf8Stream::new();
    let mut text = String::new();
    let mut ids = vec![prompt[0]];
    let mut generated = 0usize;
    // A model that adds no BOS (e.g. SmolLM2) starts with a text token: print it too.
    if prompt[0] != model.tokenizer().bos_id() {
        utf8.push(model.tokenizer().decode(model.tokenizer().bos_id(), prompt[0]), |piece| text.push_str(piece));
        out.write_all(text.as_bytes())?;
    }
    let start = Instant::now();
    // A reader that closes the pipe (`| head`) gives a BrokenPipe error here; `main`
    // ends such a run quietly with exit code 0 (nobody reads the rest).
    let stop = loop {
        match generation.step(&mut session, &mut sampler)? {
            Step::Token { prev, token, forced } => {
                ids.push(token);
                generated += usize::from(!forced);
                let before = text.len();
                utf8.push(model.tokenizer().decode(prev, token), |piece| text.push_str(piece));
                // Stream the characters this token completed.
                out.write_all(&text.as_bytes()[before..])?;
                out.flush()?;
            }
            Step::Done(stop) => break stop,
        }
    };
    let before = text.len();
    utf8.finish(|piece| text.push_str(piece));
    out.write_all(&text.as_bytes()[before..])?;
    writeln!(out)?;
    let elapsed = start.elapsed().as_secs_f64();
    let tokens_per_s = if elapsed > 0.0 { generation.pos() as f64 / elapsed } else { 0.0 };
    eprintln!("stopped: {}", stop_reason(stop, generation.pos(), s.steps, ctx));
    eprintln!("achieved tok/s: {tokens_per_s:.1}");
    if args.json {
        let o = Output {
            ids,
            text,
            prompt_tokens: prompt.len(),
            generated_tokens: generated,
            positions: generation.pos(),
            stop: stop_name(stop),
            stop_reason: stop_reason(stop, generation.pos(), s.steps, ctx),
            arena_bytes: plan.total,
            tokens_per_s,
        };
        writeln!(out, "{}", serde_json::to_string(&o)?)?;
        out.flush()?;
    }
    Ok(())
}
