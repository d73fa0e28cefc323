//! Finding the demo model (stories260K + tok512) and converting it once.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

/// Where the demo model comes from, for the error message.
const DOWNLOAD: &str = "https://huggingface.co/karpathy/tinyllamas/tree/main/stories260K \
                        (stories260K.bin and tok512.bin)";

/// Candidate directories: explicit, then $MICROLM_MODELS, then ../shared/models beside the checkout.
fn candidates(explicit: Option<&Path>) -> Vec<PathBuf> {
    if let Some(dir) = explicit {
        return vec![dir.to_path_buf()];
    }
    let mut dirs = Vec::new();
    if let Some(env) = std::env::var_os("MICROLM_MODELS") {
        dirs.push(PathBuf::from(env));
    }
    let checkout = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    dirs.push(checkout.join("../shared/models"));
    dirs.push(PathBuf::from("../shared/models"));
    dirs
}

/// Returns the path of a converted stories260K `.mlm`, converting it on first use.
pub fn demo_model(explicit: Option<&Path>) -> Result<PathBuf> {
    let dirs = candidates(explicit);
    let Some(dir) = dirs.iter().find(|d| d.join("stories260K.bin").is_file() && d.join("tok512.bin").is_file()) else {
        let looked = dirs.iter().map(|d| format!("  {}", d.display())).collect::<Vec<_>>().join("\n");
        bail!(
            "stories260K.bin and tok512.bin not found in:\n{looked}\nDownload them from {DOWNLOAD} \
             and pass --models DIR or set MICROLM_MODELS"
        );
    };
    let out_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/models");
    std::fs::create_dir_all(&out_dir)?;
    let out = out_dir.join("stories260K.mlm");
    let (input, tokenizer) = (dir.join("stories260K.bin"), dir.join("tok512.bin"));
    if !up_to_date(&out, &[&input, &tokenizer]) {
        crate::convert::run(&crate::convert::ConvertArgs {
            input,
            tokenizer,
            quant: Default::default(),
            output: out.clone(),
        })?;
    }
    Ok(out)
}

/// True when `out` is newer than every input and this executable, and this build reads it.
fn up_to_date(out: &Path, inputs: &[&Path]) -> bool {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let Some(built) = modified(out) else { return false };
    let exe = std::env::current_exe().ok();
    let newer = inputs.iter().copied().chain(exe.as_deref()).all(|p| modified(p).is_some_and(|t| t <= built));
    newer && microlm_cli::load::ModelFile::read(out).is_ok_and(|f| f.parse(false).is_ok())
}
