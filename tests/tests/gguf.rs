//! The GGUF reader (`host-tools/src/gguf.rs`): every tensor of
//! tiny-random-llama, in every block type llama.cpp's quantizer wrote (F16,
//! Q8_0, Q4_0, Q4_1, Q4_K_M, Q5_K_M, Q6_K and F32), dequantizes to the exact
//! dequantization's statistics in `../shared/importers/refs/
//! tiny-random-llama.dequant.json`, and damaged headers get specific errors.
//!
//! The hostile-input tests follow the classes of the 2024 GGUF advisories
//! (Databricks' report on ggml's `gguf_init_from_file`, fixed in ggml PR #709;
//! later overflow fixes in llama.cpp PR #19856): each writes a valid file
//! with `microlm_tests::gguf_writer`, corrupts one field, and expects the
//! reader's one-line message for that class.

use std::collections::BTreeMap;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use microlm_cli::gguf;
use microlm_tests::gguf_writer::{self as gw, gguf_str, ty, GgufWriter};
use microlm_tests::{cli, scratch_dir, shared_file, wait_bounded};
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

/// `bytes` are refused by the reader with a one-line error containing `expect`.
#[track_caller]
fn refused(bytes: &[u8], expect: &str) {
    let e = format!("{:#}", gguf::parse(bytes).expect_err(expect));
    assert!(e.contains(expect), "expected {expect:?} in: {e}");
    assert_eq!(e.lines().count(), 1, "not one line: {e}");
}

/// The valid test file with tensor `a`'s info replaced (raw `n_dims`, `dims`, type, offset).
fn with_a(n_dims: u32, dims: &[u64], tensor_type: u32, offset: u64) -> Vec<u8> {
    let mut w = gw::valid_metadata();
    w.tensor_raw(b"a", n_dims, dims, tensor_type, offset).tensor("b", &[32], 8, 32);
    w.data = gw::valid_tensors().data;
    w.build()
}

/// The valid test file with tensor `b` at `offset`.
fn with_b_at(offset: u64) -> Vec<u8> {
    let mut w = gw::valid_metadata();
    w.tensor("a", &[4, 2], 0, 0).tensor("b", &[32], 8, offset);
    w.data = gw::valid_tensors().data;
    w.build()
}

