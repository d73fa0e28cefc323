//! Hostile model files: truncations, bit flips, extreme values and lying
//! headers, each with the CRC left stale and recomputed, so the structural
//! checks (not only the checksum) are what stand. Every case must end in an
//! error value or a model that runs, never a panic.

use microlm::format::{Header, TensorEntry, PREAMBLE_LEN};
use microlm::{Checksum, FormatError, KvDtype, Model, Session};
use microlm_tests::{arena, converted};

/// Copies bytes into 4-byte aligned storage, as a board's flash or the CLI holds them.
fn aligned(bytes: &[u8]) -> (Vec<u32>, usize) {
    let mut words = vec![0u32; bytes.len().div_ceil(4)];
    bytemuck::cast_slice_mut::<u32, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
    (words, bytes.len())
}

fn with_crc(mut bytes: Vec<u8>) -> Vec<u8> {
    if bytes.len() >= 4 {
        let body = bytes.len() - 4;
        let crc = crc32fast::hash(&bytes[..body]);
        bytes[body..].copy_from_slice(&crc.to_le_bytes());
    }
    bytes
}

/// Parses (both with and without the CRC check) and, if accepted, runs a forward step.
fn exercise(bytes: &[u8]) -> Result<(), FormatError> {
    let (words, len) = aligned(bytes);
    let data = &bytemuck::cast_slice::<u32, u8>(&words)[..len];
    let verified = Model::parse(data);
    let model = match Model::parse_with(data, Checksum::Skip) {
        Ok(m) => m,
        Err(e) => {
            assert!(verified.is_err(), "CRC-checked parse accepted what the structural checks refused");
            return Err(e);
        }
    };
    let ctx = model.config().seq_len.min(4);
    let plan = model.plan(ctx, KvDtype::F32).expect("plan of an accepted model");
    let mut mem = arena(plan.total);
    let mut session = Session::new(&model, bytemuck::cast_slice_mut(&mut mem), ctx, KvDtype::F32).expect("session");
    session.forward(model.config().bos_id, 0).expect("forward of an accepted model");
    verified.map(|_| ())
}

fn original() -> Vec<u8> {
    std::fs::read(converted("f32")).unwrap()
}

/// The real stories260K files the suites run over: f32, q8_0, q4_0 and q4_16 weights.
fn originals() -> Vec<(&'static str, Vec<u8>)> {
    ["f32", "q8_0", "q4_0", "q4_16"].into_iter().map(|d| (d, std::fs::read(converted(d)).unwrap())).collect()
}

/// End of the header region: preamble + header length.
fn header_end(bytes: &[u8]) -> usize {
    PREAMBLE_LEN + u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize
}

#[test]
fn the_original_files_are_accepted() {
    for (dtype, bytes) in originals() {
        assert_eq!(exercise(&bytes), Ok(()), "{dtype}");
    }
}

#[test]
fn truncation_at_every_header_offset_and_hundreds_beyond() {
    for (dtype, bytes) in originals() {
        let end = header_end(&bytes) + 64;
        let beyond = (0..300).map(|i| end + i * (bytes.len() - end) / 300);
        for cut in (0..end).chain(beyond) {
            for candidate in [bytes[..cut].to_vec(), with_crc(bytes[..cut].to_vec())] {
                assert!(exercise(&candidate).is_err(), "{dtype} file cut at {cut} bytes was accepted");
            }
        }
    }
}

#[test]
fn every_bit_flip_in_preamble_and_header() {
    for (dtype, bytes) in originals() {
        let end = header_end(&bytes);
        let mut accepted = 0;
        for at in 0..end {
            for bit in 0..8 {
                let mut flipped = bytes.clone();
                flipped[at] ^= 1 << bit;
                // Stale CRC: always refused.
                assert!(exercise(&flipped).is_err(), "{dtype}: flip {at}:{bit} passed a stale CRC");
                // Recomputed CRC: the structure alone must refuse it, or it must still run.
                if exercise(&with_crc(flipped)).is_ok() {
                    accepted += 1;
                }
            }
        }
        // Only flips that keep the header meaningful (name bytes, float low bits) may pass.
        println!("{dtype}: {accepted} of {} header bit flips with a fixed CRC still describe a valid model", end * 8);
    }
}

