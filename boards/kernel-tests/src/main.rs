//! Device unit tests for the kernels that exist only on Cortex-M4F: the DSP
//! asm block sums (`kernels::arm_dsp::Dsp`, `arm_dsp::dot_i16_i8`), the FPU loops
//! (`kernels::arm_fpu`, `math::exp_shifted`, `math::softmax`) and the quantized
//! matvec they make (`Matrix::matvec`), each checked bit for bit against the
//! portable code (`kernels::Portable`, scalar loops) on deterministic
//! pseudo-random data and edge cases, in QEMU mps2-an386.
//!
//! Every check prints `ok NAME` or `FAIL NAME: ...`; the last line is
//! `N passed, M failed` and the exit code (semihosting) is 0 only if M = 0.
//! Run: `cargo run --release` here, or tests/tests/qemu_device_kernels.rs.
//!
//! With a model loaded where the mps2-an386 board loads one (memory.x
//! `_model_len_word`, `_model_start`), it also runs `Session::forward_window`
//! over it for each KV dtype and prints `session KV fnv=0x...` (an FNV-1a hash
//! of every position's logits bits), which the host test compares with the same
//! run on the host: the private attention loops (the hard-float value pass)
//! are reached that way.
//!
//! It first runs the runtime's own kernel suite (`kernels::suite::run_all`).
//! Only the runtime's public API is used; the checks are in this one file so
//! that following a renamed kernel is a local edit.
#![no_std]
#![no_main]

use core::fmt::Write as _;

use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hio};
use microlm::format::DType;
use microlm::kernels::{self, arm_dsp, arm_fpu, q4_0, q4_16, q8_0, q8_act, BlockSums, Matrix, Portable, QK};
use microlm::math;

/// Semihosting stdout.
struct Out(hio::HostStream);

impl core::fmt::Write for Out {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        self.0.write_all(s.as_bytes()).map_err(|_| core::fmt::Error)
    }
}

/// Passed and failed counts, and where to print.
struct Report {
    out: Out,
    passed: u32,
    failed: u32,
}

impl Report {
    /// Records one check: `first_bad` is `None` when it passed, else what differed.
    fn check(&mut self, name: &str, first_bad: Option<Mismatch>) {
        match first_bad {
            None => {
                self.passed += 1;
                let _ = writeln!(self.out, "ok {name}");
            }
            Some(m) => {
                self.failed += 1;
                let _ = writeln!(
                    self.out,
                    "FAIL {name}: case {}: device {:#010x}, portable {:#010x}",
                    m.case, m.device, m.portable
                );
            }
        }
    }
}

/// The first case of a check whose device result differs from the portable one (as bits).
#[derive(Clone, Copy)]
struct Mismatch {
    case: usize,
    device: u32,
    portable: u32,
}

/// `None` if every pair agrees, else the first that does not.
fn compare(pairs: impl Iterator<Item = (u32, u32)>) -> Option<Mismatch> {
    pairs.enumerate().find(|(_, (d, p))| d != p).map(|(case, (device, portable))| Mismatch { case, device, portable })
}

/// xorshift32: deterministic pseudo-random words.
struct Rng(u32);

impl Rng {
    fn next(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 17;
        self.0 ^= self.0 << 5;
        self.0
    }

    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 8) as f32 / (1u32 << 23) as f32 - 1.0
    }

    fn byte(&mut self) -> u8 {
        (self.next() >> 24) as u8
    }

    /// A finite f16 scale of moderate size (2^-10 .. 2^1), as little-endian bytes.
    fn scale(&mut self) -> [u8; 2] {
        let bits = (0x1800 + (self.next() % 0x2800) as u16) | (((self.next() & 1) as u16) << 15);
        bits.to_le_bytes()
    }
}

/// Weight byte patterns for a 32-byte q8_0 block / 16-byte q4_0 block: random, then edges.
const PATTERNS: usize = 8;

fn pattern_byte(rng: &mut Rng, pattern: usize, i: usize) -> u8 {
    match pattern {
        0..=2 => rng.byte(),
        3 => 0,
        4 => 0x7f,                            // +127 / nibbles 15 and 7
        5 => 0x80,                            // -128 / nibbles 0 and 8
        6 => [0x7f, 0x80][i % 2],             // alternating extremes
        _ => [0x00, 0xff, 0x0f, 0xf0][i % 4], // nibble extremes
    }
}

