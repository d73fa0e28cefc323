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

/// Rewrites `model.safetensors`' JSON header with `f` applied (the length prefix
/// follows; the data area is kept as it was).
fn edit_header(dir: &Path, f: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) {
    let path = dir.join("model.safetensors");
    let bytes = fs::read(&path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    f(&mut header);
    let json = serde_json::to_vec(&header).unwrap();
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend(json);
    out.extend_from_slice(&bytes[8 + n..]);
    fs::write(&path, out).unwrap();
}

/// Sets a tensor's field in the header.
fn set(dir: &Path, tensor: &str, field: &str, value: serde_json::Value) {
    edit_header(dir, |h| h[tensor][field] = value);
}

const NORM: &str = "model.norm.weight";

#[test]
fn safetensors_header_lengths_past_the_file_or_the_limit_are_refused() {
    let st = |d: &Path| d.join("model.safetensors");
    let write_len = |d: &Path, len: fn(u64) -> u64| {
        let mut bytes = fs::read(st(d)).unwrap();
        let n = len(bytes.len() as u64);
        bytes[..8].copy_from_slice(&n.to_le_bytes());
        fs::write(st(d), bytes).unwrap();
    };
    // One byte more than the file holds after the length prefix.
    assert_refused("header_one_past_end", |d| write_len(d, |len| len - 7), "runs past the end of the");
    assert_refused(
        "header_over_limit",
        |d| write_len(d, |_| 100_000_001),
        "JSON header of 100000001 bytes exceeds the 100000000-byte limit",
    );
    assert_refused("header_u64_max", |d| write_len(d, |_| u64::MAX), "exceeds the 100000000-byte limit");
    assert_refused(
        "too_short",
        |d| fs::write(st(d), [1u8, 2, 3]).unwrap(),
        "3 bytes, too short for a safetensors header",
    );
}

#[test]
fn safetensors_offsets_out_of_order_overlapping_or_with_gaps_are_refused() {
    // model.norm.weight holds bytes 131072..131328 of the data area, right after the embedding.
    assert_refused(
        "offsets_reversed",
        |d| set(d, NORM, "data_offsets", serde_json::json!([131328, 131072])),
        "tensor model.norm.weight has data_offsets 131328..131072 out of order",
    );
    assert_refused(
        "offsets_overlap",
        |d| set(d, NORM, "data_offsets", serde_json::json!([131068, 131324])),
        "tensor model.norm.weight (bytes 131068..131324) overlaps the previous tensor ending at 131072",
    );
    assert_refused(
        "offsets_gap",
        |d| set(d, NORM, "data_offsets", serde_json::json!([131076, 131332])),
        "gap of 4 bytes before tensor model.norm.weight",
    );
    assert_refused(
        "offsets_malformed",
        |d| set(d, NORM, "data_offsets", serde_json::json!([-1, 256])),
        "tensor model.norm.weight has malformed data_offsets",
    );
    // The data area is longer than the tensors.
    assert_refused(
        "trailing_bytes",
        |d| {
            let mut bytes = fs::read(d.join("model.safetensors")).unwrap();
            bytes.extend([0; 4]);
            fs::write(d.join("model.safetensors"), bytes).unwrap();
        },
        "tensors cover 1040128 bytes but the data area has 1040132",
    );
}

#[test]
fn safetensors_dtype_shape_and_byte_length_mismatches_are_refused() {
    assert_refused(
        "dtype_mismatch",
        |d| set(d, NORM, "dtype", "F16".into()),
        "tensor model.norm.weight: shape [64] of F16 needs 128 bytes, its data_offsets 131072..131328 hold 256",
    );
    assert_refused(
        "shape_mismatch",
        |d| set(d, NORM, "shape", serde_json::json!([65])),
        "tensor model.norm.weight: shape [65] of F32 needs 260 bytes, its data_offsets 131072..131328 hold 256",
    );
    assert_refused(
        "shape_overflow",
        |d| set(d, NORM, "shape", serde_json::json!([1u64 << 32, 1u64 << 32, 2])),
        "tensor model.norm.weight: shape [4294967296, 4294967296, 2] of F32 overflows a 64-bit byte count",
    );
    assert_refused(
        "shape_negative",
        |d| set(d, NORM, "shape", serde_json::json!([-64])),
        "tensor model.norm.weight has no shape of non-negative integers",
    );
    assert_refused(
        "dtype_unknown",
        |d| set(d, NORM, "dtype", "F99".into()),
        "tensor model.norm.weight has unknown dtype \"F99\"",
    );
    // A newline in a tensor name is shown escaped: the error stays one line.
    assert_refused(
        "name_newline",
        |d| {
            edit_header(d, |h| {
                h.insert("bad\nname".into(), serde_json::json!({"dtype": "F99"}));
            })
        },
        "tensor bad\\nname has no data_offsets",
    );
    // A dtype the layout allows but the importer does not convert.
    assert_refused(
        "dtype_unsupported",
        |d| {
            set(d, NORM, "dtype", "I32".into());
        },
        "tensor model.norm.weight has dtype I32; only F32, F16 and BF16 are supported",
    );
}