#[test]
fn extreme_values_written_over_the_header() {
    for (_, bytes) in originals() {
        extreme_values(&bytes);
    }
}

fn extreme_values(bytes: &[u8]) {
    let end = header_end(bytes);
    let extremes: [u64; 8] = [0, 1, 0x7fff_ffff, 0xffff_ffff, 0x8000_0000, 0xff, u64::MAX, 0x8000_0000_0000_0000];
    for at in 0..end {
        for v in extremes {
            for width in [4usize, 8] {
                let mut b = bytes.to_vec();
                let n = width.min(b.len() - at);
                b[at..at + n].copy_from_slice(&v.to_le_bytes()[..n]);
                let _ = exercise(&b);
                let _ = exercise(&with_crc(b));
            }
        }
    }
}

/// Re-encodes a file with a lying header (fields changed after decoding).
fn rewrite(bytes: &[u8], edit: impl FnOnce(&mut Header<'_>, &mut Vec<TensorEntry>)) -> Vec<u8> {
    let end = header_end(bytes);
    let (mut header, mut rest): (Header<'_>, &[u8]) = postcard::take_from_bytes(&bytes[PREAMBLE_LEN..end]).unwrap();
    let mut entries = Vec::new();
    for _ in 0..header.tensor_count {
        let (e, tail): (TensorEntry, &[u8]) = postcard::take_from_bytes(rest).unwrap();
        entries.push(e);
        rest = tail;
    }
    // What follows the table (version 2: the source format) stays as it was.
    let after_table = rest.to_vec();
    edit(&mut header, &mut entries);
    let mut encoded = postcard::to_allocvec(&header).unwrap();
    for e in &entries {
        encoded.extend(postcard::to_allocvec(e).unwrap());
    }
    encoded.extend(&after_table);
    // Keep every later byte where it was: pad a shorter header, or let a longer one overlap (itself hostile).
    let mut out = bytes.to_vec();
    let room = end - PREAMBLE_LEN;
    if encoded.len() <= room {
        encoded.resize(room, 0);
        out[8..12].copy_from_slice(&(header_end(bytes) as u32 - PREAMBLE_LEN as u32).to_le_bytes());
    } else {
        out[8..12].copy_from_slice(&(encoded.len() as u32).to_le_bytes());
    }
    let stop = (PREAMBLE_LEN + encoded.len()).min(out.len());
    out[PREAMBLE_LEN..stop].copy_from_slice(&encoded[..stop - PREAMBLE_LEN]);
    with_crc(out)
}

#[test]
fn lying_headers_get_specific_errors() {
    let bytes = original();
    let expect = |edit: &dyn Fn(&mut Header<'_>, &mut Vec<TensorEntry>)| exercise(&rewrite(&bytes, |h, e| edit(h, e)));
    assert_eq!(expect(&|h, _| h.n_heads = 7), Err(FormatError::BadHeads { n_heads: 7, n_kv_heads: 4, dim: 64 }));
    assert_eq!(expect(&|h, _| h.n_kv_heads = 3), Err(FormatError::BadHeads { n_heads: 8, n_kv_heads: 3, dim: 64 }));
    assert_eq!(
        expect(&|h, _| h.vocab_size = 0),
        Err(FormatError::BadDimension { field: microlm::error::Field::VocabSize })
    );
    assert_eq!(expect(&|h, _| h.seq_len = 0), Err(FormatError::BadDimension { field: microlm::error::Field::SeqLen }));
    assert_eq!(expect(&|h, _| h.dim = u32::MAX), Err(FormatError::BadDimension { field: microlm::error::Field::Dim }));
    assert_eq!(
        expect(&|h, _| h.norm_eps = f32::NAN),
        Err(FormatError::BadFloatParam { field: microlm::error::Field::NormEps })
    );
    assert_eq!(expect(&|h, _| h.bos_id = 512), Err(FormatError::BadSpecialToken { id: 512, vocab_size: 512 }));
    assert_eq!(
        expect(&|h, _| h.tensor_count = u32::MAX),
        Err(FormatError::TensorCount { expected: 47, found: u32::MAX })
    );
    assert_eq!(expect(&|h, _| h.tokenizer.offset = u64::MAX), Err(FormatError::TokenizerOutOfBounds));
    assert_eq!(expect(&|h, _| h.tokenizer.length = u64::MAX), Err(FormatError::TokenizerOutOfBounds));
    assert_eq!(expect(&|h, _| h.tokenizer.length -= 4), Err(FormatError::TokenizerTables));
    assert_eq!(expect(&|h, _| h.tokenizer.max_piece_len = 1), Err(FormatError::TokenizerPiece { id: 0 }));
    assert_eq!(expect(&|_, e| e[3].offset += 32), Err(FormatError::TensorOffset { index: 3 }));
    assert_eq!(expect(&|_, e| e[3].length += 4), Err(FormatError::TensorLength { index: 3 }));
    assert_eq!(expect(&|_, e| e[5].rows = 0), Err(FormatError::TensorShape { index: 5 }));
    assert_eq!(expect(&|_, e| e.swap(2, 3)), Err(FormatError::TensorOrder { index: 2 }));
    assert_eq!(expect(&|_, e| e[1].dtype = microlm::DType::F16), Err(FormatError::TensorDtype { index: 1 }));
    // The first wq sets the kind's dtype, so its f32-sized length no longer fits...
    assert_eq!(expect(&|_, e| e[2].dtype = microlm::DType::F16), Err(FormatError::TensorLength { index: 2 }));
    // ...and a later wq that disagrees with the first is named as such.
    assert_eq!(expect(&|_, e| e[11].dtype = microlm::DType::F16), Err(FormatError::TensorDtype { index: 11 }));
}

#[test]
fn corrupt_files_through_the_cli_exit_1_with_one_line() {
    let bytes = original();
    let end = header_end(&bytes);
    let dir = microlm_tests::scratch_dir("hostile-cli");
    let mut cases: Vec<Vec<u8>> = Vec::new();
    for cut in [0, 3, 15, 16, 40, end / 2, end, end + 100, bytes.len() / 2, bytes.len() - 5] {
        cases.push(with_crc(bytes[..cut].to_vec()));
    }
    for at in (0..end).step_by(end / 24) {
        let mut b = bytes.clone();
        b[at..at + 4].copy_from_slice(&0xffff_ffffu32.to_le_bytes());
        cases.push(with_crc(b));
    }
    let mut refused = 0;
    for (i, case) in cases.iter().enumerate() {
        let path = dir.join(format!("case{i}.mlm"));
        std::fs::write(&path, case).unwrap();
        let valid = exercise(case).is_ok();
        for args in [vec!["inspect", "--no-checksum"], vec!["generate", "--no-checksum", "-n", "4", "-t", "0"]] {
            let mut argv: Vec<std::ffi::OsString> = vec![args[0].into(), path.clone().into()];
            argv.extend(args[1..].iter().map(Into::into));
            let (code, _, err) = microlm_tests::run_cli(&argv);
            if valid {
                assert_eq!(code, 0, "case {i} {args:?}: {err}");
            } else {
                assert_eq!(code, 1, "case {i} {args:?}: {err}");
                assert!(err.starts_with("error: ") && err.trim().lines().count() == 1, "case {i} {args:?}: {err}");
                refused += 1;
            }
        }
    }
    assert!(refused >= 2 * 20, "only {refused} refusals");
}
