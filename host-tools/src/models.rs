//! The demo model (stories260K + tok512): found on disk, else downloaded from
//! the Hugging Face hub and checked against known SHA-256 digests, then
//! converted once.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Cache, Repo};
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

/// The hub repository that holds the demo model.
pub const REPO: &str = "karpathy/tinyllamas";

/// Where a person finds the files by hand.
pub const BROWSE: &str = "https://huggingface.co/karpathy/tinyllamas/tree/main/stories260K";

/// The hub's address when neither `--hub-url` nor `$HF_ENDPOINT` names another.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// One file of the demo model.
#[derive(Debug, Clone, Copy)]
pub struct DemoFile {
    /// The name on disk (in `--models DIR`, `$MICROLM_MODELS`, ../shared/models).
    pub name: &'static str,
    /// The path inside the hub repository.
    pub remote: &'static str,
    /// SHA-256 of the file, lower-case hex.
    pub sha256: &'static str,
}

/// stories260K.bin and tok512.bin, with the digests of the files the tests and references use.
pub const FILES: [DemoFile; 2] = [
    DemoFile {
        name: "stories260K.bin",
        remote: "stories260K/stories260K.bin",
        sha256: "b0a507e7ad0f626624f17112325e66691f9076d622e1d3274d103d00299f2696",
    },
    DemoFile {
        name: "tok512.bin",
        remote: "stories260K/tok512.bin",
        sha256: "037cb335abb25d1fa9e8ecae30ed2a3a8ace9302862ebcdc05d51a6bbb10c312",
    },
];

/// The checkpoint and tokenizer the demo converts.
#[derive(Debug, Clone)]
pub struct Sources {
    pub checkpoint: PathBuf,
    pub tokenizer: PathBuf,
}

/// Local directories to look in: `$MICROLM_MODELS` when set, else ../shared/models
/// beside the checkout (and beside the working directory).
fn candidates() -> Vec<PathBuf> {
    if let Some(env) = std::env::var_os("MICROLM_MODELS") {
        return vec![PathBuf::from(env)];
    }
    let checkout = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    vec![checkout.join("../shared/models"), PathBuf::from("../shared/models")]
}

/// The two files in `dir`, if both are there.
fn in_dir(dir: &Path) -> Option<Sources> {
    let [checkpoint, tokenizer] = FILES.map(|f| dir.join(f.name));
    (checkpoint.is_file() && tokenizer.is_file()).then_some(Sources { checkpoint, tokenizer })
}

/// Finds stories260K.bin and tok512.bin: in `explicit` only when given (nothing
/// is downloaded then), else in `$MICROLM_MODELS` or ../shared/models, else in
/// the download cache or from the hub at `hub_url` (default `$HF_ENDPOINT`, else huggingface.co).
pub fn find_or_download(explicit: Option<&Path>, hub_url: Option<&str>) -> Result<Sources> {
    if let Some(dir) = explicit {
        return in_dir(dir).with_context(|| {
            format!(
                "stories260K.bin and tok512.bin are not both in {}: download them from {BROWSE}, \
                 or leave out --models to have the demo download them",
                dir.display()
            )
        });
    }
    if let Some(found) = candidates().iter().find_map(|d| in_dir(d)) {
        return Ok(found);
    }
    download(hub_url)
}

/// The hub endpoint: `--hub-url`, else `$HF_ENDPOINT`, else huggingface.co.
fn endpoint(hub_url: Option<&str>) -> String {
    let url = match hub_url {
        Some(url) => url.to_string(),
        None => std::env::var("HF_ENDPOINT").ok().filter(|u| !u.is_empty()).unwrap_or(DEFAULT_ENDPOINT.into()),
    };
    url.trim_end_matches('/').to_string()
}

/// The download cache: `$MICROLM_CACHE`, else the hub's own (`$HF_HOME/hub`, else ~/.cache/huggingface/hub).
fn cache() -> Result<Cache> {
    if let Some(dir) = std::env::var_os("MICROLM_CACHE").filter(|d| !d.is_empty()) {
        return Ok(Cache::new(PathBuf::from(dir)));
    }
    // hf-hub's default cache needs a home directory; say so instead of letting it panic.
    if std::env::var_os("HF_HOME").is_none() && std::env::var_os("HOME").is_none() {
        bail!("no download cache: set MICROLM_CACHE (or HF_HOME or HOME) to a writable directory");
    }
    Ok(Cache::from_env())
}

