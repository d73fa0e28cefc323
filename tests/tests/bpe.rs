//! The byte-level BPE tokenizer (`runtime/src/bpe.rs`) against llama.cpp:
//! llama.cpp's golden tokenizations of its GPT-2 vocabulary
//! (`../shared/importers/vocab/ggml-vocab-gpt-2.gguf` with `.inp`/`.out`) and the
//! SmolLM2 cases of `../shared/importers/refs/smollm2_tokenizer.json` (with and
//! without special-token parsing), each vocabulary read from GGUF, written with
//! `write::bpe_tokenizer_section` and encoded in place by the runtime. Also:
//! decode(encode(s)) == s, both merge algorithms agree, and damaged sections
//! are errors, never panics.

use microlm::write::{bpe_tokenizer_section, BpeVocab};
use microlm::{FormatError, Tokenizer, TokenizerError, Utf8Stream};
use microlm_cli::gguf;
use microlm_tests::{shared_file, smollm2_gguf};
use serde::Deserialize;

/// A section in 4-byte aligned words (as a model file holds it) and its sizes.
struct Section {
    words: Vec<u32>,
    len: usize,
    n: usize,
    max: usize,
    bos: u32,
    eos: u32,
}

impl Section {
    fn new(bytes: &[u8], n: usize, max: usize, bos: u32, eos: u32) -> Section {
        let mut words = vec![0u32; bytes.len().div_ceil(4)];
        bytemuck::cast_slice_mut::<u32, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
        Section { words, len: bytes.len(), n, max, bos, eos }
    }
    fn bytes(&self) -> &[u8] {
        &bytemuck::cast_slice::<u32, u8>(&self.words)[..self.len]
    }
    fn parse(&self) -> Result<Tokenizer<'_>, FormatError> {
        Tokenizer::parse(self.bytes(), self.n, self.max, self.bos, self.eos)
    }
}

/// A GGUF's `gpt2` vocabulary as a section, with its BOS and EOS ids.
fn section_of(path: &std::path::Path) -> (Section, BpeVocab) {
    let bytes = std::fs::read(path).unwrap();
    let g = gguf::parse(&bytes).unwrap();
    let vocab = gguf::gpt2_bpe_vocab(&g).unwrap();
    let id = |key: &str| match g.get(key) {
        Some(gguf::Value::U(v)) => *v as u32,
        Some(gguf::Value::I(v)) => *v as u32,
        other => panic!("{key}: {other:?}"),
    };
    let (bos, eos) = (id("tokenizer.ggml.bos_token_id"), id("tokenizer.ggml.eos_token_id"));
    let (section, max) = bpe_tokenizer_section(&vocab).unwrap();
    (Section::new(&section, vocab.pieces.len(), max as usize, bos, eos), vocab)
}

/// Encodes with `slots` u32 of output.
fn encode_with(tok: &Tokenizer<'_>, text: &[u8], parse_special: bool, slots: usize) -> Vec<u32> {
    let mut out = vec![0u32; slots];
    let n = tok.encode_special(text, true, false, parse_special, &mut out).unwrap();
    out.truncate(n);
    out
}

/// Encodes with both merge algorithms (the minimal capacity and the fast workspace), checked equal.
fn encode(tok: &Tokenizer<'_>, text: &[u8], parse_special: bool) -> Vec<u32> {
    let slow = encode_with(tok, text, parse_special, Tokenizer::encode_capacity(text));
    let fast = encode_with(tok, text, parse_special, Tokenizer::encode_workspace(text));
    assert_eq!(slow, fast, "the two merge algorithms differ on {:?}", String::from_utf8_lossy(text));
    slow
}

/// The decoded text of `ids`, through the UTF-8 reassembly the CLI prints with.
fn decode(tok: &Tokenizer<'_>, ids: &[u32]) -> (Vec<u8>, String) {
    let raw: Vec<u8> = ids.iter().flat_map(|&t| tok.decode(0, t).iter().copied()).collect();
    let mut printed = String::new();
    let mut utf8 = Utf8Stream::new();
    for &t in ids {
        utf8.push(tok.decode(0, t), |s| printed.push_str(s));
    }
    utf8.finish(|s| printed.push_str(s));
    (raw, printed)
}

