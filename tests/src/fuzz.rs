//! The bodies of the fuzz targets, shared with the test suite so every input
//! the fuzzer ever found is replayed through exactly the same checks.

use std::sync::OnceLock;

use microlm::write::tokenizer_section;
use microlm::{Checksum, KvDtype, Model, Sampler, SamplerConfig, Session, Tokenizer, Utf8Stream};
use microlm_cli::llama2c::{read_checkpoint, read_tokenizer};
use microlm_cli::{gguf, hf};

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

/// Any bytes into the device side of the link ([`microlm_link::server`]),
/// with the stories260K f32 model built in and two 16 KiB flash slots. The
/// first byte picks how the rest is read: even = a raw serial stream; odd =
/// message bodies split at `0x00`, each framed with a correct CRC and COBS (so
/// the fuzzer reaches the request handlers, not only the frame checks). The
/// server must answer with well-formed frames only and still answer `Hello`
/// with the built-in model afterwards (small slots: no upload can fit a model).
pub fn link_server(data: &[u8]) {
    use microlm_link::frame::{self, Feed, Frames};
    use microlm_link::{Request, Response, CRC, MAX_FRAME, VERSION};

    static MODEL: OnceLock<&'static [u8]> = OnceLock::new();
    let model = *MODEL.get_or_init(|| {
        // The built-in model: stories260K as f32, written in process (no CLI build inside
        // the fuzzer), leaked as firmware data is 'static.
        let ckpt_bytes = std::fs::read(crate::shared_file("models/stories260K.bin")).expect("stories260K.bin");
        let ckpt = read_checkpoint(&ckpt_bytes).expect("checkpoint");
        let tok_path = crate::shared_file("models/tok512.bin");
        let vocab = read_tokenizer(&std::fs::read(&tok_path).expect("tok512.bin"), &tok_path).expect("tokenizer");
        let spec = microlm::write::ModelSpec {
            name: "stories260K",
            source: "llama2.c",
            config: ckpt.config,
            dtypes: [microlm::DType::F32; 12],
            vocab: &vocab,
        };
        let bytes = microlm::write::write_model(&spec, |e| {
            Ok(microlm::write::encode_tensor(e.dtype, ckpt.tensor(e.kind, e.layer as usize).unwrap_or_default()))
        })
        .expect("model");
        let words: Vec<u32> = bytes
            .chunks(4)
            .map(|c| {
                let mut w = [0u8; 4];
                w[..c.len()].copy_from_slice(c);
                u32::from_le_bytes(w)
            })
            .collect();
        let words: &'static [u32] = Box::leak(words.into_boxed_slice());
        &bytemuck::cast_slice(words)[..bytes.len()]
    });
    let Some((&mode, rest)) = data.split_first() else { return };
    let mut s = microlm_link::server::Server::new(
        Some(crate::link::blank_flash(32 << 10)),
        Some(model),
        crate::link::VecArena::new(1 << 20),
        crate::link::TestPort::default(),
        crate::link::INFO,
    );
    if mode % 2 == 0 {
        s.port().input.extend(rest);
    } else {
        for body in rest.split(|&b| b == 0) {
            let mut raw = body.to_vec();
            raw.extend(CRC.checksum(body).to_le_bytes());
            let mut enc = vec![0u8; raw.len() + raw.len() / 254 + 2];
            let n = cobs::encode(&raw, &mut enc);
            s.port().input.extend(&enc[..n]);
            s.port().input.push_back(0);
        }
    }
    s.poll();
    // End any partial frame, then the server must still answer.
    s.port().input.push_back(0);
    let mut hello = [0u8; 64];
    s.port().input.extend(frame::encode(&Request::Hello { version: VERSION }, &mut hello).unwrap().iter());
    s.poll();
    let out = std::mem::take(&mut s.port().output);
    let mut frames = Frames::<MAX_FRAME>::new();
    let mut last = None;
    for b in out {
        match frames.push(b) {
            Feed::Frame(f) => {
                let r = frame::decode::<Response<'_>>(f).expect("the server sent a bad frame");
                last = Some(matches!(r, Response::Info(i) if i.model.is_some()));
            }
            Feed::Oversized => panic!("the server sent an oversized frame"),
            Feed::Pending => {}
        }
    }
    assert_eq!(last, Some(true), "no Info with the built-in model after the input");
}

/// Any bytes through the GGUF reader: an error of one line, or a tensor table
/// whose every tensor lies in the data section, on the alignment, without
/// overlap, and dequantizes to exactly its value count (or is refused by
/// type). The reader's memory is bounded by the input's size (at most 8
/// values per byte), so every tensor is dequantized; the config and
/// vocabulary readers built on it must not panic either.
pub fn gguf_reader(data: &[u8]) {
    let g = match gguf::parse(data) {
        Ok(g) => g,
        Err(e) => return assert_eq!(format!("{e:#}").lines().count(), 1, "{e:#}"),
    };
    let mut ranges = Vec::new();
    for t in &g.tensors {
        assert!(t.start >= g.data_offset && t.start + t.len <= data.len(), "{t:?}");
        assert_eq!((t.start - g.data_offset) as u64 % g.alignment, 0);
        assert!(t.n_values() <= data.len() * 8);
        match gguf::dequantize(t.ty, g.data(t), t.n_values()) {
            Ok(v) => assert_eq!(v.len(), t.n_values()),
            Err(e) => assert!(e.to_string().ends_with("cannot be imported"), "{t:?}: {e}"),
        }
        ranges.push((t.start, t.start + t.len));
    }
    ranges.sort_unstable();
    assert!(ranges.windows(2).all(|w| w[0].1 <= w[1].0));
    let _ = gguf::llama_config(&g);
    let _ = gguf::llama_vocab(&g);
    let _ = gguf::gpt2_vocab(&g);
}

/// Any bytes through the safetensors layout check that runs before the
/// `safetensors` crate parses a file: accepted or refused with one line.
pub fn safetensors_header(data: &[u8]) {
    if let Err(e) = hf::check_layout(data, std::path::Path::new("fuzz-input")) {
        assert_eq!(format!("{e:#}").lines().count(), 1, "{e:#}");
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
