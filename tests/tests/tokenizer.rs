//! The tokenizer against llama2.c `encode` for both shared vocabularies, and
//! decode(encode(s)) == s for arbitrary UTF-8.

use std::sync::OnceLock;

use microlm::write::{tokenizer_section, Vocab};
use microlm::{Tokenizer, TokenizerError, Utf8Stream};
use microlm_cli::llama2c::read_tokenizer;
use microlm_tests::shared;
use proptest::prelude::*;
use serde::Deserialize;

/// A tokenizer section built from a llama2.c tokenizer.bin, as `convert` stores it.
fn section(name: &str) -> &'static (Vec<u32>, usize, usize) {
    static SMALL: OnceLock<(Vec<u32>, usize, usize)> = OnceLock::new();
    static LARGE: OnceLock<(Vec<u32>, usize, usize)> = OnceLock::new();
    let cell = if name == "tok512.bin" { &SMALL } else { &LARGE };
    cell.get_or_init(|| {
        let path = shared().join("models").join(name);
        let vocab: Vocab = read_tokenizer(&std::fs::read(&path).unwrap(), &path).unwrap();
        let (bytes, max) = tokenizer_section(&vocab).unwrap();
        let mut words = vec![0u32; bytes.len().div_ceil(4)];
        bytemuck::cast_slice_mut::<u32, u8>(&mut words)[..bytes.len()].copy_from_slice(&bytes);
        (words, bytes.len(), max as usize)
    })
}

fn tokenizer(name: &str) -> Tokenizer<'static> {
    let (words, len, max) = section(name);
    let bytes: &[u8] = &bytemuck::cast_slice(words)[..*len];
    let n = u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize;
    Tokenizer::parse(bytes, n, *max, 1, 2).unwrap()
}

fn encode(tok: &Tokenizer<'_>, text: &str) -> Vec<u32> {
    let mut out = vec![0; Tokenizer::encode_capacity(text.as_bytes())];
    let n = tok.encode(text.as_bytes(), true, false, &mut out).unwrap();
    out.truncate(n);
    out
}

/// decode as a generation loop prints it, through the UTF-8 assembler.
fn decode(tok: &Tokenizer<'_>, ids: &[u32]) -> String {
    let mut text = String::new();
    let mut utf8 = Utf8Stream::new();
    for w in ids.windows(2) {
        utf8.push(tok.decode(w[0], w[1]), |s| text.push_str(s));
    }
    utf8.finish(|s| text.push_str(s));
    text
}

#[derive(Deserialize)]
struct EncodeCase {
    tokenizer: String,
    text: String,
    ids: Vec<u32>,
}

#[derive(Deserialize)]
struct EncodeReference {
    cases: Vec<EncodeCase>,
}

#[test]
fn encode_matches_llama2c_for_both_vocabularies() {
    let text = std::fs::read_to_string(shared().join("reference/tokenizer_encode.json")).unwrap();
    let reference: EncodeReference = serde_json::from_str(&text).unwrap();
    assert!(reference.cases.len() >= 14);
    for case in &reference.cases {
        let name = case.tokenizer.rsplit('/').next().unwrap();
        let got = encode(&tokenizer(name), &case.text);
        assert_eq!(got, case.ids, "{name}: {:?}", case.text);
    }
}

#[test]
fn encode_reports_a_small_output_buffer() {
    let tok = tokenizer("tok512.bin");
    let mut out = [0u32; 4];
    let err = tok.encode(b"Once upon a time", true, false, &mut out).unwrap_err();
    assert!(matches!(err, TokenizerError::OutputTooSmall { given: 4, needed } if needed > 4));
}

#[test]
fn bos_eos_and_empty_text() {
    let tok = tokenizer("tok512.bin");
    let mut out = [0u32; 4];
    assert_eq!(tok.encode(b"", true, true, &mut out), Ok(2));
    assert_eq!(&out[..2], &[1, 2]);
    assert_eq!(tok.encode(b"", false, false, &mut out), Ok(0));
}

#[test]
fn decode_strips_space_after_bos_and_maps_byte_tokens() {
    let tok = tokenizer("tok512.bin");
    let spm = tok.as_sentencepiece().unwrap();
    let once = spm.lookup(b"Once").or_else(|| spm.lookup(b" Once")).unwrap();
    let piece = tok.piece(once).unwrap();
    assert_eq!(tok.decode(1, once), piece.strip_prefix(b" ").unwrap_or(piece));
    // <0x41> is byte 'A' (id 0x41 + 3).
    assert_eq!(tok.decode(5, 0x41 + 3), b"A");
    assert_eq!(tok.piece(0x41 + 3).unwrap(), b"<0x41>");
}

#[test]
fn utf8_characters_split_over_tokens_print_whole() {
    let tok = tokenizer("tok512.bin");
    // '日' has no piece in the 512 vocabulary: it becomes three byte tokens.
    let ids = encode(&tok, "日");
    assert_eq!(ids.len(), 5, "BOS, dummy space, three bytes: {ids:?}");
    let mut chunks = Vec::new();
    let mut utf8 = Utf8Stream::new();
    for w in ids.windows(2) {
        utf8.push(tok.decode(w[0], w[1]), |s| chunks.push(s.to_string()));
    }
    // The dummy-prefix space is dropped after BOS; the three bytes come out as one character.
    assert_eq!(chunks, vec!["日".to_string()]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn decode_encode_round_trips_small_vocab(s in "\\PC{0,40}") {
        let tok = tokenizer("tok512.bin");
        // The dummy-prefix space is dropped after BOS, so decoding gives the text back.
        prop_assert_eq!(decode(&tok, &encode(&tok, &s)), s);
    }

    #[test]
    fn decode_encode_round_trips_llama_vocab(s in "\\PC{0,40}") {
        let tok = tokenizer("tokenizer.bin");
        prop_assert_eq!(decode(&tok, &encode(&tok, &s)), s);
    }
}