/// One prepared activation block from 32 quants by `pattern` and a random scale.
fn activation_block(rng: &mut Rng, pattern: usize) -> [u32; q8_act::BLOCK_WORDS] {
    let mut q8 = [0u8; q8_0::BLOCK_BYTES];
    q8[..2].copy_from_slice(&rng.scale());
    for i in 0..QK {
        q8[2 + i] = pattern_byte(rng, pattern, i);
    }
    let mut words = [0u32; q8_act::BLOCK_WORDS];
    q8_act::prepare_block(&q8, &mut words);
    words
}

fn pairs(block: &[u32; q8_act::BLOCK_WORDS]) -> &[u32; 16] {
    block[2..].try_into().unwrap_or(&[0; 16])
}

/// DSP q8 and q4 block sums against the portable ones, every weight pattern with every activation pattern.
fn block_sums(r: &mut Report) {
    let mut rng = Rng(0x1234_5678);
    let mut q8 = [(0u32, 0u32); PATTERNS * PATTERNS * 4];
    let mut q4 = q8;
    let mut n = 0;
    for wp in 0..PATTERNS {
        for xp in 0..PATTERNS {
            for _ in 0..4 {
                let x = activation_block(&mut rng, xp);
                let mut w = [0u8; 32];
                w.iter_mut().enumerate().for_each(|(i, b)| *b = pattern_byte(&mut rng, wp, i));
                let nib: &[u8; 16] = w[..16].try_into().unwrap_or(&[0; 16]);
                q8[n] = (kernels::arm_dsp::Dsp::q8(&w, pairs(&x)) as u32, Portable::q8(&w, pairs(&x)) as u32);
                q4[n] = (kernels::arm_dsp::Dsp::q4(nib, pairs(&x)) as u32, Portable::q4(nib, pairs(&x)) as u32);
                n += 1;
            }
        }
    }
    r.check("dsp q8 block sum = portable", compare(q8.iter().copied()));
    r.check("dsp q4 block sum = portable", compare(q4.iter().copied()));
    // The standalone DSP helpers agree with the trait's asm.
    let mut helpers = [(0u32, 0u32); 64];
    for (i, h) in helpers.iter_mut().enumerate() {
        let x = activation_block(&mut rng, i % PATTERNS);
        let mut w = [0u8; 32];
        w.iter_mut().enumerate().for_each(|(j, b)| *b = pattern_byte(&mut rng, (i / 2) % PATTERNS, j));
        *h = if i.is_multiple_of(2) {
            (arm_dsp::dot_q8(&w, pairs(&x)) as u32, Portable::q8(&w, pairs(&x)) as u32)
        } else {
            let nib: &[u8; 16] = w[..16].try_into().unwrap_or(&[0; 16]);
            (arm_dsp::dot_q4(nib, pairs(&x)) as u32, Portable::q4(nib, pairs(&x)) as u32)
        };
    }
    r.check("dsp dot_q8/dot_q4 = portable", compare(helpers.iter().copied()));
}

/// The i16 query · i8 key dot (i8 KV cache) against a scalar loop, for head sizes 1..=172.
fn dot_i16_i8(r: &mut Report) {
    let mut rng = Rng(0x0bad_cafe);
    let mut results = [(0u32, 0u32); 5 * 4];
    let mut n = 0;
    for &len in &[1usize, 8, 31, 33, 172] {
        for pattern in 0..4 {
            let mut q16 = [0i16; 172];
            let mut k = [0u8; 172];
            for i in 0..len {
                q16[i] = match pattern {
                    0 => (rng.next() >> 16) as i16,
                    1 => i16::MAX,
                    2 => i16::MIN + 1,
                    _ => [i16::MAX, i16::MIN][i % 2],
                };
                k[i] = match pattern {
                    0 => rng.byte(),
                    1 => 0x7f,
                    2 => 0x80,
                    _ => [0x80, 0x7f][i % 2],
                };
            }
            // Pair order for each whole group of four, the rest in element order.
            let mut words = [0u32; 86];
            for (i, &v) in q16[..len].iter().enumerate() {
                let pos = if i < len / 4 * 4 { q8_act::element_of(i) } else { i };
                words[pos / 2] |= u32::from(v as u16) << (16 * (pos % 2));
            }
            let scalar: i32 = q16[..len].iter().zip(&k[..len]).map(|(&a, &b)| i32::from(a) * i32::from(b as i8)).sum();
            results[n] = (arm_dsp::dot_i16_i8(&words[..len.div_ceil(2)], &k[..len]) as u32, scalar as u32);
            n += 1;
        }
    }
    r.check("dsp dot_i16_i8 = scalar (lengths 1, 8, 31, 33, 172; extremes)", compare(results.iter().copied()));
}

