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