#[test]
fn gpt2_vocab_reproduces_every_llama_cpp_golden_tokenization() {
    let (section, vocab) = section_of(&shared_file("importers/vocab/ggml-vocab-gpt-2.gguf"));
    assert_eq!(vocab.pre, microlm::PreTokenizer::Gpt2);
    let tok = section.parse().unwrap();
    let bpe = tok.as_bpe().expect("byte-level BPE");
    assert_eq!(bpe.merge_count(), 50000);
    let inp = std::fs::read_to_string(shared_file("importers/vocab/ggml-vocab-gpt-2.gguf.inp")).unwrap();
    let out = std::fs::read_to_string(shared_file("importers/vocab/ggml-vocab-gpt-2.gguf.out")).unwrap();
    // llama.cpp's test-tokenizer-0 format: strings separated by a marker line, one id line per string.
    let mut texts: Vec<&str> = inp.split("\n__ggml_vocab_test__\n").collect();
    if texts.last() == Some(&"") {
        texts.pop();
    }
    let expected: Vec<Vec<u32>> =
        out.lines().map(|l| l.split_whitespace().map(|t| t.parse().unwrap()).collect()).collect();
    assert_eq!(texts.len(), expected.len(), "one id line per string");
    assert!(texts.len() > 30);
    for (text, want) in texts.iter().zip(&expected) {
        let got = encode(&tok, text.as_bytes(), false);
        assert_eq!(&got, want, "tokens of {text:?}");
        let (raw, printed) = decode(&tok, &got);
        assert_eq!(raw, text.as_bytes(), "decode(encode({text:?}))");
        assert_eq!(printed, *text);
    }
}

#[derive(Deserialize)]
struct Case {
    text: String,
    ids: Vec<u32>,
    ids_parse_special: Vec<u32>,
    detokenized: String,
}

#[derive(Deserialize)]
struct Cases {
    cases: Vec<Case>,
}

#[test]
fn smollm2_reproduces_llama_cpp_with_and_without_special_tokens() {
    let (section, vocab) = section_of(&smollm2_gguf());
    assert_eq!(vocab.pre, microlm::PreTokenizer::Smollm);
    assert!(!vocab.add_bos, "SmolLM2 adds no BOS");
    let tok = section.parse().unwrap();
    let reference: Cases =
        serde_json::from_slice(&std::fs::read(shared_file("importers/refs/smollm2_tokenizer.json")).unwrap()).unwrap();
    assert_eq!(reference.cases.len(), 15);
    for case in &reference.cases {
        let text = case.text.as_bytes();
        assert_eq!(encode(&tok, text, false), case.ids, "parse_special = false: {:?}", case.text);
        assert_eq!(encode(&tok, text, true), case.ids_parse_special, "parse_special = true: {:?}", case.text);
        let (raw, printed) = decode(&tok, &case.ids);
        assert_eq!(raw, case.detokenized.as_bytes());
        assert_eq!(printed, case.detokenized);
        let (raw, _) = decode(&tok, &case.ids_parse_special);
        assert_eq!(raw, text, "control tokens decode to their text");
    }
    // `encode` is the parse_special = false entry point, and asking for BOS adds none.
    let mut out = vec![0u32; Tokenizer::encode_capacity(b"<|im_start|>")];
    let n = tok.encode(b"<|im_start|>", true, false, &mut out).unwrap();
    assert_eq!(&out[..n], &reference.cases[14].ids[..7]);
    assert!(!tok.adds_bos());
}

#[test]
fn encoding_appends_eos_and_needs_one_slot_per_byte() {
    let (section, _) = section_of(&shared_file("importers/vocab/ggml-vocab-gpt-2.gguf"));
    let tok = section.parse().unwrap();
    let text = b"Hello world";
    let mut out = vec![0u32; Tokenizer::encode_capacity(text)];
    let n = tok.encode(text, false, true, &mut out).unwrap();
    assert_eq!(&out[..n], &[15496, 995, tok.eos_id()]);
    // text.len() + EOS slots are enough; one fewer is a specific error.
    let mut small = vec![0u32; text.len()];
    assert_eq!(
        tok.encode(text, false, true, &mut small),
        Err(TokenizerError::OutputTooSmall { needed: text.len() + 1, given: text.len() })
    );
    let mut exact = vec![0u32; text.len() + 1];
    assert_eq!(tok.encode(text, false, true, &mut exact), Ok(3));
    assert!(tok.min_tokens(text, true) <= 2);
}

