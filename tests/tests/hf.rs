//! `microlm convert DIR` for a Hugging Face `LlamaForCausalLM` folder: the
//! stories260K folder in `../shared/importers/` (q and k rows in HF
//! `rotate_half` order, tied embeddings, a BPE tokenizer.json with byte
//! fallback) converts to a file that reproduces llama2.c `run.c` token for
//! token on all five reference cases, and damaged folders are refused with a
//! specific error.

use std::fs;
use std::path::{Path, PathBuf};

use microlm_tests::{assert_reproduces_reference_cases, run_cli, scratch_dir, shared_file, ModelFile};

fn hf_dir() -> PathBuf {
    shared_file("importers/stories260k/stories260K-hf")
}

fn convert(dir: &Path, out: &Path) -> (i32, String, String) {
    run_cli(["convert".as_ref(), dir.as_os_str(), "-o".as_ref(), out.as_os_str()])
}

#[test]
fn hf_folder_reproduces_every_llama2c_reference_case() {
    let out = scratch_dir("hf").join("stories260K-hf.mlm");
    let (code, _, err) = convert(&hf_dir(), &out);
    assert_eq!(code, 0, "convert failed: {err}");
    let file = ModelFile::read(&out).unwrap();
    let model = file.parse(false).unwrap();
    assert_reproduces_reference_cases(&model);
}

/// A copy of the stories260K HF folder with `edit` applied, converted: (exit code, stderr).
fn convert_damaged(name: &str, edit: impl FnOnce(&Path)) -> (i32, String) {
    let dir = scratch_dir("hf-damaged").join(name);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    for entry in fs::read_dir(hf_dir()).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    edit(&dir);
    let out = dir.with_extension("mlm");
    let (code, _, err) = convert(&dir, &out);
    assert!(!out.exists() || code == 0, "{name}: a failed convert left {}", out.display());
    (code, err)
}

fn edit_config(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("config.json");
    let mut config: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    f(&mut config);
    fs::write(&path, serde_json::to_vec(&config).unwrap()).unwrap();
}

fn assert_refused(name: &str, edit: impl FnOnce(&Path), expect: &str) {
    let (code, err) = convert_damaged(name, edit);
    assert_ne!(code, 0, "{name}: accepted");
    assert!(!err.contains("panicked"), "{name}: panicked: {err}");
    assert!(err.to_lowercase().contains(&expect.to_lowercase()), "{name}: expected {expect:?} in: {err}");
    assert_eq!(err.trim().lines().count(), 1, "{name}: not one line: {err}");
}

#[test]
fn unsupported_config_settings_are_refused_by_name() {
    assert_refused(
        "rope_scaling",
        |d| edit_config(d, |c| c["rope_scaling"] = serde_json::json!({"type": "linear", "factor": 2.0})),
        "rope_scaling",
    );
    assert_refused("attention_bias", |d| edit_config(d, |c| c["attention_bias"] = true.into()), "attention_bias");
    assert_refused("hidden_act", |d| edit_config(d, |c| c["hidden_act"] = "gelu".into()), "hidden_act");
    assert_refused(
        "architecture",
        |d| edit_config(d, |c| c["architectures"] = serde_json::json!(["MistralForCausalLM"])),
        "MistralForCausalLM",
    );
}

#[test]
fn damaged_safetensors_are_refused() {
    let st = |d: &Path| d.join("model.safetensors");
    // The header length (first 8 bytes, u64 LE) points past the end of the file.
    assert_refused(
        "header_past_end",
        |d| {
            let mut bytes = fs::read(st(d)).unwrap();
            bytes[..8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
            fs::write(st(d), bytes).unwrap();
        },
        "header",
    );
    // The data area is cut short: tensors end past the file.
    assert_refused(
        "truncated",
        |d| {
            let bytes = fs::read(st(d)).unwrap();
            fs::write(st(d), &bytes[..bytes.len() - 100]).unwrap();
        },
        "safetensors",
    );
    // No weights at all.
    assert_refused("missing", |d| fs::remove_file(st(d)).unwrap(), "model.safetensors");
    // The header's JSON is not JSON.
    assert_refused(
        "bad_json",
        |d| {
            let mut bytes = fs::read(st(d)).unwrap();
            bytes[8] = b'!';
            fs::write(st(d), bytes).unwrap();
        },
        "safetensors",
    );
}