/// Portable q8_0/q4_0/q4_16 row bytes for `rows` × `cols`, random blocks with edge patterns.
fn quantized_rows(rng: &mut Rng, dtype: DType, rows: usize, cols: usize, out: &mut [u8]) -> usize {
    let row_bytes = dtype.row_bytes(cols).unwrap_or(0);
    let block = dtype.block_bytes().unwrap_or(q8_0::BLOCK_BYTES);
    // q4_16 blocks start with two scales, the others with one.
    let scales = if dtype == DType::Q4_16 { 4 } else { 2 };
    for (b, chunk) in out[..rows * row_bytes].chunks_exact_mut(block).enumerate() {
        for d in chunk[..scales].chunks_exact_mut(2) {
            d.copy_from_slice(&rng.scale());
        }
        for (i, q) in chunk[scales..].iter_mut().enumerate() {
            *q = pattern_byte(rng, b % PATTERNS, i);
        }
    }
    row_bytes
}

/// `Matrix::matvec` (DSP block sums) against the rows dotted with the portable block sums.
fn matvec(r: &mut Report) {
    let mut rng = Rng(0x5eed_0001);
    let mut w = [0u8; 6 * 6 * q8_0::BLOCK_BYTES];
    let mut x = [0f32; 172];
    let mut scratch = [0u32; 6 * q8_act::BLOCK_WORDS];
    for dtype in [DType::Q8_0, DType::Q4_0, DType::Q4_16] {
        let mut results = [(0u32, 0u32); 4 * 5 * 6];
        let mut n = 0;
        for &cols in &[1usize, 31, 33, 172] {
            for (case, rows) in [1usize, 2, 3, 5, 6].into_iter().enumerate() {
                let row_bytes = quantized_rows(&mut rng, dtype, rows, cols, &mut w);
                for (i, v) in x[..cols].iter_mut().enumerate() {
                    *v = match case {
                        0 => 0.0,
                        1 => [127.0, -127.0][i % 2],
                        _ => rng.unit() * 4.0,
                    };
                }
                let m = Matrix { dtype, rows, cols, data: &w[..rows * row_bytes] };
                let mut out = [0f32; 6];
                if m.matvec(&x[..cols], &mut out[..rows], &mut scratch).is_err() {
                    results[n] = (1, 0);
                    n += 1;
                    continue;
                }
                // The portable result: the same prepared activations, portable block sums.
                let words = q8_act::words(cols).unwrap_or(0);
                let xq = &mut scratch[..words];
                xq.fill(0);
                q8_act::prepare_row(&x[..cols], xq);
                for (row, &o) in out[..rows].iter().enumerate() {
                    let bytes = &w[row * row_bytes..][..row_bytes];
                    let portable = match dtype {
                        DType::Q4_0 => q4_0::vec_dot_with::<Portable>(bytes, xq),
                        DType::Q4_16 => q4_16::vec_dot_with::<Portable>(bytes, xq),
                        _ => q8_0::vec_dot_with::<Portable>(bytes, xq),
                    };
                    results[n] = (o.to_bits(), portable.to_bits());
                    n += 1;
                }
            }
        }
        let name = match dtype {
            DType::Q4_0 => "q4_0 matvec = portable",
            DType::Q4_16 => "q4_16 matvec = portable",
            _ => "q8_0 matvec = portable",
        };
        r.check(name, compare(results[..n].iter().copied()));
    }
}