#[test]
fn long_and_invalid_utf8_text_round_trips() {
    let (section, _) = section_of(&shared_file("importers/vocab/ggml-vocab-gpt-2.gguf"));
    let tok = section.parse().unwrap();
    let mut text = Vec::new();
    for i in 0..300u32 {
        text.extend_from_slice(format!("word{i}   {}\n\t", "x".repeat((i % 17) as usize)).as_bytes());
    }
    text.extend_from_slice(b"\xff\xfe\xc3 tail \xe6\x97");
    let ids = encode(&tok, &text, false);
    assert!(ids.iter().all(|&id| (id as usize) < tok.vocab_size()));
    assert_eq!(decode(&tok, &ids).0, text);
}

/// Rewrites the u32 at `at` (after the kind word) of a copy of the section.
fn with_word(s: &Section, at: usize, f: impl Fn(u32) -> u32) -> Section {
    let mut bytes = s.bytes().to_vec();
    let at = at + 4;
    let v = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
    bytes[at..at + 4].copy_from_slice(&f(v).to_le_bytes());
    Section::new(&bytes, s.n, s.max, s.bos, s.eos)
}

#[test]
fn damaged_sections_are_specific_errors() {
    let (good, vocab) = section_of(&shared_file("importers/vocab/ggml-vocab-gpt-2.gguf"));
    assert!(good.parse().is_ok());
    let n = vocab.pieces.len();
    let m = good.parse().unwrap().as_bpe().unwrap().merge_count();
    let offsets = 36;
    let bytes_at = offsets + 4 * (n + 1);
    let merges_at = bytes_at + 1024;
    // Bad kind, pre-tokenizer, flags, optional ids.
    let mut bytes = good.bytes().to_vec();
    bytes[0] = 7;
    assert_eq!(
        Section::new(&bytes, good.n, good.max, good.bos, good.eos).parse().err(),
        Some(FormatError::TokenizerKind { kind: 7 })
    );
    assert_eq!(with_word(&good, 12, |_| 9).parse().err(), Some(FormatError::TokenizerPreTokenizer { id: 9 }));
    assert_eq!(with_word(&good, 16, |_| 6).parse().err(), Some(FormatError::TokenizerFlags { flags: 6 }));
    assert_eq!(
        with_word(&good, 28, |_| n as u32).parse().err(),
        Some(FormatError::TokenizerSpecialId { id: n as u32 })
    );
    // Counts that do not match the section length.
    for at in [0, 4, 8, 32] {
        assert_eq!(with_word(&good, at, |v| v + 1).parse().err(), Some(FormatError::TokenizerTables), "word {at}");
        assert_eq!(
            with_word(&good, at, |_| u32::MAX).parse().err(),
            Some(FormatError::TokenizerTables),
            "word {at} = MAX"
        );
    }
    // A piece offset that goes backwards.
    assert_eq!(
        with_word(&good, offsets + 4 * 10, |v| v + 5).parse().err(),
        Some(FormatError::TokenizerPiece { id: 10 })
    );
    // The byte table pointing at the wrong token, or out of range.
    assert_eq!(
        with_word(&good, bytes_at + 4 * 65, |v| v + 1).parse().err(),
        Some(FormatError::TokenizerByteToken { byte: 65 })
    );
    assert_eq!(
        with_word(&good, bytes_at, |_| n as u32).parse().err(),
        Some(FormatError::TokenizerByteToken { byte: 0 })
    );
    // Merges: an out-of-range id, an unsorted pair, a wrong result, a rank ≥ m.
    let merge = |i: usize, field: usize| merges_at + 16 * i + 4 * field;
    assert_eq!(
        with_word(&good, merge(5, 0), |_| n as u32).parse().err(),
        Some(FormatError::TokenizerMerge { index: 5 })
    );
    let word_at = |at: usize| u32::from_le_bytes(good.bytes()[4 + at..][..4].try_into().unwrap());
    let (l0, r0) = (word_at(merge(0, 0)), word_at(merge(0, 1)));
    let repeated = with_word(&with_word(&good, merge(1, 0), |_| l0), merge(1, 1), |_| r0);
    assert_eq!(repeated.parse().err(), Some(FormatError::TokenizerMerge { index: 1 }));
    assert_eq!(
        with_word(&good, merge(100, 3), |v| v + 1).parse().err(),
        Some(FormatError::TokenizerMerge { index: 100 })
    );
    assert_eq!(
        with_word(&good, merge(7, 2), |_| m as u32).parse().err(),
        Some(FormatError::TokenizerMerge { index: 7 })
    );
    // A special list that names a normal token, and a token type out of range.
    let specials_at = merges_at + 16 * m;
    assert_eq!(with_word(&good, specials_at, |_| 100).parse().err(), Some(FormatError::TokenizerSpecial { index: 0 }));
    let types_at = 4 + specials_at + 4 * good.parse().unwrap().as_bpe().unwrap().special_count();
    let mut bytes = good.bytes().to_vec();
    bytes[types_at + 3] = 9;
    assert_eq!(
        Section::new(&bytes, good.n, good.max, good.bos, good.eos).parse().err(),
        Some(FormatError::TokenizerTokenType { id: 3, ty: 9 })
    );
    // A normal token turned control must also be in the special list.
    bytes[types_at + 3] = 3;
    assert!(matches!(
        Section::new(&bytes, good.n, good.max, good.bos, good.eos).parse().err(),
        Some(FormatError::TokenizerSpecial { .. })
    ));
    // Every truncation is an error, never a panic.
    for cut in (0..good.len).step_by(good.len / 300 + 1) {
        let s = Section::new(&good.bytes()[..cut], good.n, good.max, good.bos, good.eos);
        assert!(s.parse().is_err(), "a section cut at {cut} parsed");
    }
}

