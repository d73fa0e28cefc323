//! The bodies of the fuzz targets, shared with the test suite so every input
//! the fuzzer ever found is replayed through exactly the same checks.

use std::sync::OnceLock;

use microlm::write::tokenizer_section;
use microlm::{Checksum, KvDtype, Model, Sampler, SamplerConfig, Session, Tokenizer, Utf8Stream};
use microlm_cli::llama2c::{read_checkpoint, read_tokenizer};

/// Any bytes through `Model::parse` (CRC skipped, so inputs reach the structural
/// checks); an accepted model must plan, open a session, run a forward step and
/// sample without panicking, with every KV cache dtype, and keep running past
/// the context in window mode.
pub fn parse_forward(data: &[u8]) {
    // Hold the bytes 4-byte aligned, as flash or the CLI does.
    let mut words = vec![0u32; data.len().div_ceil(4)];
    bytemuck::cast_slice_mut::<u32, u8>(&mut words)[..data.len()].copy_from_slice(data);
    let bytes = &bytemuck::cast_slice::<u32, u8>(&words)[..data.len()];
    let Ok(model) = Model::parse_with(bytes, Checksum::Skip) else { return };
    let ctx = model.config().seq_len.min(4);
    for kv in KvDtype::ALL {
        forward_and_sample(&model, ctx, kv);
    }
}

/// One session of an accepted model: a forward step, a sample, and window-mode
/// steps past the end of the cache.
fn forward_and_sample(model: &Model<'_>, ctx: usize, kv: KvDtype) {
    let plan = model.plan(ctx, kv).expect("an accepted model has a plan for ctx <= seq_len");
    if plan.total > 64 << 20 {
        return;
    }
    let mut arena = vec![0u32; plan.total.div_ceil(4)];
    let mut session = Session::new(model, bytemuck::cast_slice_mut(&mut arena), ctx, kv).expect("planned arena");
    let vocab = model.config().vocab_size;
    let bos = model.config().bos_id;
    session.forward(bos, 0).expect("forward at position 0");
    // Window mode wraps the ring: positions ctx and ctx + 1 reuse slots.
    let sinks = ctx.min(2) - 1;
    session.forward_window(bos, ctx, sinks).expect("window forward");
    session.forward_window(bos, ctx + 1, sinks).expect("window forward");
    let settings = SamplerConfig { top_k: 3, min_p: 0.05, ..Default::default() };
    let mut sampler = Sampler::new(settings, vocab).expect("valid settings");
    let (logits, scratch) = session.logits_and_scratch();
    let token = sampler.sample(logits, scratch).expect("scratch sized by the plan");
    assert!((token as usize) < vocab);
    let _ = model.tokenizer().decode(model.config().bos_id, token);
}

/// A shared vocabulary's tokenizer section as `convert` stores it, parsed once
/// (parsing checks the 32,000-entry sorted index, too slow to repeat per input).
fn tokenizer_for(index: usize) -> &'static Tokenizer<'static> {
    static SECTIONS: [OnceLock<(Vec<u32>, usize, usize)>; 2] = [OnceLock::new(), OnceLock::new()];
    static TOKENIZERS: [OnceLock<Tokenizer<'static>>; 2] = [OnceLock::new(), OnceLock::new()];
    TOKENIZERS[index].get_or_init(|| {
        let (words, len, max) = SECTIONS[index].get_or_init(|| {
            let path = crate::shared().join("models").join(["tok512.bin", "tokenizer.bin"][index]);
            let bytes = std::fs::read(&path).expect("shared tokenizer");
            let vocab = read_tokenizer(&bytes, &path).expect("valid tokenizer");
            let (section, max) = tokenizer_section(&vocab).expect("section");
            let mut words = vec![0u32; section.len().div_ceil(4)];
            bytemuck::cast_slice_mut::<u32, u8>(&mut words)[..section.len()].copy_from_slice(&section);
            (words, section.len(), max as usize)
        });
        let bytes = &bytemuck::cast_slice::<u32, u8>(words)[..*len];
        let n = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes")) as usize;
        Tokenizer::parse(bytes, n, *max, 1, 2).expect("real vocabulary parses")
    })
}

/// A selector byte (bit 0: which vocabulary, bit 1: append EOS) then text, through
/// encode and decode: ids stay in range, both merge algorithms agree, decoded
/// text is valid UTF-8, and printable UTF-8 round-trips exactly.
pub fn tokenizer(data: &[u8]) {
    let Some((&selector, text)) = data.split_first() else { return };
    let tok = tokenizer_for(usize::from(selector & 1));
    let n = tok.vocab_size();

    let eos = selector & 2 != 0;
    let mut ids = vec![0u32; Tokenizer::encode_capacity(text)];
    let count = tok.encode(text, true, eos, &mut ids).expect("capacity from encode_capacity");
    let ids = &ids[..count];
    assert!(ids.iter().all(|&id| (id as usize) < n));
    // The O(n log n) merges (given the workspace) give the same tokens as the rescan.
    let mut fast = vec![0u32; Tokenizer::encode_workspace(text)];
    let fast_count = tok.encode(text, true, eos, &mut fast).expect("workspace holds the capacity");
    assert_eq!(&fast[..fast_count], ids);

    let mut out = String::new();
    let mut utf8 = Utf8Stream::new();
    for w in ids.windows(2) {
        utf8.push(tok.decode(w[0], w[1]), |s| out.push_str(s));
    }
    utf8.finish(|s| out.push_str(s));
    if let Ok(s) = std::str::from_utf8(text) {
        if !eos && !s.chars().any(|c| c.is_control() && !c.is_ascii_whitespace()) {
            assert_eq!(out, s);
        }
    }
}

/// Any bytes through the llama2.c checkpoint and tokenizer importers: an error
/// or a consistent result.
pub fn llama2c_import(data: &[u8]) {
    if let Ok(ckpt) = read_checkpoint(data) {
        let c = ckpt.config;
        for kind in microlm::TensorKind::ALL {
            let (rows, cols) = c.shape(kind);
            if let Some(t) = ckpt.tensor(kind, 0) {
                assert_eq!(t.len(), rows * cols);
            }
        }
    }
    if let Ok(vocab) = read_tokenizer(data, std::path::Path::new("fuzz-input")) {
        assert_eq!(vocab.pieces.len(), vocab.scores.len());
    }
}

/// llama.cpp's GPT-2 vocabulary (`../shared/importers/vocab/ggml-vocab-gpt-2.gguf`)
/// as a byte-level BPE section, in aligned words, with its vocab size, longest
/// piece, BOS and EOS; built once.
fn gpt2_section() -> &'static (Vec<u32>, usize, usize, usize, u32, u32) {
    static SECTION: OnceLock<(Vec<u32>, usize, usize, usize, u32, u32)> = OnceLock::new();
    SECTION.get_or_init(|| {
        let path = crate::shared().join("importers/vocab/ggml-vocab-gpt-2.gguf");
        let bytes = std::fs::read(&path).expect("shared GPT-2 vocabulary");
        let g = microlm_cli::gguf::parse(&bytes).expect("valid GGUF");
        let vocab = microlm_cli::gguf::gpt2_bpe_vocab(&g).expect("gpt2 vocabulary");
        let (section, max) = microlm::write::bpe_tokenizer_section(&vocab).expect("section");
        let mut words = vec![0u32; section.len().div_ceil(4)];
        bytemuck::cast_slice_mut::<u32, u8>(&mut words)[..section.len()].copy_from_slice(&section);
        // GPT-2's <|endoftext|> (50256) is both BOS and EOS.
        (words, section.len(), vocab.pieces.len(), max as usize, 50256, 50256)
    })
}

