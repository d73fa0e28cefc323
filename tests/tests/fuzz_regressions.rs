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