#[test]
fn convert_time_errors_are_specific() {
    let bytes = std::fs::read(shared_file("importers/vocab/ggml-vocab-gpt-2.gguf")).unwrap();
    let g = gguf::parse(&bytes).unwrap();
    let v = gguf::gpt2_vocab(&g).unwrap();
    let e = BpeVocab::from_gpt2(&v.tokens, &v.merges, &v.token_types, "llama3", false).unwrap_err();
    assert_eq!(
        e.to_string(),
        "pre-tokenizer \"llama3\" is not supported (byte-level BPE implements \"gpt-2\" and \"smollm\")"
    );
    let mut merges = v.merges.clone();
    merges[3] = b"zzzq qqqz".to_vec();
    let e = BpeVocab::from_gpt2(&v.tokens, &merges, &v.token_types, "gpt-2", false).unwrap_err();
    assert_eq!(e, microlm::write::WriteError::BadMerge { rank: 3 });
    let mut tokens = v.tokens.clone();
    tokens[5] = "\u{4e00}".as_bytes().to_vec();
    let e = BpeVocab::from_gpt2(&tokens, &v.merges, &v.token_types, "gpt-2", false).unwrap_err();
    assert_eq!(e, microlm::write::WriteError::NotByteLevel { id: 5 });
}

/// Copies a model file into 4-byte aligned storage.
fn aligned(bytes: &[u8]) -> Vec<u32> {
    let mut words = vec![0u32; bytes.len().div_ceil(4)];
    bytemuck::cast_slice_mut::<u32, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
    words
}