#[test]
fn hostile_counts_and_alignment_are_refused() {
    let good = std::fs::read(shared_file("importers/tiny-random-llama/tiny-random-llama-Q8_0.gguf")).unwrap();
    assert!(gguf::parse(&good).is_ok());
    let n = good.len();
    // Tensor count (offset 8) and metadata count (offset 16) far beyond the file.
    let mut bad = good.clone();
    bad[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    refused(&bad, &format!("GGUF: tensor count {} cannot fit in a {n}-byte file", u64::MAX));
    let mut bad = good.clone();
    bad[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
    refused(&bad, &format!("GGUF: metadata count {} cannot fit in a {n}-byte file", u64::MAX));
    // Counts whose product with the entry size overflows u64.
    let mut bad = good.clone();
    bad[16..24].copy_from_slice(&(u64::MAX / 13 + 1).to_le_bytes());
    refused(&bad, &format!("metadata count {} cannot fit", u64::MAX / 13 + 1));
    // One entry more than written: the next read runs out of file.
    let mut w = gw::valid_metadata();
    w.alignment = 1;
    w.kv_count = Some(5);
    let file = w.build();
    refused(&file, &format!("GGUF: metadata key needs 8 bytes at offset {}, the file ends first", file.len()));
    let mut w = gw::valid_metadata();
    w.alignment = 1;
    w.tensor_count = Some(1);
    let file = w.build();
    refused(&file, &format!("GGUF: tensor name needs 8 bytes at offset {}, the file ends first", file.len()));
    // Bad magic and version.
    let mut bad = good.clone();
    bad[0] = b'X';
    refused(&bad, "not a GGUF file (magic is not \"GGUF\")");
    for version in [0u32, 1, 4, 99, 3 << 24] {
        let mut bad = good.clone();
        bad[4..8].copy_from_slice(&version.to_le_bytes());
        refused(&bad, &format!("GGUF version {version} is not supported (2 and 3 are)"));
    }
}

/// The writer's file parses and its two tensors dequantize exactly, so each
/// refusal below comes from the one field a test corrupts; every truncation
/// of it is refused.
#[test]
fn the_written_test_file_is_valid_and_every_truncation_is_refused() {
    let file = gw::valid_tensors().build();
    let g = gguf::parse(&file).unwrap();
    assert_eq!((g.version, g.alignment, g.kv.len(), g.tensors.len()), (3, 32, 4, 2));
    assert_eq!(g.data_offset % 32, 0);
    assert_eq!(g.data_offset + 66, file.len());
    assert!(matches!(g.get("tokenizer.ggml.tokens"), Some(gguf::Value::Array(a)) if a.len() == 3));
    let (a, b) = (g.tensor("a").unwrap(), g.tensor("b").unwrap());
    assert_eq!((a.type_name, a.dims.as_slice(), a.start, a.len), ("F32", &[4u64, 2][..], g.data_offset, 32));
    assert_eq!((b.type_name, b.dims.as_slice(), b.start, b.len), ("Q8_0", &[32u64][..], g.data_offset + 32, 34));
    assert_eq!(gguf::dequantize(a.ty, g.data(a), a.n_values()).unwrap(), gw::a_values());
    assert_eq!(gguf::dequantize(b.ty, g.data(b), b.n_values()).unwrap(), gw::b_values());
    // Version 2 has the same layout; four dimensions are allowed.
    let mut w = gw::valid_tensors();
    w.version = 2;
    assert_eq!(gguf::parse(&w.build()).unwrap().version, 2);
    assert_eq!(gguf::parse(&with_a(4, &[4, 1, 2, 1], 0, 0)).unwrap().tensors[0].n_values(), 8);
    for n in 0..file.len() {
        let e = gguf::parse(&file[..n]).expect_err("a truncated file parsed");
        assert_eq!(format!("{e:#}").lines().count(), 1);
    }
}

#[test]
fn string_lengths_that_overflow_or_exceed_the_file_are_refused() {
    // The first metadata key's length (offset 24) near u64::MAX, and one byte past the file.
    let file = gw::valid_tensors().build();
    let left = file.len() - 32;
    for len in [u64::MAX, u64::MAX - 7, left as u64 + 1] {
        let mut bad = file.clone();
        bad[24..32].copy_from_slice(&len.to_le_bytes());
        refused(&bad, &format!("GGUF: metadata key string length {len} exceeds the {left} bytes left in the file"));
    }
    // A string value, a string inside an array, and a tensor name.
    let mut w = gw::valid_tensors();
    w.kv_raw(b"general.name", ty::STRING, &u64::MAX.to_le_bytes());
    refused(&w.build(), &format!("GGUF: general.name string length {} exceeds the", u64::MAX));
    let mut w = gw::valid_tensors();
    let mut elems = gguf_str(b"a");
    elems.extend((u64::MAX - 3).to_le_bytes());
    w.kv_array("test.strings", ty::STRING, 2, &elems);
    refused(&w.build(), &format!("GGUF: test.strings string length {} exceeds the", u64::MAX - 3));
    let mut w = GgufWriter::default();
    w.tensor("a", &[8], 0, 0);
    w.data = vec![0; 32];
    let mut bad = w.build();
    bad[24..32].copy_from_slice(&(1u64 << 62).to_le_bytes());
    refused(&bad, &format!("GGUF: tensor name string length {} exceeds the", 1u64 << 62));
}

#[test]
fn array_lengths_that_overflow_or_exceed_the_file_are_refused() {
    // count × element size overflows u64.
    for (elem, count) in [(ty::U32, u64::MAX / 4 + 1), (ty::U64, u64::MAX), (ty::STRING, 1 << 61), (ty::U16, 1 << 63)] {
        let mut w = gw::valid_tensors();
        w.kv_array("test.array", elem, count, &[]);
        refused(&w.build(), &format!("GGUF: test.array: array of {count} elements cannot fit in the"));
    }
    // More elements than the reader holds, in one array or over two: refused before reading them.
    let max = gguf::MAX_ARRAY_ELEMENTS as usize;
    let mut w = gw::valid_tensors();
    w.kv_array("test.big", ty::U8, max as u64 + 1, &vec![0; max + 1]);
    refused(&w.build(), "GGUF: test.big: metadata arrays hold more than 16777216 elements in total");
    let mut w = gw::valid_tensors();
    w.kv_array("test.half", ty::U8, max as u64 / 2, &vec![0; max / 2]);
    w.kv_array("test.rest", ty::U8, max as u64 / 2, &vec![0; max / 2]);
    assert!(gguf::parse(&w.build())
        .is_err_and(|e| e.to_string() == "GGUF: test.rest: metadata arrays hold more than 16777216 elements in total"));
    // One element more than the file holds (no padding after it).
    let mut w = GgufWriter::default();
    w.alignment = 1;
    w.kv_array("test.array", ty::U8, 5, &[1, 2, 3, 4]);
    refused(&w.build(), "GGUF: test.array: array of 5 elements cannot fit in the 4 bytes left in the file");
    let mut w = GgufWriter::default();
    w.alignment = 1;
    w.kv_array("test.array", ty::STRING, 3, &gguf_str(b"abc"));
    refused(&w.build(), "GGUF: test.array: array of 3 elements cannot fit in the 11 bytes left in the file");
}

#[test]
fn more_than_four_dimensions_are_refused() {
    refused(&with_a(5, &[4, 2, 1, 1, 1], 0, 0), "GGUF: tensor a has 5 dimensions (1..=4 allowed)");
    // The count is checked before any dimension is read.
    refused(&with_a(u32::MAX, &[], 0, 0), &format!("GGUF: tensor a has {} dimensions (1..=4 allowed)", u32::MAX));
    refused(&with_a(0, &[], 0, 0), "GGUF: tensor a has 0 dimensions (1..=4 allowed)");
}

#[test]
fn zero_and_overflowing_dimensions_are_refused() {
    refused(&with_a(2, &[4, 0], 0, 0), "GGUF: tensor a has a zero dimension [4, 0]");
    refused(&with_a(2, &[u64::MAX, 2], 0, 0), &format!("GGUF: tensor a: dimensions [{}, 2] overflow", u64::MAX));
    refused(
        &with_a(4, &[1 << 16, 1 << 16, 1 << 16, 1 << 16], 0, 0),
        "GGUF: tensor a: dimensions [65536, 65536, 65536, 65536] overflow",
    );
    // 2^63 values fit in u64 but not in this file (nor in memory): refused before any size arithmetic.
    refused(&with_a(2, &[1 << 32, 1 << 31], 0, 0), &format!("GGUF: tensor a: {} values cannot be stored", 1u64 << 63));
    // Fits the value bound (8 per file byte) but not the data section: 4 bytes per F32 value.
    refused(&with_a(1, &[1024], 0, 0), "GGUF: tensor a: 4096 bytes of data at offset 0 run past the end of the");
}

#[test]
fn row_lengths_that_are_not_a_multiple_of_the_block_size_are_refused() {
    refused(&with_a(2, &[16, 2], 8, 0), "GGUF: tensor a: row length 16 is not a multiple of the Q8_0 block size 32");
    refused(&with_a(1, &[32], 12, 0), "GGUF: tensor a: row length 32 is not a multiple of the Q4_K block size 256");
    refused(&with_a(2, &[33, 32], 2, 0), "GGUF: tensor a: row length 33 is not a multiple of the Q4_0 block size 32");
}

#[test]
fn unknown_tensor_types_are_refused() {
    // 4 and 5 were Q4_2 and Q4_3, removed from ggml; 39 is past every type this reader knows.
    for t in [4u32, 5, 39, u32::MAX] {
        refused(&with_a(2, &[4, 2], t, 0), &format!("GGUF: tensor a has unknown type id {t}"));
    }
    // dequantize checks the type and the byte count before allocating.
    let e = gguf::dequantize(4, &[0; 32], 8).unwrap_err().to_string();
    assert_eq!(e, "GGUF: unknown tensor type id 4");
    let e = gguf::dequantize(10, &[0; 84], 256).unwrap_err().to_string();
    assert_eq!(e, "GGUF: tensor type Q2_K cannot be imported");
    let e = gguf::dequantize(8, &[0; 33], 32).unwrap_err().to_string();
    assert_eq!(e, "GGUF: 33 bytes of Q8_0 do not hold 32 values (34 bytes per 32)");
    let e = gguf::dequantize(0, &[0; 32], usize::MAX).unwrap_err().to_string();
    assert_eq!(e, format!("GGUF: 32 bytes of F32 do not hold {} values (4 bytes per 1)", usize::MAX));
    let e = gguf::dequantize(8, &[0; 34], 31).unwrap_err().to_string();
    assert_eq!(e, "GGUF: 34 bytes of Q8_0 do not hold 31 values (34 bytes per 32)");
}

#[test]
fn unknown_metadata_value_types_are_refused() {
    for t in [13u32, 255, u32::MAX] {
        let mut w = gw::valid_tensors();
        w.kv_raw(b"test.value", t, &[0; 8]);
        refused(&w.build(), &format!("GGUF: test.value: unknown metadata value type {t}"));
        let mut w = gw::valid_tensors();
        w.kv_array("test.array", t, 1, &[0; 8]);
        refused(&w.build(), &format!("GGUF: test.array: unknown array element type {t}"));
    }
    let mut w = gw::valid_tensors();
    w.kv_raw(b"test.flag", ty::BOOL, &[2]);
    refused(&w.build(), "GGUF: test.flag: bool value 2 is neither 0 nor 1");
}

/// A file whose `general.alignment` has `value_type` and `value`, and whose tensors use `align`.
fn with_alignment(value_type: u32, value: &[u8], align: usize) -> Vec<u8> {
    let mut w = GgufWriter::default();
    w.kv_str("general.architecture", "llama").kv_raw(b"general.alignment", value_type, value);
    w.tensor("a", &[8], 0, 0).tensor("b", &[8], 0, align.max(32) as u64);
    w.alignment = align;
    w.data = vec![0; align.max(32) + 32];
    w.build()
}

#[test]
fn bad_general_alignment_is_refused() {
    for a in [0u32, 3, 48, 1 << 17, 1 << 31] {
        refused(
            &with_alignment(ty::U32, &a.to_le_bytes(), 32),
            &format!("GGUF: general.alignment {a} must be a power of two in 1..=65536"),
        );
    }
    // The spec types it uint32: a u64 2^40, a string, a signed integer or an array is refused by type.
    let mut array = ty::U32.to_le_bytes().to_vec();
    array.extend(1u64.to_le_bytes());
    array.extend(32u32.to_le_bytes());
    for (t, v) in [
        (ty::U64, (1u64 << 40).to_le_bytes().to_vec()),
        (ty::U64, 32u64.to_le_bytes().to_vec()),
        (ty::STRING, gguf_str(b"32")),
        (ty::I32, 32i32.to_le_bytes().to_vec()),
        (ty::ARRAY, array),
    ] {
        refused(
            &with_alignment(t, &v, 32),
            &format!("GGUF: general.alignment has value type {t}, the spec requires uint32 (type 4)"),
        );
    }
    // Valid alignments: the data section starts on them; an offset not on them is refused.
    for a in [1usize, 64, 4096] {
        let g =
            gguf::parse(&with_alignment(ty::U32, &(a as u32).to_le_bytes(), a)).map(|g| (g.alignment, g.data_offset));
        let (align, at) = g.unwrap_or_else(|e| panic!("alignment {a}: {e}"));
        assert_eq!((align, at % a), (a as u64, 0));
    }
    let mut w = gw::valid_metadata();
    w.kv_u32("general.alignment", 64);
    refused(&w.build(), "GGUF: duplicate metadata key general.alignment");
    let bytes = with_alignment(ty::U32, &64u32.to_le_bytes(), 64);
    let g = gguf::parse(&bytes).unwrap();
    let mut w = GgufWriter::default();
    w.kv_str("general.architecture", "llama").kv_u32("general.alignment", 64);
    w.tensor("a", &[8], 0, 0).tensor("b", &[8], 0, 32);
    w.alignment = 64;
    w.data = vec![0; 96];
    refused(&w.build(), "GGUF: tensor b: offset 32 is not aligned to 64");
    assert_eq!(g.tensors[1].start, g.data_offset + 64);
}

#[test]
fn nested_arrays_are_refused_not_bounded() {
    // An array of arrays of u32: refused at the outer array's element type.
    let mut inner = ty::U32.to_le_bytes().to_vec();
    inner.extend(1u64.to_le_bytes());
    inner.extend(7u32.to_le_bytes());
    let mut w = gw::valid_tensors();
    w.kv_array("test.nested", ty::ARRAY, 1, &inner);
    refused(&w.build(), "GGUF: test.nested: nested arrays (an array of arrays) are refused");
    // Also when the outer count is 0 or huge: the element type is checked first.
    for count in [0, u64::MAX] {
        let mut w = gw::valid_tensors();
        w.kv_array("test.nested", ty::ARRAY, count, &[]);
        refused(&w.build(), "GGUF: test.nested: nested arrays (an array of arrays) are refused");
    }
}

#[test]
fn duplicate_keys_tensor_names_and_bad_keys_are_refused() {
    let mut w = gw::valid_tensors();
    w.kv_str("general.architecture", "gpt2");
    refused(&w.build(), "GGUF: duplicate metadata key general.architecture");
    let mut w = gw::valid_metadata();
    w.tensor("a", &[4, 2], 0, 0).tensor("a", &[32], 8, 32);
    w.data = gw::valid_tensors().data;
    refused(&w.build(), "GGUF: duplicate tensor name a");
    let mut w = gw::valid_tensors();
    w.kv_raw(b"", ty::U8, &[0]);
    refused(&w.build(), "GGUF: metadata key 4 is empty");
    let mut w = gw::valid_tensors();
    w.kv_raw(b"bad\xff", ty::U8, &[0]);
    refused(&w.build(), "GGUF: metadata key 4 is not UTF-8");
    // A newline in a key or name is shown escaped: the error stays one line.
    let mut w = gw::valid_tensors();
    w.kv_raw(b"bad\nkey", 99, &[0]);
    refused(&w.build(), "GGUF: bad\\nkey: unknown metadata value type 99");
    let mut w = gw::valid_metadata();
    w.tensor("x\ny", &[8], 99, 0);
    refused(&w.build(), "GGUF: tensor x\\ny has unknown type id 99");
    let mut w = gw::valid_metadata();
    w.tensor_raw(b"\xc3", 1, &[8], 0, 0);
    w.data = vec![0; 32];
    refused(&w.build(), "GGUF: tensor name 0 is not UTF-8");
}

#[test]
fn tensor_data_out_of_range_misaligned_or_overlapping_is_refused() {
    let good = gw::valid_tensors().build();
    let (n, d) = (good.len(), gguf::parse(&good).unwrap().data_offset);
    // Offsets past the end, including one whose sum with the data section start overflows.
    for offset in [u64::MAX - 31, 1 << 40, 4096, 96] {
        refused(
            &with_b_at(offset),
            &format!("GGUF: tensor b: data offset {offset} lies past the end of the {}-byte file", n),
        );
    }
    refused(&with_b_at(1), "GGUF: tensor b: offset 1 is not aligned to 32");
    refused(&with_b_at(16), "GGUF: tensor b: offset 16 is not aligned to 32");
    // The same bytes for both, and a partial overlap.
    refused(&with_b_at(0), &format!("GGUF: tensors a (bytes {d}..{}) and b (from byte {d}) overlap", d + 32));
    refused(
        &with_a(1, &[16], 0, 0),
        &format!("GGUF: tensors a (bytes {d}..{}) and b (from byte {}) overlap", d + 64, d + 32),
    );
    // Data cut short: the last tensor extends past the file.
    refused(
        &good[..n - 1],
        &format!("GGUF: tensor b: 34 bytes of data at offset 32 run past the end of the {}-byte file", n - 1),
    );
    // Inside the file, but starting in the last block: runs past the end.
    refused(
        &with_b_at(64),
        &format!("GGUF: tensor b: 34 bytes of data at offset 64 run past the end of the {n}-byte file"),
    );
}

/// `microlm ARGS` (stdout and stderr piped), stopped after 60 s: (exit code, stderr).
fn run_bounded(args: &[&std::ffi::OsStr]) -> (i32, String) {
    let mut child = Command::new(cli())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run microlm");
    let mut pipe = child.stderr.take().unwrap();
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = pipe.read_to_string(&mut s);
        s
    });
    let (status, _) = wait_bounded(child, Duration::from_secs(60)).unwrap_or_else(|| panic!("{args:?}: hung"));
    (status.code().unwrap_or(-1), err.join().unwrap())
}

