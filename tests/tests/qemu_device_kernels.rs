//! Device unit tests: boards/kernel-tests, built for thumbv7em-none-eabihf and
//! run in QEMU mps2-an386, checks the Cortex-M4F kernels (DSP block sums and
//! i16·i8 dot, the quantized matvec, the FPU exp, score and value loops)
//! bit for bit against the portable code on pseudo-random data and edge cases.
//! It prints `ok NAME` / `FAIL NAME: ...` per check, then `N passed, M failed`,
//! and exits non-zero on any failure.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use microlm_tests::root;
use serde_json::Value;

/// Longest the run may take before it counts as a hang (it takes well under a second).
const BOUND: Duration = Duration::from_secs(60);

/// Checks the harness makes; fewer passes means some were dropped.
const CHECKS: u32 = 10;

#[test]
fn device_kernels_match_portable_on_mps2_an386() {
    let out = Command::new(env!("CARGO"))
        .current_dir(root().join("boards/kernel-tests"))
        .args(["build", "--release", "--locked", "--message-format=json-render-diagnostics"])
        .stderr(Stdio::inherit())
        .output()
        .expect("run cargo");
    assert!(out.status.success(), "building boards/kernel-tests failed");
    let elf = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find_map(|m| m.get("executable").and_then(Value::as_str).map(String::from))
        .expect("cargo named no executable");

    let mut child = Command::new("qemu-system-arm")
        .args(["-M", "mps2-an386", "-nographic", "-serial", "null", "-monitor", "none"])
        .args(["-semihosting-config", "enable=on,target=native", "-kernel", &elf])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run qemu-system-arm");
    let mut pipe = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        pipe.read_to_string(&mut s).unwrap();
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > BOUND {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the device kernel tests ran longer than {BOUND:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = reader.join().unwrap();
    print!("{stdout}");
    let failures: Vec<&str> = stdout.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert!(status.success() && failures.is_empty(), "device kernel tests failed ({status}):\n{}", failures.join("\n"));
    assert!(stdout.contains("native block sums: microlm::kernels::dsp::Dsp"), "not the DSP kernels:\n{stdout}");
    let last = stdout.trim_end().rsplit('\n').next().unwrap_or("");
    assert_eq!(last, format!("{CHECKS} passed, 0 failed"), "{stdout}");
}