/// Scores with exp's slow path (below the maximum by more than the fast
/// range's 87.33) at the first, a middle and the last slot: the first so far
/// below that exp is 0, the others in the subnormal range (exp ≈ 1e-41).
fn scores_with_slow_slots(rng: &mut Rng, n: usize, out: &mut [f32]) {
    for (i, s) in out[..n].iter_mut().enumerate() {
        *s = rng.unit() * 6.0;
        if i == 0 {
            *s = -200.0 + rng.unit();
        } else if i == n / 2 || i == n - 1 {
            *s = -65.0 + rng.unit() * 5.0;
        }
    }
    if n > 3 {
        out[1] = 30.0;
        // Around exp's fast-range edge (x = -87.33) and the n = -126 edge below it (-87.68).
        for (k, s) in out[2..n - 1].iter_mut().enumerate().filter(|(k, _)| k % 3 == 1) {
            *s = 30.0 - 87.2 - 0.55 * (k % 7) as f32 / 6.0;
        }
    }
}

/// `math::exp_shifted` (FPU fast-path runs and the cold path between them) and
/// `math::softmax` against the portable one-pass loop.
fn exp_loops(r: &mut Report) {
    let mut rng = Rng(0xfeed_beef);
    let mut results = [(0u32, 0u32); 6 * 2 * 64];
    let mut n = 0;
    for &len in &[1usize, 2, 7, 31, 33, 64] {
        for slow in [false, true] {
            let mut x = [0f32; 64];
            if slow {
                scores_with_slow_slots(&mut rng, len, &mut x);
            } else {
                x[..len].iter_mut().for_each(|v| *v = rng.unit() * 10.0);
            }
            let max = x[..len].iter().fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
            let mut portable = x;
            let mut sum = 0.0f32;
            for v in portable[..len].iter_mut() {
                *v = math::exp_at_most_zero(*v - max);
                sum += *v;
            }
            let mut device = x;
            let device_sum = math::exp_shifted(&mut device[..len], max);
            results[n] = (device_sum.to_bits(), sum.to_bits());
            n += 1;
            for i in 0..len {
                results[n] = (device[i].to_bits(), portable[i].to_bits());
                n += 1;
                if n == results.len() {
                    break;
                }
            }
            if n == results.len() {
                break;
            }
        }
    }
    r.check("exp_shifted = portable exp (slow path at first, middle, last)", compare(results[..n].iter().copied()));

    let mut x = [0f32; 33];
    scores_with_slow_slots(&mut rng, 33, &mut x);
    let mut device = x;
    math::softmax(&mut device);
    let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
    let mut portable = x;
    let mut sum = 0.0f32;
    for v in portable.iter_mut() {
        *v = math::exp_at_most_zero(*v - max);
        sum += *v;
    }
    portable.iter_mut().for_each(|v| *v /= sum);
    r.check("softmax = portable", compare(device.iter().zip(&portable).map(|(d, p)| (d.to_bits(), p.to_bits()))));
}

/// Shape of the attention checks: 4 KV heads of 8, `SLOTS` positions, each head's
/// rows contiguous (the f32 cache's head-major layout).
const HEAD: usize = 8;
const KV_HEADS: usize = 4;
const SLOTS: usize = 40;

