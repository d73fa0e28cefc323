//! `microlm bench`: host decoding throughput, the median of several greedy runs.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{ensure, Result};
use clap::Args;
use microlm::{Generation, Sampler, SamplerConfig, Session, Step};
use microlm_cli::load::{self, ModelFile};

/// Arguments of `microlm bench`.
///
/// Its numbers take values that start with '-' (`-n -3`), as `generate`'s do,
/// so that they reach the range checks and get a specific error.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Model file (.mlm).
    pub model: PathBuf,
    /// Positions per run (greedy, no prompt; 0 = until the context is full).
    #[arg(short = 'n', long = "steps", default_value_t = 256, allow_hyphen_values = true, value_parser = crate::values::count)]
    pub steps: usize,
    /// Timed runs; the median is reported.
    #[arg(long, default_value_t = 7, allow_hyphen_values = true, value_parser = crate::values::positive)]
    pub runs: usize,
    /// Context length (default: the model's seq_len).
    #[arg(long, allow_hyphen_values = true, value_parser = crate::values::count)]
    pub ctx: Option<usize>,
    /// KV cache dtype: f32, f16 or i8.
    #[arg(long, default_value = "f32", value_parser = crate::values::kv())]
    pub kv: microlm::KvDtype,
    /// Print one JSON object instead of a line.
    #[arg(long)]
    pub json: bool,
}

/// Median of a non-empty list.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub fn run(args: &BenchArgs) -> Result<()> {
    ensure!(args.runs > 0, "--runs must be at least 1");
    let file = ModelFile::read(&args.model)?;
    let model = file.parse(false)?;
    let ctx = args.ctx.unwrap_or(model.config().seq_len);
    let plan = model.plan(ctx, args.kv)?;
    let mut arena = load::arena(plan.total);
    let prompt = [model.config().bos_id];
    let greedy = SamplerConfig { temperature: 0.0, ..SamplerConfig::default() };
    let mut rates = Vec::with_capacity(args.runs);
    let mut positions = 0;
    // One untimed warm-up run, then the timed ones.
    for run in 0..=args.runs {
        let mut session = Session::new(&model, bytemuck::cast_slice_mut(&mut arena), ctx, args.kv)?;
        let mut sampler = Sampler::new(greedy, model.config().vocab_size)?;
        let mut generation = Generation::new(&session, &prompt, args.steps)?;
        let start = Instant::now();
        while let Step::Token { .. } = generation.step(&mut session, &mut sampler)? {}
        let secs = start.elapsed().as_secs_f64();
        positions = generation.pos();
        if run > 0 && secs > 0.0 {
            rates.push(positions as f64 / secs);
        }
    }
    ensure!(!rates.is_empty(), "runs too short to time");
    let (lo, hi) = rates.iter().fold((f64::MAX, 0.0f64), |(lo, hi), &r| (lo.min(r), hi.max(r)));
    let med = median(rates.clone());
    if args.json {
        let j = serde_json::json!({
            "file": args.model.display().to_string(),
            "positions_per_run": positions,
            "runs": rates.len(),
            "tokens_per_s_median": med,
            "tokens_per_s_min": lo,
            "tokens_per_s_max": hi,
            "kv": args.kv.name(),
            "arena_bytes": plan.total,
        });
        writeln!(std::io::stdout(), "{j}")?;
    } else {
        // writeln! rather than println!: a closed stdout is an error `main` ends quietly, not a panic.
        writeln!(
            std::io::stdout(),
            "{}: {med:.0} tok/s median of {} runs of {positions} positions (min {lo:.0}, max {hi:.0}), one thread",
            args.model.display(),
            rates.len()
        )?;
    }
    Ok(())
}
