//! The GGUF reader (`host-tools/src/gguf.rs`): every tensor of
//! tiny-random-llama, in every block type llama.cpp's quantizer wrote (F16,
//! Q8_0, Q4_0, Q4_1, Q4_K_M, Q5_K_M, Q6_K and F32), dequantizes to the exact
//! dequantization's statistics in `../shared/importers/refs/
//! tiny-random-llama.dequant.json`, and damaged headers get specific errors.

use std::collections::BTreeMap;

use microlm_cli::gguf;
use microlm_tests::shared_file;
use serde::Deserialize;

#[derive(Deserialize)]
struct Stats {
    #[serde(rename = "type")]
    ty: String,
    ne: Vec<u64>,
    sum: f64,
    sumsq: f64,
    maxabs: f64,
    first16: Vec<f64>,
}

#[derive(Deserialize)]
struct Reference {
    files: BTreeMap<String, BTreeMap<String, Stats>>,
}

#[test]
fn every_block_type_dequantizes_to_the_reference_statistics() {
    let path = shared_file("importers/refs/tiny-random-llama.dequant.json");
    let reference: Reference = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    assert!(reference.files.len() >= 8);
    let mut types = std::collections::BTreeSet::new();
    for (file, tensors) in &reference.files {
        let bytes = std::fs::read(shared_file(&format!("importers/tiny-random-llama/{file}"))).unwrap();
        let g = gguf::parse(&bytes).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(g.tensors.len(), tensors.len(), "{file}: tensor count");
        for (name, want) in tensors {
            let t = g.tensor(name).unwrap_or_else(|| panic!("{file}: no tensor {name}"));
            assert_eq!(t.type_name, want.ty, "{file} {name}: type");
            assert_eq!(t.dims, want.ne, "{file} {name}: shape");
            types.insert(want.ty.clone());
            let v = gguf::dequantize(t.ty, g.data(t), t.n_values()).unwrap();
            assert_eq!(v.len() as u64, want.ne.iter().product::<u64>());
            // The first values are exact f32s (the JSON holds them as decimal f64).
            for (i, (&got, &w)) in v.iter().zip(&want.first16).enumerate() {
                assert_eq!(got, w as f32, "{file} {name}: value {i}");
            }
            let sum: f64 = v.iter().map(|&x| f64::from(x)).sum();
            let sumsq: f64 = v.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
            let maxabs = v.iter().fold(0f64, |m, &x| m.max(f64::from(x).abs()));
            // Sums differ from the reference only by the order of f64 additions.
            let tol = 1e-9 * want.sumsq.max(1.0) * (v.len() as f64).sqrt();
            assert!((sum - want.sum).abs() <= tol.max(1e-6), "{file} {name}: sum {sum} vs {}", want.sum);
            assert!((sumsq - want.sumsq).abs() <= tol.max(1e-6), "{file} {name}: sumsq {sumsq} vs {}", want.sumsq);
            assert_eq!(maxabs as f32, want.maxabs as f32, "{file} {name}: maxabs");
        }
    }
    for ty in ["F32", "F16", "Q8_0", "Q4_0", "Q4_1", "Q4_K", "Q5_K", "Q6_K"] {
        assert!(types.contains(ty), "no {ty} tensor was checked (checked: {types:?})");
    }
}

/// A valid GGUF header cut at every length up to 4 KiB: always an error, never a panic.
#[test]
fn every_truncation_of_a_header_is_an_error() {
    let bytes = std::fs::read(shared_file("importers/tiny-random-llama/tiny-random-llama-Q4_K_M.gguf")).unwrap();
    for n in 0..4096.min(bytes.len()) {
        assert!(gguf::parse(&bytes[..n]).is_err(), "a header cut at {n} bytes parsed");
    }
}

#[test]
fn hostile_counts_and_alignment_are_refused() {
    let good = std::fs::read(shared_file("importers/tiny-random-llama/tiny-random-llama-Q8_0.gguf")).unwrap();
    assert!(gguf::parse(&good).is_ok());
    // Tensor count (offset 8) and metadata count (offset 16) far beyond the file.
    for (at, what) in [(8, "tensor count"), (16, "metadata count")] {
        let mut bad = good.clone();
        bad[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        let e = gguf::parse(&bad).expect_err(what).to_string();
        assert!(!e.is_empty(), "{what}: empty error");
    }
    // Bad magic and version.
    let mut bad = good.clone();
    bad[0] = b'X';
    assert!(gguf::parse(&bad).is_err());
    let mut bad = good.clone();
    bad[4..8].copy_from_slice(&99u32.to_le_bytes());
    assert!(gguf::parse(&bad).is_err());
}
