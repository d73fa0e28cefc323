//! The link end to end under QEMU: the mps2-an386 link firmware starts with no
//! model, takes stories260K q8_0 by upload over its UART0 (QEMU `-serial` on a
//! Unix socket), and then gives exactly the host's ids and text for the five
//! reference cases. A second model, a corrupt upload and a link cut in the
//! middle of an upload followed by a reset leave the last committed model
//! serving. `microlm qemu --link` drives the same path in one command.

use std::path::Path;
use std::time::Duration;

use microlm_link::{file_crc, ErrorKind, Request, MAX_CHUNK};
use microlm_tests::link_qemu::{an386_firmware, Board, Raw, Reply};
use microlm_tests::{converted, reference_cases, run_cli, ModelFile};

fn device(board: &Board, args: &[&str]) -> serde_json::Value {
    let mut all: Vec<&std::ffi::OsStr> =
        vec!["device".as_ref(), "--socket".as_ref(), board.socket.as_os_str(), "--json".as_ref()];
    all.extend(args.iter().map(std::ffi::OsStr::new));
    let (code, out, err) = run_cli(all);
    assert_eq!(code, 0, "microlm device {args:?}: {err}");
    serde_json::from_str(out.trim().lines().last().unwrap()).unwrap()
}

/// The error kind of a reply, `None` for any other reply.
fn error_kind(reply: Reply) -> Option<ErrorKind> {
    match reply {
        Reply::Error { kind, .. } => Some(kind),
        _ => None,
    }
}

fn host_ids(model: &Path, flags: &[&str]) -> serde_json::Value {
    let mut args: Vec<&std::ffi::OsStr> = vec!["generate".as_ref(), model.as_os_str(), "--json".as_ref()];
    args.extend(flags.iter().map(std::ffi::OsStr::new));
    let (code, out, err) = run_cli(args);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(out.trim().lines().last().unwrap()).unwrap()
}

fn ids(v: &serde_json::Value) -> Vec<u64> {
    v["ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect()
}

#[test]
fn upload_over_the_link_then_the_reference_cases_equal_the_host() {
    let elf = an386_firmware();
    let (q8, q4) = (converted("q8_0"), converted("q4_0"));

    // One command: boot, upload, generate.
    let flags = ["-p", "Once upon a time", "-n", "40", "-t", "0", "--kv", "i8"];
    let mut args: Vec<&std::ffi::OsStr> = vec!["qemu".as_ref(), q4.as_os_str(), "--link".as_ref()];
    args.extend(["--firmware".as_ref(), elf.as_os_str(), "--json".as_ref()]);
    args.extend(flags.iter().map(std::ffi::OsStr::new));
    let (code, out, err) = run_cli(args);
    assert_eq!(code, 0, "microlm qemu --link: {err}");
    let got: serde_json::Value = serde_json::from_str(out.trim().lines().last().unwrap()).unwrap();
    assert_eq!(ids(&got), ids(&host_ids(&q4, &flags))[1..], "qemu --link ids");

    let board = Board::boot("mps2-an386", &elf, "an386");
    assert!(device(&board, &["info"])["model"].is_null(), "a fresh board has no model");
    let up = device(&board, &["upload", q8.to_str().unwrap()]);
    let crc8 = up["info"]["model"]["crc"].as_str().unwrap().to_string();
    eprintln!(
        "upload of {} bytes: {:.1} s ({:.1} KiB/s)",
        up["bytes"],
        up["seconds"].as_f64().unwrap(),
        up["kib_per_s"].as_f64().unwrap()
    );

    // The five llama2.c reference cases on the q8_0 file: the host's ids and text.
    let file = ModelFile::read(&q8).unwrap();
    let model = file.parse(false).unwrap();
    for case in reference_cases() {
        let (want_ids, want_text, _) = microlm_tests::generate(&model, &case);
        let (steps, temp, topp, seed) = (
            case.steps.to_string(),
            case.temperature.to_string(),
            case.topp.to_string(),
            case.seed.unwrap_or(1).to_string(),
        );
        let got = device(
            &board,
            &["generate", "-p", &case.prompt, "-n", &steps, "-t", &temp, "--top-p", &topp, "-s", &seed, "--kv", "f32"],
        );
        let want: Vec<u64> = want_ids[1..].iter().map(|&i| u64::from(i)).collect();
        assert_eq!(ids(&got), want, "{}: ids", case.name);
        assert_eq!(got["text"].as_str().unwrap(), want_text, "{}: text", case.name);
        if case.name == "greedy" {
            eprintln!(
                "greedy: time to first token {:.3} s, {} instructions/token",
                got["time_to_first_token_s"].as_f64().unwrap(),
                got["instructions_per_token"]
            );
        }
    }

    // Cut the link in the middle of an upload, then reset: the q8_0 model still serves.
    let second = std::fs::read(&q4).unwrap();
    let mut raw = Raw::connect(&board);
    raw.send(&Request::UploadBegin { len: second.len() as u32, crc: file_crc(&second) });
    assert_eq!(error_kind(raw.recv()), None);
    for (i, piece) in second.chunks(MAX_CHUNK).take(64).enumerate() {
        raw.send(&Request::UploadChunk { offset: (i * MAX_CHUNK) as u32, bytes: piece });
        assert_eq!(error_kind(raw.recv()), None);
    }
    raw.send(&Request::Reset);
    drop(raw);
    std::thread::sleep(Duration::from_millis(500));
    let info = device(&board, &["info"]);
    assert_eq!(info["model"]["crc"].as_str().unwrap(), crc8, "after a cut upload and a reset");
    assert_eq!(info["model"]["slot"], "A");

    // A second model: slot B serves it, with the host's ids.
    let up = device(&board, &["upload", q4.to_str().unwrap()]);
    assert_eq!(up["info"]["model"]["slot"], "B");
    let flags = ["-p", "Tom and Sue", "-n", "30", "-t", "0", "--kv", "i8"];
    let mut args = vec!["generate"];
    args.extend(flags);
    assert_eq!(ids(&device(&board, &args)), ids(&host_ids(&q4, &flags))[1..]);

    // A corrupt upload (wrong CRC) is refused; the second model still serves.
    let mut raw = Raw::connect(&board);
    let junk = vec![0xA5u8; 4096];
    raw.send(&Request::UploadBegin { len: junk.len() as u32, crc: file_crc(&junk) ^ 1 });
    assert_eq!(error_kind(raw.recv()), None);
    for (i, piece) in junk.chunks(MAX_CHUNK).enumerate() {
        raw.send(&Request::UploadChunk { offset: (i * MAX_CHUNK) as u32, bytes: piece });
        assert_eq!(error_kind(raw.recv()), None);
    }
    raw.send(&Request::UploadCommit);
    assert_eq!(error_kind(raw.recv()), Some(ErrorKind::UploadCrc));
    drop(raw);
    assert_eq!(device(&board, &["info"])["model"]["slot"], "B");
}