#[test]
fn a_model_with_a_byte_level_bpe_tokenizer_parses_and_generates() {
    use microlm::format::{Config, DType};
    use microlm::write::{encode_tensor, write_model_with, TokenizerSpec};
    use microlm::{Generation, KvDtype, Model, Session, Step};

    let (section, vocab) = section_of(&shared_file("importers/vocab/ggml-vocab-gpt-2.gguf"));
    let config = Config {
        dim: 8,
        hidden_dim: 12,
        n_layers: 1,
        n_heads: 2,
        n_kv_heads: 1,
        vocab_size: vocab.pieces.len(),
        seq_len: 16,
        norm_eps: 1e-5,
        rope_theta: 10000.0,
        bos_id: section.bos,
        eos_id: section.eos,
        shared_classifier: true,
    };
    let file = write_model_with("gpt2-tiny", "test", &config, &[DType::F32; 12], TokenizerSpec::Bpe(&vocab), |t| {
        let values: Vec<f32> =
            (0..(t.rows * t.cols) as usize).map(|i| ((i * 7919) % 101) as f32 / 101.0 - 0.5).collect();
        Ok(encode_tensor(t.dtype, &values))
    })
    .unwrap();
    assert_eq!(u32::from_le_bytes(file[4..8].try_into().unwrap()), microlm::format::VERSION);
    let words = aligned(&file);
    let model = Model::parse(&bytemuck::cast_slice::<u32, u8>(&words)[..file.len()]).unwrap();
    let tok = model.tokenizer();
    assert!(tok.as_bpe().is_some());
    assert_eq!(tok.vocab_size(), 50257);
    // The same tokens as the bare section.
    let standalone = section.parse().unwrap();
    let text = "Hello world, 123 — naïve";
    let prompt = encode(tok, text.as_bytes(), false);
    assert_eq!(prompt, encode(&standalone, text.as_bytes(), false));

    let plan = model.plan(16, KvDtype::F32).unwrap();
    let mut arena = vec![0u32; plan.total.div_ceil(4)];
    let mut session = Session::new(&model, bytemuck::cast_slice_mut(&mut arena), 16, KvDtype::F32).unwrap();
    let mut sampler =
        microlm::Sampler::new(microlm::SamplerConfig { temperature: 0.0, ..Default::default() }, 50257).unwrap();
    let mut generation = Generation::new(&session, &prompt, 16).unwrap();
    let mut printed = String::new();
    let mut utf8 = Utf8Stream::new();
    let mut steps = 0;
    while let Step::Token { prev, token, forced } = generation.step(&mut session, &mut sampler).unwrap() {
        assert!((token as usize) < 50257);
        utf8.push(tok.decode(prev, token), |s| printed.push_str(s));
        steps += usize::from(!forced);
    }
    utf8.finish(|s| printed.push_str(s));
    assert!(steps > 0, "the model generated no token");
    // Requantizing keeps the tokenizer section as it was.
    let source = Model::parse(&bytemuck::cast_slice::<u32, u8>(&words)[..file.len()]).unwrap();
    let again = microlm::write::BpeVocab::from_tokenizer(source.tokenizer().as_bpe().unwrap());
    assert_eq!(bpe_tokenizer_section(&again).unwrap(), bpe_tokenizer_section(&vocab).unwrap());
}

/// Recomputes a model file's CRC32 trailer after an edit.
fn reseal(file: &mut [u8]) {
    let body = file.len() - 4;
    let crc = crc32fast::hash(&file[..body]);
    file[body..].copy_from_slice(&crc.to_le_bytes());
}

/// What `Model::parse` says of `file` (copied to an aligned buffer).
fn parse_error(file: &[u8]) -> Option<FormatError> {
    let w = aligned(file);
    microlm::Model::parse(&bytemuck::cast_slice::<u32, u8>(&w)[..file.len()]).err()
}

