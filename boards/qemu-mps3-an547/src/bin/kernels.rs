//! Device kernel tests for the Cortex-M55: the runtime's kernel suite
//! (`kernels::suite::run_all`, which here covers the MVE block sums
//! `arm_mve::Mve`, the MVE matvec of `Isa::Mve`, and through `kernels::scores_f32`,
//! `mix_f32_head8`, `math::swiglu`, `q8_act::prepare_row`, `math::rope_rotate`,
//! the sampler's argmax, `q8_0::dequantize_row` and `math`'s RMSNorm parts the MVE
//! attention, SwiGLU, quantizers, RoPE, argmax, dequantization and FPU loops, with
//! subnormal inputs), then the MVE matvec (and, row by row, `vec_dot`) against the
//! portable one, bit for bit, on shapes that span several of its activation chunks
//! (`arm_mve::CHUNK_BLOCKS` blocks), in QEMU mps3-an547.
//!
//! Prints `ok NAME` or `FAIL NAME: ...` per check, then `N passed, M failed`;
//! the semihosting exit code is 0 only if M = 0. Run:
//! `cargo run --release --bin microlm-qemu-mps3-an547-kernels` here, or
//! tests/tests/qemu_boards.rs.
#![no_std]
#![no_main]

use core::fmt::Write as _;

use cortex_m_rt::entry;
use microlm::format::DType;
use microlm::kernels::{self, arm_mve, q4_0, q4_16, q8_0, q8_act, Isa, Matrix, QK};
use microlm_board::host::{exit, Out};
use microlm_board::Console as _;

/// Largest test shape: rows, and blocks per row (two chunk boundaries and a partial chunk).
const ROWS: usize = 11;
const BLOCKS: usize = 2 * arm_mve::CHUNK_BLOCKS + 3;
const COLS: usize = BLOCKS * QK;

/// Weight rows (q8_0 blocks are the larger), activations and their prepared words.
static mut W: [u8; ROWS * BLOCKS * q8_0::BLOCK_BYTES] = [0; ROWS * BLOCKS * q8_0::BLOCK_BYTES];
static mut X: [f32; COLS] = [0.0; COLS];
static mut SCRATCH: [u32; BLOCKS * q8_act::BLOCK_WORDS] = [0; BLOCKS * q8_act::BLOCK_WORDS];

/// xorshift32 values in [-1, 1) with an outlier (×8) every 29th and an exact zero every 31st.
fn fill(out: &mut [f32], seed: u32) {
    let mut s = seed.wrapping_mul(2_654_435_761) | 1;
    for (i, v) in out.iter_mut().enumerate() {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        let u = (s >> 8) as f32 / (1u32 << 23) as f32 - 1.0;
        *v = match (i % 29, i % 31) {
            (_, 0) => 0.0,
            (0, _) => u * 8.0,
            _ => u,
        };
    }
}