/// GGUF files, a directory and /dev/zero given to the commands that read
/// models: a one-line error, no panic, no hang (io.rs reads only regular
/// files, up to a limit).
#[test]
fn gguf_files_devices_and_directories_given_to_the_cli_get_one_line_errors() {
    let dir = scratch_dir("gguf-cli");
    let file = dir.join("valid.gguf");
    std::fs::write(&file, gw::valid_tensors().build()).unwrap();
    let mut cut = gw::valid_tensors().build();
    cut[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    let hostile = dir.join("hostile.gguf");
    std::fs::write(&hostile, cut).unwrap();
    let out = dir.join("out.mlm");
    let zero = std::path::Path::new("/dev/zero");
    let cases: Vec<(Vec<&std::ffi::OsStr>, String)> = vec![
        (vec!["inspect".as_ref(), file.as_os_str()], format!("{} is not a valid model file", file.display())),
        (vec!["inspect".as_ref(), hostile.as_os_str()], format!("{} is not a valid model file", hostile.display())),
        (vec!["inspect".as_ref(), zero.as_os_str()], "/dev/zero is not a regular file".into()),
        (vec!["inspect".as_ref(), dir.as_os_str()], format!("{} is not a regular file", dir.display())),
        (
            vec![
                "convert".as_ref(),
                zero.as_os_str(),
                "--tokenizer".as_ref(),
                zero.as_os_str(),
                "-o".as_ref(),
                out.as_os_str(),
            ],
            "/dev/zero is not a regular file".into(),
        ),
        (vec!["convert".as_ref(), file.as_os_str(), "-o".as_ref(), out.as_os_str()], String::new()),
        (vec!["convert".as_ref(), hostile.as_os_str(), "-o".as_ref(), out.as_os_str()], String::new()),
    ];
    for (args, expect) in cases {
        let (code, err) = run_bounded(&args);
        assert_ne!(code, 0, "{args:?}: accepted");
        assert!(!err.contains("panicked"), "{args:?}: panicked: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: not one line: {err}");
        assert!(err.contains(&expect), "{args:?}: expected {expect:?} in: {err}");
        assert!(!out.exists(), "{args:?}: left {}", out.display());
    }
}