/// `arm_fpu::scores8` against the portable score loop, for every KV head's rows
/// (odd and even slot counts). Scores compare as values (a sum of zero products
/// may be −0.0 on the device); the fifth head has a zero query.
fn scores(r: &mut Report) {
    let mut rng = Rng(0xa77e_0001);
    let mut keys = [0f32; KV_HEADS * SLOTS * HEAD];
    keys.iter_mut().for_each(|k| *k = rng.unit() * 3.0);
    let mut results = [(0u32, 0u32); (KV_HEADS + 1) * 3 * (SLOTS + 1)];
    let mut n = 0;
    // sqrt(8), as the runtime computes it (any value does: both sides divide by the same one).
    let sqrt_head = 2.828_427_f32;
    let value = |v: f32| if v == 0.0 { 0 } else { v.to_bits() };
    for head in 0..=KV_HEADS {
        for &slots in &[1usize, 17, SLOTS] {
            let mut q = [0f32; HEAD];
            if head < KV_HEADS {
                q.iter_mut().for_each(|v| *v = rng.unit() * 2.0);
            }
            let rows = &keys[(head % KV_HEADS) * SLOTS * HEAD..][..slots * HEAD];
            let mut device = [0f32; SLOTS];
            let max = arm_fpu::scores8(&q, rows, sqrt_head, f32::NEG_INFINITY, &mut device[..slots]);
            let mut portable_max = f32::NEG_INFINITY;
            for i in 0..slots {
                let mut s = 0.0f32;
                for j in 0..HEAD {
                    s += q[j] * rows[i * HEAD + j];
                }
                let s = s / sqrt_head;
                if s > portable_max {
                    portable_max = s;
                }
                results[n] = (value(device[i]), value(s));
                n += 1;
            }
            results[n] = (max.map_or(0xdead_0000, value), value(portable_max));
            n += 1;
        }
    }
    r.check(
        "vfp scores8 = portable (every KV head, a zero query, 1/17/40 slots)",
        compare(results[..n].iter().copied()),
    );
}

/// The fused exp · value pass (`arm_fpu::exp_mix8_pairs`, with the cold path between
/// its runs as the runtime's f32 attention takes it) against the portable loop,
/// for every KV head with the slow path at the first, a middle and the last slot.
fn exp_mix(r: &mut Report) {
    let mut rng = Rng(0x00c0_ffee);
    let mut values = [0f32; KV_HEADS * SLOTS * HEAD];
    values.iter_mut().for_each(|v| *v = rng.unit() * 5.0);
    let mut results = [(0u32, 0u32); KV_HEADS * 4 * 9];
    let mut n = 0;
    for head in 0..KV_HEADS {
        for &slots in &[1usize, 2, 33, SLOTS] {
            let mut scores = [0f32; SLOTS];
            scores_with_slow_slots(&mut rng, slots, &mut scores);
            let scores = &scores[..slots];
            let max = scores.iter().fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
            let rows = &values[head * SLOTS * HEAD..][..slots * HEAD];

            let (mut sum, mut acc, mut at) = (0.0f32, [0.0f32; 8], 0);
            while at < slots {
                let run_rows = rows.get(at * HEAD..).unwrap_or(&[]);
                at += arm_fpu::exp_mix8_pairs(&scores[at..], max, run_rows, &mut sum, &mut acc).unwrap_or(0);
                let (Some(&s), Some(row)) = (scores.get(at), rows.get(at * HEAD..).and_then(|r| r.get(..8))) else {
                    break;
                };
                let e = math::exp_at_most_zero(s - max);
                sum += e;
                for (a, &v) in acc.iter_mut().zip(row) {
                    *a += e * v;
                }
                at += 1;
            }

            let (mut psum, mut pacc) = (0.0f32, [0.0f32; 8]);
            for (i, &s) in scores.iter().enumerate() {
                let e = math::exp_at_most_zero(s - max);
                psum += e;
                for (a, &v) in pacc.iter_mut().zip(&rows[i * HEAD..][..8]) {
                    *a += e * v;
                }
            }
            results[n] = (sum.to_bits(), psum.to_bits());
            n += 1;
            for j in 0..8 {
                results[n] = (acc[j].to_bits(), pacc[j].to_bits());
                n += 1;
            }
        }
    }
    r.check(
        "vfp exp_mix8_pairs + cold path = portable (every KV head, slow first/middle/last)",
        compare(results[..n].iter().copied()),
    );
}

extern "C" {
    // mps2-an386 memory.x: the loaded model's length word and the file.
    static _model_len_word: u32;
    static _model_start: u8;
    static _model_end: u8;
}

/// Words of the arena for the loaded model's sessions (1 MiB).
const ARENA_WORDS: usize = 1 << 18;
static mut ARENA: [u32; ARENA_WORDS] = [0; ARENA_WORDS];

/// Positions, context and attention sinks of the session runs: the ring wraps several times.
const POSITIONS: usize = 150;
const CTX: usize = 24;
const SINKS: usize = 2;