/// SHA-256 of a file, lower-case hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf).with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Removes a cached file: the snapshot entry, the blob it points to and the blob's lock file.
fn remove_cached(pointer: &Path) {
    // Best effort: what cannot be removed is checked again (and replaced) on the next run.
    if let Ok(blob) = std::fs::canonicalize(pointer) {
        let _ = std::fs::remove_file(blob.with_extension("lock"));
        let _ = std::fs::remove_file(&blob);
    }
    let _ = std::fs::remove_file(pointer);
}

/// An indicatif bar for hf-hub's downloads (drawn only on a terminal).
struct Bar(ProgressBar);

impl hf_hub::api::Progress for Bar {
    fn init(&mut self, size: usize, filename: &str) {
        self.0.set_length(size as u64);
        self.0.set_message(filename.to_string());
    }
    fn update(&mut self, size: usize) {
        self.0.inc(size as u64);
    }
    fn finish(&mut self) {
        self.0.finish_and_clear();
    }
}

fn bar() -> Bar {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{msg:>28} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    Bar(bar)
}

/// Downloads the demo files into the cache (or takes them from it), each checked against its SHA-256.
fn download(hub_url: Option<&str>) -> Result<Sources> {
    let endpoint = endpoint(hub_url);
    let cache = cache()?;
    let offline = |reason: &str| {
        anyhow::anyhow!(
            "could not download stories260K from {endpoint}/{REPO}: {reason}; put stories260K.bin and tok512.bin \
             in DIR and pass --models DIR (they are at {BROWSE})"
        )
    };
    let api = ApiBuilder::from_cache(cache.clone())
        .with_endpoint(endpoint.clone())
        .with_progress(false)
        .build()
        .map_err(|e| offline(&one_line(&e.to_string())))?;
    let repo = api.repo(Repo::model(REPO.to_string()));
    let cached = cache.repo(Repo::model(REPO.to_string()));
    let mut paths = Vec::new();
    for file in FILES {
        // A file already in the cache is used when its digest is right, and replaced otherwise.
        if let Some(path) = cached.get(file.remote) {
            if sha256_file(&path).is_ok_and(|d| d == file.sha256) {
                paths.push(path);
                continue;
            }
            remove_cached(&path);
        }
        eprintln!("downloading {}", repo.url(file.remote));
        let path = repo.download_with_progress(file.remote, bar()).map_err(|e| offline(&one_line(&e.to_string())))?;
        let digest = sha256_file(&path)?;
        if digest != file.sha256 {
            remove_cached(&path);
            bail!(
                "{} from {endpoint}/{REPO} has SHA-256 {digest}, expected {}: the download is corrupt or not \
                 the known file; it was removed from the cache (put the right files in DIR and pass --models DIR)",
                file.remote,
                file.sha256
            );
        }
        paths.push(path);
    }
    let [checkpoint, tokenizer]: [PathBuf; 2] =
        paths.try_into().map_err(|_| anyhow::anyhow!("internal: expected two demo files"))?;
    Ok(Sources { checkpoint, tokenizer })
}

/// A message on one line (library errors may carry newlines).
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Returns the path of a converted stories260K `.mlm`, converting it on first use.
/// The per-tensor report of the conversion is printed only with `report`.
pub fn demo_model(sources: &Sources, report: bool) -> Result<PathBuf> {
    // The workspace's target/models (the manifest's parent, so the printed path has no `..`).
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap_or(Path::new(".."));
    let out_dir = root.join("target/models");
    std::fs::create_dir_all(&out_dir).with_context(|| format!("cannot create {}", out_dir.display()))?;
    let out = out_dir.join("stories260K.mlm");
    let (input, tokenizer) = (sources.checkpoint.clone(), sources.tokenizer.clone());
    if !up_to_date(&out, &[&input, &tokenizer]) {
        crate::convert::run(&crate::convert::ConvertArgs {
            input,
            tokenizer: Some(tokenizer),
            quant: Default::default(),
            output: out.clone(),
            quiet: !report,
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