#[test]
fn version_1_files_still_read_as_sentencepiece() {
    use microlm::format::{Header, TensorEntry, PREAMBLE_LEN};
    // Version 3 only adds the q4_16 dtype: an f32 file with its version word set to 2 is a version 2 file.
    let mut v2 = std::fs::read(microlm_tests::converted("f32")).unwrap();
    assert_eq!(u32::from_le_bytes(v2[4..8].try_into().unwrap()), 3);
    v2[4..8].copy_from_slice(&2u32.to_le_bytes());
    reseal(&mut v2);
    // Version 1 has no kind word: move the section start past it and re-encode the header.
    let header_len = u32::from_le_bytes(v2[8..12].try_into().unwrap()) as usize;
    let (mut header, mut rest): (Header<'_>, &[u8]) =
        postcard::take_from_bytes(&v2[PREAMBLE_LEN..PREAMBLE_LEN + header_len]).unwrap();
    let tok_at = header.tokenizer.offset as usize;
    assert_eq!(u32::from_le_bytes(v2[tok_at..tok_at + 4].try_into().unwrap()), 0, "SentencePiece kind word");
    header.tokenizer.offset += 4;
    header.tokenizer.length -= 4;
    let mut encoded = postcard::to_allocvec(&header).unwrap();
    // The table, without the source format that version 2 appends after it.
    for _ in 0..header.tensor_count {
        let (e, tail): (TensorEntry, &[u8]) = postcard::take_from_bytes(rest).unwrap();
        encoded.extend(postcard::to_allocvec(&e).unwrap());
        rest = tail;
    }
    let (source, _): (&str, &[u8]) = postcard::take_from_bytes(rest).unwrap();
    assert_eq!(source, "llama2.c");
    assert!(PREAMBLE_LEN + encoded.len() <= tok_at + 4);
    let mut v1 = v2.clone();
    v1[4..8].copy_from_slice(&1u32.to_le_bytes());
    v1[8..12].copy_from_slice(&(encoded.len() as u32).to_le_bytes());
    v1[PREAMBLE_LEN..PREAMBLE_LEN + encoded.len()].copy_from_slice(&encoded);
    let body = v1.len() - 4;
    let crc = crc32fast::hash(&v1[..body]);
    v1[body..].copy_from_slice(&crc.to_le_bytes());
    let (w1, w2) = (aligned(&v1), aligned(&v2));
    let m1 = microlm::Model::parse(&bytemuck::cast_slice::<u32, u8>(&w1)[..v1.len()]).unwrap();
    let m2 = microlm::Model::parse(&bytemuck::cast_slice::<u32, u8>(&w2)[..v2.len()]).unwrap();
    assert!(m1.tokenizer().as_sentencepiece().is_some());
    assert_eq!((m1.source(), m2.source()), ("", "llama2.c"));
    let text = b"Once upon a time, Lily";
    assert_eq!(encode(m1.tokenizer(), text, false), encode(m2.tokenizer(), text, false));
    // Read as version 2, the same bytes are a section of unknown kind 512 (its vocab_size).
    let mut as_v2 = v1.clone();
    as_v2[4..8].copy_from_slice(&2u32.to_le_bytes());
    let crc = crc32fast::hash(&as_v2[..body]);
    as_v2[body..].copy_from_slice(&crc.to_le_bytes());
    let w = aligned(&as_v2);
    assert_eq!(
        microlm::Model::parse(&bytemuck::cast_slice::<u32, u8>(&w)[..as_v2.len()]).err(),
        Some(FormatError::TokenizerKind { kind: 512 })
    );
    // A later version is refused.
    let mut v4 = v2.clone();
    v4[4..8].copy_from_slice(&4u32.to_le_bytes());
    assert_eq!(parse_error(&v4), Some(FormatError::UnsupportedVersion { found: 4, supported: 3 }));
    // q4_16 arrived with version 3: a version 2 file that names it is refused.
    let mut q = std::fs::read(microlm_tests::converted("q4_16")).unwrap();
    q[4..8].copy_from_slice(&2u32.to_le_bytes());
    reseal(&mut q);
    assert_eq!(parse_error(&q), Some(FormatError::TensorDtype { index: 0 }));
    // Only the attention and FFN norms may be `ones`: the same file with wq as ones is refused.
    let mut q = std::fs::read(microlm_tests::converted("q4_16")).unwrap();
    let header_len = u32::from_le_bytes(q[8..12].try_into().unwrap()) as usize;
    let (header, mut rest): (Header<'_>, &[u8]) =
        postcard::take_from_bytes(&q[PREAMBLE_LEN..PREAMBLE_LEN + header_len]).unwrap();
    let mut encoded = postcard::to_allocvec(&header).unwrap();
    for index in 0..header.tensor_count {
        let (mut e, tail): (TensorEntry, &[u8]) = postcard::take_from_bytes(rest).unwrap();
        if index == 2 {
            assert_eq!(e.kind, microlm::format::TensorKind::Wq);
            e.dtype = microlm::format::DType::Ones;
        }
        encoded.extend(postcard::to_allocvec(&e).unwrap());
        rest = tail;
    }
    encoded.extend_from_slice(rest);
    q[PREAMBLE_LEN..PREAMBLE_LEN + header_len].copy_from_slice(&encoded[..header_len]);
    reseal(&mut q);
    assert_eq!(parse_error(&q), Some(FormatError::TensorDtype { index: 2 }));
}
