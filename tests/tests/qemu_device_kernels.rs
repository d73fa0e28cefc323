//! Device unit tests: boards/kernel-tests, built for thumbv7em-none-eabihf and
//! run in QEMU mps2-an386, checks the Cortex-M4F kernels (DSP block sums and
//! i16·i8 dot, the quantized matvec, the FPU exp, score and value loops)
//! bit for bit against the portable code on pseudo-random data and edge cases.
//! It prints `ok NAME` / `FAIL NAME: ...` per check, then `N passed, M failed`,
//! and exits non-zero on any failure.
//!
//! The attention loops the runtime keeps private (the hard-float value pass)
//! are checked through `Session::forward_window`: QEMU loads a tiny synthetic
//! model with 8-wide heads and large query/key weights (so many scores fall
//! outside exp's fast range, at every slot), the firmware hashes every
//! position's logits for each KV dtype, and the host's portable run of the same
//! session must give the same hash.

use std::process::{Command, Stdio};
use std::time::Duration;

use microlm::{KvDtype, Model, Session};
use microlm_tests::{run_convert, scratch_dir, shared, synthetic_checkpoint, wait_bounded};

/// Longest the run may take before it counts as a hang (it takes well under a second).
const BOUND: Duration = Duration::from_secs(60);

/// Checks the harness makes; fewer passes means some were dropped.
const CHECKS: u32 = 12;

/// Session runs of the firmware (`sessions` in boards/kernel-tests): positions, context, sinks.
const POSITIONS: usize = 150;
const CTX: usize = 24;
const SINKS: usize = 2;

/// The tiny model of the session runs: 4 heads of 8 (the FPU value pass), hidden 64,
/// the query and key weights `qk_scale` times the usual size, so attention scores spread
/// widely and leave exp's fast range.
fn checkpoint(qk_scale: f32) -> Vec<u8> {
    synthetic_checkpoint(64, qk_scale, 0x2545_F491_4F6C_DD1D)
}

/// The host's hash of the firmware's session run: FNV-1a over every position's logits bits.
fn host_session_hash(bytes: &[u8], kv: KvDtype) -> u32 {
    let mut words = vec![0u32; bytes.len().div_ceil(4)];
    bytemuck::cast_slice_mut::<u32, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
    let model = Model::parse(&bytemuck::cast_slice::<u32, u8>(&words)[..bytes.len()]).unwrap();
    let plan = model.plan(CTX, kv).unwrap();
    let mut arena = vec![0u32; plan.total.div_ceil(4)];
    let mut session = Session::new(&model, bytemuck::cast_slice_mut(&mut arena), CTX, kv).unwrap();
    let vocab = model.config().vocab_size as u32;
    let mut hash = 0x811c_9dc5u32;
    for pos in 0..POSITIONS {
        let token = (pos as u32 * 7 + 1) % vocab;
        for v in session.forward_window(token, pos, SINKS).unwrap().iter() {
            hash = (hash ^ v.to_bits()).wrapping_mul(0x0100_0193);
        }
    }
    hash
}

#[test]
fn device_kernels_match_portable_on_mps2_an386() {
    let dir = scratch_dir("device-kernels");
    let (bin, mlm) = (dir.join("wide-scores.bin"), dir.join("wide-scores.mlm"));
    std::fs::write(&bin, checkpoint(6.0)).unwrap();
    let (code, _, err) = run_convert(&bin, &shared().join("models/tok512.bin"), &[], &mlm);
    assert_eq!(code, 0, "convert failed: {err}");
    let model = std::fs::read(&mlm).unwrap();

    let elf = microlm_tests::build_firmware("kernel-tests", None, &[], &[]);

    let child = Command::new("qemu-system-arm")
        .args(["-M", "mps2-an386", "-nographic", "-serial", "null", "-monitor", "none"])
        .args(["-semihosting-config", "enable=on,target=native", "-kernel", elf.to_str().unwrap()])
        // Where the mps2-an386 memory.x puts the model (the firmware links with it).
        .arg("-device")
        .arg(format!("loader,addr=0x21000000,data={},data-len=4", model.len()))
        .arg("-device")
        .arg(format!("loader,file={},addr=0x21000020,force-raw=on", mlm.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run qemu-system-arm");
    let Some((status, stdout)) = wait_bounded(child, BOUND) else {
        panic!("the device kernel tests ran longer than {BOUND:?}");
    };
    print!("{stdout}");
    let failures: Vec<&str> = stdout.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert!(status.success() && failures.is_empty(), "device kernel tests failed ({status}):\n{}", failures.join("\n"));
    assert!(stdout.contains("best kernels: ArmDsp"), "not the DSP kernels:\n{stdout}");
    let last = stdout.trim_end().rsplit('\n').next().unwrap_or("");
    assert_eq!(last, format!("{CHECKS} passed, 0 failed"), "{stdout}");
    for kv in KvDtype::ALL {
        let line = format!("session {} fnv={:#010x}", kv.name(), host_session_hash(&model, kv));
        assert!(
            stdout.lines().any(|l| l == line),
            "the device's {kv} session differs from the host's ({line}):\n{stdout}"
        );
    }
}
