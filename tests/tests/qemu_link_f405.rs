//! The STM32F405 link firmware (`boards/stm32f405`, bin `microlm-stm32f405-link`)
//! under QEMU netduinoplus2, its USART1 on a Unix socket: `microlm device
//! --socket` reads its info and runs the five llama2.c reference cases on the
//! model embedded at build time (stories260K q8_0, ctx 256, int8 KV cache),
//! with exactly the host's ids and text. QEMU models no flash controller, so
//! this build has no slots: an upload is refused with one clear line by the
//! CLI and with an `Error` by the board, which then still serves.

use std::path::Path;

use microlm_link::{file_crc, ErrorKind, Request};
use microlm_tests::link_qemu::{f405_qemu_firmware, Board, Raw, Reply};
use microlm_tests::{converted, reference_cases, run_cli};

/// `microlm device --socket S --json ARGS`: (exit code, last stdout line as JSON or Null, stderr).
fn device(board: &Board, args: &[&str]) -> (i32, serde_json::Value, String) {
    let mut all: Vec<&std::ffi::OsStr> =
        vec!["device".as_ref(), "--socket".as_ref(), board.socket.as_os_str(), "--json".as_ref()];
    all.extend(args.iter().map(std::ffi::OsStr::new));
    let (code, out, err) = run_cli(all);
    let json = out.trim().lines().last().and_then(|l| serde_json::from_str(l).ok()).unwrap_or_default();
    (code, json, err)
}

fn host(model: &Path, flags: &[&str]) -> serde_json::Value {
    let mut args: Vec<&std::ffi::OsStr> = vec!["generate".as_ref(), model.as_os_str(), "--json".as_ref()];
    args.extend(flags.iter().map(std::ffi::OsStr::new));
    let (code, out, err) = run_cli(args);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(out.trim().lines().last().unwrap()).unwrap()
}

#[test]
fn netduinoplus2_link_serves_the_reference_cases() {
    let model = converted("q8_0");
    let bytes = std::fs::read(&model).unwrap();
    let elf = f405_qemu_firmware(&model);
    let board = Board::boot("netduinoplus2", &elf, "f405-link");

    let (code, info, err) = device(&board, &["info"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(info["board"], "stm32f405");
    assert_eq!(info["slot_bytes"], 0, "no slots under QEMU");
    assert_eq!(info["model"]["slot"], "built-in");
    assert_eq!(info["model"]["crc"].as_str().unwrap(), format!("{:08x}", file_crc(&bytes)));

    for case in reference_cases() {
        let (steps, temp, topp) = (case.steps.to_string(), case.temperature.to_string(), case.topp.to_string());
        let seed = case.seed.unwrap_or(1).to_string();
        let flags = ["-p", &case.prompt, "-n", &steps, "-t", &temp, "--top-p", &topp, "-s", &seed, "--kv", "i8"];
        let mut args = vec!["generate"];
        args.extend(flags);
        args.extend(["--ctx", "256"]);
        let (code, got, err) = device(&board, &args);
        assert_eq!(code, 0, "{}: {err}", case.name);
        let want = host(&model, &flags);
        let want_ids = &want["ids"].as_array().unwrap()[1..];
        assert_eq!(got["ids"].as_array().unwrap(), want_ids, "{}: ids", case.name);
        assert_eq!(got["text"], want["text"], "{}: text", case.name);
        let stack = got["stack_peak_bytes"].as_u64().unwrap();
        assert!(stack > 0 && stack <= 8 * 1024, "{}: peak stack {stack} bytes", case.name);
        eprintln!(
            "netduinoplus2 link {}: {} instructions/token, arena {} bytes, stack {stack} bytes, first token {:.3} s",
            case.name, got["instructions_per_token"], got["arena_bytes"], got["time_to_first_token_s"]
        );
    }

    // No slots: the CLI says so, the board refuses a raw UploadBegin, and serves on.
    let (code, _, err) = device(&board, &["upload", model.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("takes no uploads"), "{err}");
    let mut raw = Raw::connect(&board);
    let refused = raw.ask(&Request::UploadBegin { len: bytes.len() as u32, crc: file_crc(&bytes) });
    assert_eq!(refused, Reply::Error { kind: ErrorKind::UploadTooLarge, detail: 0 });
    assert_eq!(raw.sync(), (vec![], Reply::Info { model: Some((file_crc(&bytes), 255)) }));
}
