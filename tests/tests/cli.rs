//! The CLI's contract: help with examples, clear one-line errors and exit code 1
//! for bad input, inspect's JSON.

use microlm_tests::{converted, run_cli, run_convert, scratch_dir, shared_file};

#[test]
fn every_subcommand_has_help_with_an_example() {
    for sub in ["convert", "quantize", "inspect", "generate", "eval", "bench", "qemu", "demo"] {
        let (code, out, _) = run_cli([sub, "--help"]);
        assert_eq!(code, 0);
        assert!(out.contains("Example:\n  microlm"), "{sub} --help lacks an example:\n{out}");
    }
}

#[test]
fn unknown_flag_is_a_usage_error() {
    let (code, _, err) = run_cli(["generate", "x.mlm", "--temprature", "1"]);
    assert_eq!(code, 1);
    let lines: Vec<&str> = err.trim().lines().collect();
    assert!(lines[0].contains("--temprature") && lines[0].ends_with("see 'microlm generate --help'"), "{err}");
    // clap's suggestion follows on a line of its own.
    assert_eq!(lines[1..], ["tip: a similar argument exists: '--temperature'"], "{err}");
}

#[test]
fn wrong_tokenizer_is_refused() {
    let m = shared_file("models");
    let out = scratch_dir("cli").join("wrong-tok.mlm");
    let (code, _, err) = run_convert(&m.join("stories260K.bin"), &m.join("tokenizer.bin"), &[], &out);
    assert_eq!(code, 1);
    assert!(err.contains("32000 tokens but the model's vocab_size is 512"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!out.exists());
}

#[test]
fn a_tokenizer_is_not_a_checkpoint() {
    let m = shared_file("models");
    let out = scratch_dir("cli").join("tok-as-model.mlm");
    let (code, _, err) = run_convert(&m.join("tok512.bin"), &m.join("tok512.bin"), &[], &out);
    assert_eq!(code, 1, "{err}");
    assert!(err.starts_with("error: ") && err.contains("not a usable llama2.c checkpoint"), "{err}");
}

#[test]
fn corrupt_model_file_gives_one_clear_line() {
    let mut bytes = std::fs::read(converted("f32")).unwrap();
    // Flip one bit in the middle of the weights: structurally valid, checksum stale.
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    let path = scratch_dir("cli").join("flipped.mlm");
    std::fs::write(&path, &bytes).unwrap();
    for sub in ["inspect", "generate"] {
        let (code, _, err) = run_cli([sub.as_ref(), path.as_os_str()]);
        assert_eq!(code, 1, "{sub}: {err}");
        assert!(err.contains("checksum mismatch"), "{sub}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{sub}: {err}");
    }
    // --no-checksum skips only the CRC: the structure is intact, so the model runs.
    let (code, out, err) = run_cli([
        "generate".as_ref(),
        path.as_os_str(),
        "--no-checksum".as_ref(),
        "-n".as_ref(),
        "8".as_ref(),
        "-t".as_ref(),
        "0".as_ref(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.trim().is_empty());

    // A truncated file is a structural error even without the checksum.
    let truncated = scratch_dir("cli").join("truncated.mlm");
    std::fs::write(&truncated, &bytes[..bytes.len() / 3]).unwrap();
    let (code, _, err) = run_cli(["inspect".as_ref(), truncated.as_os_str(), "--no-checksum".as_ref()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("is not a valid model file"), "{err}");
}

#[test]
fn bad_generation_settings_are_errors() {
    let model = converted("f32");
    let m = model.to_str().unwrap();
    let cases: [(&[&str], &str); 6] = [
        (&["-t", "-1"], "temperature"),
        (&["--top-p", "0"], "top-p"),
        (&["--top-p", "1.5"], "top-p"),
        (&["--top-k", "513"], "top-k"),
        (&["--ctx", "0"], "context length"),
        (&["--ctx", "4", "-p", "Once upon a time there was a dragon"], "longer than the context"),
    ];
    for (flags, message) in cases {
        let mut args = vec!["generate", m];
        args.extend_from_slice(flags);
        let (code, _, err) = run_cli(&args);
        assert_eq!(code, 1, "{flags:?}: {err}");
        assert!(err.contains(message), "{flags:?}: {err}");
    }
}

#[test]
fn inspect_reports_config_tensors_and_plan() {
    let model = converted("f32");
    let (code, out, err) =
        run_cli(["inspect".as_ref(), model.as_os_str(), "--ctx".as_ref(), "128".as_ref(), "--json".as_ref()]);
    assert_eq!(code, 0, "{err}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["config"]["dim"], 64);
    assert_eq!(j["config"]["n_kv_heads"], 4);
    assert_eq!(j["tokenizer"]["vocab_size"], 512);
    assert_eq!(j["tensors"].as_array().unwrap().len(), 47);
    assert_eq!(j["tensors"][0]["name"], "embedding");
    assert_eq!(j["tensors"][0]["shape"], serde_json::json!([512, 64]));
    // ctx 128: activations (4·64 + 2·32 + 2·172 + 128 + 8)·4, KV 2·5·128·32·4, logits 512·4, sampler 512·8.
    let expected = (4 * 64 + 2 * 32 + 2 * 172 + 128 + 8) * 4 + 2 * 5 * 128 * 32 * 4 + 512 * 4 + 512 * 8;
    assert_eq!(j["arena_bytes"], expected);
    assert_eq!(j["plan"]["kv"], "f32");
    assert!(j["boards"].as_array().unwrap().len() >= 7);
    assert_eq!(j["file_bytes"], std::fs::metadata(&model).unwrap().len());

    let (code, text, _) = run_cli(["inspect".as_ref(), model.as_os_str()]);
    assert_eq!(code, 0);
    assert!(text.contains("layers.4.w3") && text.contains("arena_bytes"), "{text}");
}

/// `inspect MODEL ARGS...` as command-line words.
fn inspect_args(model: &std::path::Path, args: &[&str]) -> Vec<std::ffi::OsString> {
    let mut words = vec!["inspect".into(), model.as_os_str().to_owned()];
    words.extend(args.iter().map(Into::into));
    words
}

#[test]
fn inspect_reports_the_board_fit() {
    let model = converted("f32");
    let args = ["--ctx", "512", "--kv", "i8", "--board", "rp2350", "--json"];
    let (code, out, err) = run_cli(inspect_args(&model, &args));
    assert_eq!(code, 0, "{err}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    // i8 at ctx 512: KV 2·5·512·(32 values + one 4-byte scale) bytes plus the 8-value i16 query; under 200 KB in all.
    let expected = (4 * 64 + 2 * 32 + 2 * 172 + 512 + 8) * 4 + 2 * 5 * 512 * (32 + 4) + 16 + 512 * 4 + 512 * 8;
    assert!(expected <= 200_000);
    assert_eq!(j["arena_bytes"], expected);
    let boards = j["boards"].as_array().unwrap();
    assert_eq!(boards.len(), 1);
    let b = &boards[0];
    assert_eq!(
        (b["board"].as_str(), b["fits"].as_bool(), b["max_ctx"].as_u64()),
        (Some("rp2350"), Some(true), Some(512))
    );
    assert_eq!(b["ram_needed"], expected + 4096);
    assert_eq!(b["flash_needed"], std::fs::metadata(&model).unwrap().len() + 122 * 1024);

    // On a 64 KiB board the f32 file fits neither flash nor, at ctx 512, RAM; the RAM alone fits a shorter context.
    let args = ["--kv", "f32", "--board", "lm3s6965evb", "--json"];
    let (_, out, _) = run_cli(inspect_args(&model, &args));
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    let b = &j["boards"][0];
    assert_eq!((b["fits"].as_bool(), b["max_ctx"].as_u64()), (Some(false), Some(0)));
    let ram_ctx = b["max_ctx_ram"].as_u64().unwrap();
    assert!(ram_ctx > 0 && ram_ctx < 512, "{ram_ctx}");

    let (code, _, err) = run_cli(inspect_args(&model, &["--board", "nope"]));
    assert_eq!(code, 1);
    assert!(err.contains("invalid value 'nope' for '--board") && err.contains("rp2350"), "{err}");
}

#[test]
fn demo_reports_missing_models_with_the_download_address() {
    let empty = scratch_dir("cli-empty-models");
    let (code, _, err) = run_cli(["demo".as_ref(), "--models".as_ref(), empty.as_os_str()]);
    assert_eq!(code, 1);
    assert!(err.contains("huggingface.co/karpathy/tinyllamas"), "{err}");
}

#[test]
fn bench_reports_a_median_throughput() {
    let model = converted("f32");
    let (code, out, err) = run_cli([
        "bench".as_ref(),
        model.as_os_str(),
        "-n".as_ref(),
        "16".as_ref(),
        "--runs".as_ref(),
        "3".as_ref(),
        "--json".as_ref(),
    ]);
    assert_eq!(code, 0, "{err}");
    let j: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(j["runs"], 3);
    assert_eq!(j["positions_per_run"], 16);
    let (lo, med, hi) = (
        j["tokens_per_s_min"].as_f64().unwrap(),
        j["tokens_per_s_median"].as_f64().unwrap(),
        j["tokens_per_s_max"].as_f64().unwrap(),
    );
    assert!(lo > 0.0 && lo <= med && med <= hi, "{j}");
}

#[test]
fn output_to_a_pipe_writes_into_it_and_leaves_it_a_pipe() {
    use std::os::unix::fs::FileTypeExt;
    let fifo = scratch_dir("cli").join("out.fifo");
    let _ = std::fs::remove_file(&fifo);
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    // Drain the pipe while convert writes to it, as `-o /dev/null` or `-o >(...)` would.
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(fifo).unwrap().len())
    };
    let m = shared_file("models");
    let (code, _, err) = run_convert(&m.join("stories260K.bin"), &m.join("tok512.bin"), &[], &fifo);
    assert_eq!(code, 0, "{err}");
    assert_eq!(reader.join().unwrap() as u64, std::fs::metadata(converted("f32")).unwrap().len());
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo(), "the pipe was replaced by a file");
}