/// Encodes `text` with both merge algorithms (checked equal) and checks ids in range.
fn bpe_encode(tok: &Tokenizer<'_>, text: &[u8], parse_special: bool, eos: bool) -> Vec<u32> {
    let mut ids = vec![0u32; Tokenizer::encode_capacity(text)];
    let count = tok.encode_special(text, true, eos, parse_special, &mut ids).expect("capacity from encode_capacity");
    ids.truncate(count);
    let mut fast = vec![0u32; Tokenizer::encode_workspace(text)];
    let fast_count = tok.encode_special(text, true, eos, parse_special, &mut fast).expect("workspace");
    assert_eq!(&fast[..fast_count], &ids[..]);
    assert!(ids.iter().all(|&id| id < tok.vocab_size() as u32));
    ids
}

/// Byte-level BPE. A selector byte, then:
/// - bit 0 clear: text through the real GPT-2 section (bit 1: parse specials, bit 2:
///   append EOS): ids in range, both merge algorithms agree, and the decoded bytes
///   are exactly the text (GPT-2 has a token for every byte).
/// - bit 0 set: the rest is a list of 5-byte edits (u32 byte offset, new byte) applied
///   to the real section, then parsed: an accepted section must encode a fixed text
///   and the fuzz bytes without panicking, ids in range.
pub fn bpe_tokenizer(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else { return };
    let (words, len, n, max, bos, eos) = gpt2_section();
    let section = &bytemuck::cast_slice::<u32, u8>(words)[..*len];
    if selector & 1 == 0 {
        static TOK: OnceLock<Tokenizer<'static>> = OnceLock::new();
        let tok = TOK.get_or_init(|| Tokenizer::parse(section, *n, *max, *bos, *eos).expect("real vocabulary parses"));
        let eos_too = selector & 4 != 0;
        let ids = bpe_encode(tok, rest, selector & 2 != 0, eos_too);
        let body = if eos_too { &ids[..ids.len() - 1] } else { &ids[..] };
        let decoded: Vec<u8> = body.iter().flat_map(|&t| tok.decode(0, t).iter().copied()).collect();
        assert_eq!(decoded, rest);
        let mut utf8 = Utf8Stream::new();
        let mut out = String::new();
        for &t in body {
            utf8.push(tok.decode(0, t), |s| out.push_str(s));
        }
        utf8.finish(|s| out.push_str(s));
        return;
    }
    let mut bytes = section.to_vec();
    for edit in rest.chunks_exact(5) {
        let at = u32::from_le_bytes([edit[0], edit[1], edit[2], edit[3]]) as usize;
        if !bytes.is_empty() {
            let at = at % bytes.len();
            bytes[at] = edit[4];
        }
    }
    // A cut when the edit list has a remainder, so truncations are explored too.
    if rest.len() % 5 != 0 {
        let cut = usize::from(rest[rest.len() - 1]) * bytes.len() / 255;
        bytes.truncate(cut);
    }
    let mut aligned = vec![0u32; bytes.len().div_ceil(4)];
    bytemuck::cast_slice_mut::<u32, u8>(&mut aligned)[..bytes.len()].copy_from_slice(&bytes);
    let Ok(tok) = Tokenizer::parse(&bytemuck::cast_slice::<u32, u8>(&aligned)[..bytes.len()], *n, *max, *bos, *eos)
    else {
        return;
    };
    for parse_special in [false, true] {
        bpe_encode(&tok, b"Hello <|endoftext|> world 123 \xff", parse_special, true);
        bpe_encode(&tok, rest, parse_special, false);
    }
}
