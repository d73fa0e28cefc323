//! `microlm inspect`: everything a model file says about itself.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use microlm::format::TensorEntry;
use serde_json::json;

use microlm_cli::load::ModelFile;

/// Arguments of `microlm inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Model file (.mlm).
    pub model: PathBuf,
    /// Context length for the memory plan (default the model's seq_len).
    #[arg(long)]
    pub ctx: Option<usize>,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Skip the CRC32 check (structural checks still run).
    #[arg(long)]
    pub no_checksum: bool,
}

fn tensor_name(e: &TensorEntry) -> String {
    if e.kind.is_per_layer() {
        format!("layers.{}.{}", e.layer, e.kind.name())
    } else {
        e.kind.name().to_string()
    }
}

fn shape(e: &TensorEntry) -> Vec<u32> {
    if e.kind.is_norm() {
        vec![e.cols]
    } else {
        vec![e.rows, e.cols]
    }
}

pub fn run(args: &InspectArgs) -> Result<()> {
    let file = ModelFile::read(&args.model)?;
    let model = file.parse(args.no_checksum)?;
    let c = *model.config();
    let ctx = args.ctx.unwrap_or(c.seq_len);
    let plan = model.plan(ctx)?;
    let tensors: Vec<TensorEntry> = model.tensors().collect();
    let weight_bytes: u64 = tensors.iter().map(|t| t.length).sum();

    if args.json {
        let j = json!({
            "file": args.model.display().to_string(),
            "name": model.name(),
            "arch": "llama",
            "file_bytes": model.file_len(),
            "crc32": format!("{:08x}", model.crc32()),
            "config": {
                "dim": c.dim, "hidden_dim": c.hidden_dim, "n_layers": c.n_layers, "n_heads": c.n_heads,
                "n_kv_heads": c.n_kv_heads, "head_size": c.head_size(), "vocab_size": c.vocab_size,
                "seq_len": c.seq_len, "norm_eps": c.norm_eps, "rope_theta": c.rope_theta,
                "bos_id": c.bos_id, "eos_id": c.eos_id, "shared_classifier": c.shared_classifier,
            },
            "tokenizer": { "vocab_size": model.tokenizer().vocab_size(), "bytes": model.tokenizer_len() },
            "weight_bytes": weight_bytes,
            "tensors": tensors.iter().map(|t| json!({
                "name": tensor_name(t), "kind": t.kind.name(), "layer": t.layer, "dtype": t.dtype.name(),
                "shape": shape(t), "offset": t.offset, "bytes": t.length,
            })).collect::<Vec<_>>(),
            "plan": {
                "ctx_len": plan.ctx_len, "activations": plan.activations, "kv_cache": plan.kv_cache,
                "logits": plan.logits, "sampler": plan.sampler, "act_quant": plan.act_quant, "arena_bytes": plan.total,
            },
            "arena_bytes": plan.total,
        });
        println!("{}", serde_json::to_string_pretty(&j)?);
        return Ok(());
    }

    println!("file        {} ({} bytes, crc32 {:08x})", args.model.display(), model.file_len(), model.crc32());
    println!("name        {}", model.name());
    println!("arch        llama");
    println!(
        "config      dim {}  hidden_dim {}  layers {}  heads {}  kv_heads {}  head_size {}",
        c.dim,
        c.hidden_dim,
        c.n_layers,
        c.n_heads,
        c.n_kv_heads,
        c.head_size()
    );
    println!(
        "            vocab {}  seq_len {}  norm_eps {:e}  rope_theta {}  bos {}  eos {}  shared classifier {}",
        c.vocab_size, c.seq_len, c.norm_eps, c.rope_theta, c.bos_id, c.eos_id, c.shared_classifier
    );
    println!("tokenizer   {} tokens, {} bytes", model.tokenizer().vocab_size(), model.tokenizer_len());
    println!();
    println!("{:<22} {:<6} {:>12} {:>10} {:>10}", "tensor", "dtype", "shape", "offset", "bytes");
    for t in &tensors {
        let shape = shape(t).iter().map(u32::to_string).collect::<Vec<_>>().join("x");
        println!("{:<22} {:<6} {:>12} {:>10} {:>10}", tensor_name(t), t.dtype.name(), shape, t.offset, t.length);
    }
    println!("{:<22} {:<6} {:>12} {:>10} {:>10}", "total", "", "", "", weight_bytes);
    println!();
    println!("arena plan for ctx {}:", plan.ctx_len);
    println!("  activations {:>10} bytes", plan.activations);
    println!("  kv cache    {:>10} bytes", plan.kv_cache);
    println!("  logits      {:>10} bytes", plan.logits);
    println!("  sampler     {:>10} bytes", plan.sampler);
    println!("  act quant   {:>10} bytes", plan.act_quant);
    println!("  arena_bytes {:>10} bytes", plan.total);
    Ok(())
}
