//! `microlm device --socket`: the CLI against the device-side link server
//! (the code every board runs), served here on a Unix socket from a thread:
//! upload, info, a generation equal to `microlm generate`, and the errors a
//! user sees.

use std::io::{ErrorKind as IoKind, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use microlm_link::server::{Port, Server};
use microlm_tests::link::{blank_flash, VecArena, INFO};
use microlm_tests::{converted, run_cli, scratch_dir};

/// The board's serial line: one accepted connection at a time.
struct SocketPort {
    stream: Option<UnixStream>,
}

impl Port for SocketPort {
    fn read(&mut self) -> Option<u8> {
        let s = self.stream.as_mut()?;
        let mut b = [0u8];
        match s.read(&mut b) {
            Ok(1) => Some(b[0]),
            Ok(_) => {
                self.stream = None;
                None
            }
            Err(e) if e.kind() == IoKind::WouldBlock => None,
            Err(_) => {
                self.stream = None;
                None
            }
        }
    }
    fn write(&mut self, bytes: &[u8]) {
        if let Some(s) = self.stream.as_mut() {
            s.set_nonblocking(false).ok();
            if s.write_all(bytes).is_err() {
                self.stream = None;
                return;
            }
            s.set_nonblocking(true).ok();
        }
    }
    fn reset(&mut self) {}
}

/// Serves the link on a fresh socket until `stop`; returns its path.
fn serve(name: &str, arena: usize, stop: Arc<AtomicBool>) -> PathBuf {
    let path = scratch_dir("device-cli").join(format!("{name}.sock"));
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let mut server =
            Server::new(Some(blank_flash(2 << 20)), None, VecArena::new(arena), SocketPort { stream: None }, INFO);
        while !stop.load(Ordering::SeqCst) {
            if server.port().stream.is_none() {
                if let Ok((s, _)) = listener.accept() {
                    s.set_nonblocking(true).unwrap();
                    server.port().stream = Some(s);
                }
            }
            server.poll();
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
    });
    path
}

fn device(sock: &Path, args: &[&str]) -> (i32, String, String) {
    let mut all: Vec<&std::ffi::OsStr> = vec!["device".as_ref(), "--socket".as_ref(), sock.as_os_str()];
    all.extend(args.iter().map(std::ffi::OsStr::new));
    run_cli(all)
}

fn last_json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout.trim().lines().last().unwrap()).unwrap()
}

#[test]
fn upload_then_generate_over_the_link_equals_microlm_generate() {
    let stop = Arc::new(AtomicBool::new(false));
    let sock = serve("roundtrip", 1 << 20, stop.clone());
    let (code, out, err) = device(&sock, &["info", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert!(last_json(&out)["model"].is_null());
    // Without a model, generation is refused with the way out.
    let (code, _, err) = device(&sock, &["generate", "-p", "Hi"]);
    assert_ne!(code, 0);
    assert!(err.contains("upload one with"), "{err}");

    let model = converted("q8_0");
    let (code, out, err) = device(&sock, &["--json", "upload", model.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let up = last_json(&out);
    assert_eq!(up["bytes"].as_u64().unwrap(), std::fs::metadata(&model).unwrap().len());
    assert_eq!(up["info"]["model"]["slot"], "A");

    let flags = ["-p", "Once upon a time", "-n", "64", "-t", "0.8", "-s", "42", "--kv", "i8"];
    let mut args = vec!["--json", "generate"];
    args.extend(flags);
    let (code, out, err) = device(&sock, &args);
    assert_eq!(code, 0, "{err}");
    let got = last_json(&out);
    let mut host_args: Vec<&std::ffi::OsStr> = vec!["generate".as_ref(), model.as_os_str(), "--json".as_ref()];
    host_args.extend(flags.iter().map(std::ffi::OsStr::new));
    let (code, host_out, err) = run_cli(host_args);
    assert_eq!(code, 0, "{err}");
    let want = last_json(&host_out);
    // The host lists BOS first; the link sends every position's token after it.
    let want_ids: Vec<u64> = want["ids"].as_array().unwrap()[1..].iter().map(|v| v.as_u64().unwrap()).collect();
    let got_ids: Vec<u64> = got["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    assert_eq!(got_ids, want_ids);
    assert_eq!(got["text"], want["text"]);
    assert_eq!(got["generated_tokens"], want["generated_tokens"]);

    // A file that is no model is refused before anything is sent.
    let junk = scratch_dir("device-cli").join("junk.mlm");
    std::fs::write(&junk, b"not a model").unwrap();
    let (code, _, err) = device(&sock, &["upload", junk.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("is not a model file"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // The model still serves.
    let (_, out, _) = device(&sock, &["info", "--json"]);
    assert_eq!(last_json(&out)["model"]["slot"], "A");
    stop.store(true, Ordering::SeqCst);
}

#[test]
fn link_errors_are_one_line() {
    let stop = Arc::new(AtomicBool::new(false));
    let sock = serve("errors", 2000, stop.clone());
    let model = converted("q8_0");
    let (code, _, err) = device(&sock, &["upload", model.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    for (args, expect) in [
        (vec!["generate", "-t", "0", "-n", "8"], "cannot allocate the"),
        (vec!["generate", "--window"], "--window is not available over the link"),
        (vec!["generate", "--top-k", "100000", "--ctx", "8"], "refused the top-k setting"),
    ] {
        let (code, _, err) = device(&sock, &args);
        assert_ne!(code, 0, "{args:?}");
        assert!(err.contains(expect), "{args:?}: expected {expect:?} in {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
    }
    stop.store(true, Ordering::SeqCst);
    // Nobody listening: a clear error, not a hang.
    let gone = scratch_dir("device-cli").join("nobody.sock");
    let (code, _, err) = device(&gone, &["info"]);
    assert_ne!(code, 0);
    assert!(err.contains("cannot connect to"), "{err}");
}