/// `Matrix::matvec_on(Isa::Mve)` equals `matvec_on(Isa::Portable)` bit for bit for
/// every dtype, row count and column count in the lists, with weight rows scaled by
/// powers of two from 2^-20 (f16 subnormal block scales) to 2^16, and the activations
/// of every other case by 2^-18 (f16 subnormal activation scales).
fn mve_matvec_equals_portable(out: &mut Out) -> bool {
    // SAFETY: `main` calls this once; nothing else refers to the statics.
    let (w, x, scratch) = unsafe {
        (&mut *core::ptr::addr_of_mut!(W), &mut *core::ptr::addr_of_mut!(X), &mut *core::ptr::addr_of_mut!(SCRATCH))
    };
    let mut row = [0f32; COLS];
    let mut case = 0u32;
    for dtype in [DType::Q8_0, DType::Q4_0, DType::Q4_16] {
        for cols in [1, 33, 2 * QK, arm_mve::CHUNK_BLOCKS * QK, arm_mve::CHUNK_BLOCKS * QK + 1, COLS - 7, COLS] {
            // 11 rows: the q8_0 kernel's groups of four (two), then a pair and a single row; 64
            // columns take the two-block loop.
            for rows in [1, 2, 5, ROWS] {
                case += 1;
                let row_bytes = dtype.row_bytes(cols).unwrap_or(0);
                for r in 0..rows {
                    fill(&mut row[..cols], case * 16 + r as u32);
                    let scale = f32::from_bits((107 + 6 * r as u32) << 23);
                    row[..cols].iter_mut().for_each(|v| *v *= scale);
                    let dst = &mut w[r * row_bytes..(r + 1) * row_bytes];
                    match dtype {
                        DType::Q8_0 => q8_0::quantize_row(&row[..cols], dst),
                        DType::Q4_16 => q4_16::quantize_row(&row[..cols], dst),
                        _ => q4_0::quantize_row(&row[..cols], dst),
                    }
                }
                fill(&mut x[..cols], case * 16 + 15);
                // Every other case, activations scaled by 2^-18: f16 subnormal activation
                // scales, so the f32 part's products reach its smallest values (2^-48).
                if case.is_multiple_of(2) {
                    x[..cols].iter_mut().for_each(|v| *v *= f32::from_bits((127 - 18) << 23));
                }
                let m = Matrix { dtype, rows, cols, data: &w[..rows * row_bytes] };
                let (mut a, mut b, mut c) = ([f32::NAN; ROWS], [f32::NAN; ROWS], [f32::NAN; ROWS]);
                let ok = m.matvec_on(Isa::Mve, &x[..cols], &mut a[..rows], scratch).is_ok()
                    && m.matvec_on(Isa::Portable, &x[..cols], &mut b[..rows], scratch).is_ok();
                // One row at a time through `vec_dot` (prepared activations, narrowed by the
                // MVE matvec a chunk at a time).
                q8_act::prepare_row(&x[..cols], &mut scratch[..q8_act::words(cols).unwrap_or(0)]);
                let xq = &scratch[..q8_act::words(cols).unwrap_or(0)];
                for (r, c) in c.iter_mut().enumerate().take(rows) {
                    let row = &w[r * row_bytes..(r + 1) * row_bytes];
                    *c = match dtype {
                        DType::Q8_0 => q8_0::vec_dot(row, xq),
                        DType::Q4_0 => q4_0::vec_dot(row, xq),
                        _ => b[r],
                    };
                }
                if let Some(r) =
                    (0..rows).find(|&r| !ok || a[r].to_bits() != b[r].to_bits() || c[r].to_bits() != b[r].to_bits())
                {
                    let _ = writeln!(
                        out,
                        "FAIL mve matvec = portable: {dtype:?} {rows}x{cols} row {r}: mve {:#010x}, vec_dot {:#010x}, portable {:#010x}",
                        a[r].to_bits(),
                        c[r].to_bits(),
                        b[r].to_bits()
                    );
                    return false;
                }
            }
        }
    }
    let _ = writeln!(out, "ok mve matvec = portable ({case} shapes, up to {ROWS}x{COLS}, q8_0, q4_0 and q4_16)");
    true
}

#[entry]
fn main() -> ! {
    let mut out = Out::stdout();
    let _ = writeln!(out, "best kernels: {:?}", Isa::best());
    let (mut passed, mut failed) = (0u32, 0u32);
    match kernels::suite::run_all() {
        Ok(()) => {
            passed += 1;
            let _ = writeln!(out, "ok suite::run_all {:?}", Isa::ALL);
        }
        Err(failure) => {
            failed += 1;
            let _ = writeln!(out, "FAIL suite::run_all: {failure}");
        }
    }
    if mve_matvec_equals_portable(&mut out) {
        passed += 1;
    } else {
        failed += 1;
    }
    let _ = writeln!(out, "{passed} passed, {failed} failed");
    out.flush();
    exit(failed == 0)
}