/// `session KV fnv=...` for each KV dtype over the model QEMU loaded, if any.
fn sessions(r: &mut Report) {
    // SAFETY: only the symbols' addresses are taken; the length word is in RAM no section uses.
    let len = unsafe { core::ptr::read_volatile(core::ptr::addr_of!(_model_len_word)) } as usize;
    let max = core::ptr::addr_of!(_model_end) as usize - core::ptr::addr_of!(_model_start) as usize;
    if len == 0 || len > max {
        let _ = writeln!(r.out, "no model loaded: session runs skipped");
        return;
    }
    // SAFETY: QEMU's loader wrote `len` bytes at `_model_start`, in the window no section uses.
    let bytes = unsafe { core::slice::from_raw_parts(core::ptr::addr_of!(_model_start), len) };
    // SAFETY: `main` calls this once; nothing else refers to ARENA.
    let arena = unsafe { &mut *core::ptr::addr_of_mut!(ARENA) };
    let model = match microlm::Model::parse(bytes) {
        Ok(m) => m,
        Err(e) => {
            r.failed += 1;
            let _ = writeln!(r.out, "FAIL session: the loaded model does not parse: {e}");
            return;
        }
    };
    let vocab = model.config().vocab_size as u32;
    for kv in microlm::KvDtype::ALL {
        let words: &mut [u32] = &mut arena[..];
        // SAFETY: a [u32] viewed as its bytes (same memory, 4-byte aligned, no padding).
        let bytes = unsafe { core::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), words.len() * 4) };
        let mut session = match microlm::Session::new(&model, bytes, CTX, kv) {
            Ok(s) => s,
            Err(e) => {
                r.failed += 1;
                let _ = writeln!(r.out, "FAIL session {kv}: {e}");
                return;
            }
        };
        let mut hash = 0x811c_9dc5u32;
        for pos in 0..POSITIONS {
            let token = (pos as u32 * 7 + 1) % vocab;
            match session.forward_window(token, pos, SINKS) {
                Ok(logits) => {
                    for v in logits.iter() {
                        hash = (hash ^ v.to_bits()).wrapping_mul(0x0100_0193);
                    }
                }
                Err(e) => {
                    r.failed += 1;
                    let _ = writeln!(r.out, "FAIL session {kv} at position {pos}: {e}");
                    break;
                }
            }
        }
        let _ = writeln!(r.out, "session {kv} fnv={hash:#010x}");
    }
}

/// The runtime's own kernel suite (`kernels::suite::run_all`: the checks the
/// host runs for every instruction set), here for the ones this core has.
fn runtime_suite(r: &mut Report) {
    match kernels::suite::run_all() {
        Ok(()) => {
            r.passed += 1;
            let _ = writeln!(r.out, "ok suite::run_all");
        }
        Err(failure) => {
            r.failed += 1;
            let _ = writeln!(r.out, "FAIL suite::run_all: {failure}");
        }
    }
}

#[entry]
fn main() -> ! {
    let Ok(stdout) = hio::hstdout() else { exit(false) };
    let mut r = Report { out: Out(stdout), passed: 0, failed: 0 };
    let _ = writeln!(r.out, "best kernels: {:?}", kernels::Isa::best());
    runtime_suite(&mut r);
    block_sums(&mut r);
    dot_i16_i8(&mut r);
    matvec(&mut r);
    exp_loops(&mut r);
    scores(&mut r);
    exp_mix(&mut r);
    sessions(&mut r);
    let _ = writeln!(r.out, "{} passed, {} failed", r.passed, r.failed);
    exit(r.failed == 0)
}

/// Ends the QEMU run with exit code 0 (`ok`) or 1.
fn exit(ok: bool) -> ! {
    debug::exit(if ok { debug::EXIT_SUCCESS } else { debug::EXIT_FAILURE });
    // Not reached under QEMU semihosting.
    loop {
        cortex_m::asm::wfi();
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    if let Ok(stdout) = hio::hstdout() {
        let mut out = Out(stdout);
        let _ = writeln!(out, "FAIL panic: {info}");
        let _ = writeln!(out, "0 passed, 1 failed");
    }
    exit(false)
}
