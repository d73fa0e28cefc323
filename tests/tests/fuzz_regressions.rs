//! Replays the fuzz seed inputs and every input kept in fuzz/regressions/
//! through the fuzz targets' checks.

use microlm_tests::{converted, fuzz, root};

fn replay(target: &str, check: fn(&[u8])) -> usize {
    let dir = root().join("fuzz/regressions").join(target);
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).into_iter().flatten() {
        let path = entry.unwrap().path();
        if path.is_file() && !path.ends_with(".gitkeep") {
            check(&std::fs::read(&path).unwrap());
            count += 1;
        }
    }
    count
}

#[test]
fn parse_forward_inputs() {
    let kept = replay("parse_forward", fuzz::parse_forward);
    // The real model, and truncated copies of it, through the same path.
    let model = std::fs::read(converted("f32")).unwrap();
    for cut in [model.len(), model.len() - 1, model.len() / 2, 100, 0] {
        fuzz::parse_forward(&model[..cut]);
    }
    println!("replayed {kept} kept parse_forward inputs");
}

#[test]
fn tokenizer_inputs() {
    let kept = replay("tokenizer", fuzz::tokenizer);
    for text in ["\x00Once upon a time", "\x01naïve café — 日本語 🙂", "\x02\u{1}\u{80}", "\x03\u{fffd}"] {
        fuzz::tokenizer(text.as_bytes());
    }
    fuzz::tokenizer(&[0, 0xff, 0xfe, 0xc3, 0x28, 0xe2, 0x82]);
    println!("replayed {kept} kept tokenizer inputs");
}

#[test]
fn llama2c_import_inputs() {
    let kept = replay("llama2c_import", fuzz::llama2c_import);
    let real = std::fs::read(microlm_tests::shared().join("models/stories260K.bin")).unwrap();
    for cut in [real.len(), 28, 27, 300] {
        fuzz::llama2c_import(&real[..cut]);
    }
    println!("replayed {kept} kept llama2c_import inputs");
}

#[test]
fn link_server_inputs() {
    let kept = replay("link_server", fuzz::link_server);
    // Seeds: a framed Hello, a raw Generate frame, an upload that cannot fit.
    use microlm_link::{frame, GenerateParams, Kv, Request, VERSION};
    let mut buf = [0u8; 256];
    let generate = Request::Generate(GenerateParams {
        prompt: b"Hi",
        steps: 4,
        temperature: 0.0,
        top_p: 0.9,
        top_k: 0,
        min_p: 0.0,
        seed: 1,
        ctx: 0,
        kv: Kv::I8,
    });
    let raw = [&[0u8][..], frame::encode(&generate, &mut buf).unwrap()].concat();
    fuzz::link_server(&raw);
    let hello = postcard::to_allocvec(&Request::Hello { version: VERSION }).unwrap();
    fuzz::link_server(&[&[1u8][..], &hello].concat());
    let begin = postcard::to_allocvec(&Request::UploadBegin { len: 1 << 20, crc: 0 }).unwrap();
    fuzz::link_server(&[&[1u8][..], &begin].concat());
    fuzz::link_server(&[]);
    println!("replayed {kept} kept link_server inputs");
}

#[test]
fn gguf_reader_inputs() {
    let kept = replay("gguf_reader", fuzz::gguf_reader);
    // The writer's valid file, every truncation of it, and a real llama.cpp file's header.
    let file = microlm_tests::gguf_writer::valid_tensors().build();
    for cut in 0..=file.len() {
        fuzz::gguf_reader(&file[..cut]);
    }
    let real =
        std::fs::read(microlm_tests::shared_file("importers/tiny-random-llama/tiny-random-llama-Q4_K_M.gguf")).unwrap();
    for cut in [real.len(), real.len() - 1, 4096, 24] {
        fuzz::gguf_reader(&real[..cut]);
    }
    println!("replayed {kept} kept gguf_reader inputs");
}

#[test]
fn safetensors_header_inputs() {
    let kept = replay("safetensors_header", fuzz::safetensors_header);
    let real =
        std::fs::read(microlm_tests::shared_file("importers/stories260k/stories260K-hf/model.safetensors")).unwrap();
    for cut in [real.len(), real.len() - 1, 4096, 9, 8, 0] {
        fuzz::safetensors_header(&real[..cut]);
    }
    println!("replayed {kept} kept safetensors_header inputs");
}

#[test]
fn bpe_tokenizer_inputs() {
    let kept = replay("bpe_tokenizer", fuzz::bpe_tokenizer);
    for text in ["\x00Hello world", "\x02a<|endoftext|>b", "\x06naïve café — 日本語 🙂\n\n  x", "\x00\u{1}\u{80}  "]
    {
        fuzz::bpe_tokenizer(text.as_bytes());
    }
    fuzz::bpe_tokenizer(&[0, 0xff, 0xfe, 0xc3, 0x28, 0xe2, 0x82]);
    // Edits of the section: the kind, a count, a merge, and a truncation.
    fuzz::bpe_tokenizer(&[1, 0, 0, 0, 0, 9]);
    fuzz::bpe_tokenizer(&[1, 4, 0, 0, 0, 0xff]);
    fuzz::bpe_tokenizer(&[1, 0x00, 0x40, 0x03, 0x00, 0x01]);
    fuzz::bpe_tokenizer(&[1, 0, 0, 0, 0, 1, 128]);
    println!("replayed {kept} kept bpe_tokenizer inputs");
}
