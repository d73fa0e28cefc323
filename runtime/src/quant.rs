//! Host-side weight quantization (feature `std`): encoding whole tensors row by
//! row, importance-weighted scale search for the block formats, and error
//! statistics against the f32 source.
//!
//! Round-to-nearest (`encode_rows` without importance) is bit-compatible with
//! ggml's reference quantizers. With an importance vector (llama.cpp
//! imatrix-style: the mean square of each input column over calibration text),
//! every q4_0 / q4_16 / q8_0 scale group searches its scale to minimize the weighted error
//! `Σ_j w_j (x_j − d·q_j)²`, which approximates the expected squared error of the
//! matmul output that the block feeds.

extern crate alloc;
use alloc::{vec, vec::Vec};

use half::f16;

use crate::format::DType;
use crate::kernels::{q4_0, q4_16, q8_0, QK};

/// Encodes a (rows, cols) row-major tensor as `dtype`: `rows × dtype.row_bytes(cols)`
/// bytes, block rows zero-padded. `importance` (cols values, ≥ 0), when given,
/// switches the block types from round-to-nearest to a weighted scale search.
pub fn encode_rows(dtype: DType, cols: usize, values: &[f32], importance: Option<&[f32]>) -> Vec<u8> {
    let cols = cols.max(1);
    let row_bytes = dtype.row_bytes(cols).unwrap_or(0);
    let mut out = vec![0u8; values.len() / cols * row_bytes];
    for (row, dst) in values.chunks_exact(cols).zip(out.chunks_exact_mut(row_bytes.max(1))) {
        match dtype {
            // Nothing stored: every value is 1 (`check_values` refuses others).
            DType::Ones => {}
            DType::F32 => {
                for (d, v) in dst.chunks_exact_mut(4).zip(row) {
                    d.copy_from_slice(&v.to_le_bytes());
                }
            }
            DType::F16 => {
                for (d, &v) in dst.chunks_exact_mut(2).zip(row) {
                    d.copy_from_slice(&f16::from_f32(v).to_le_bytes());
                }
            }
            DType::Q8_0 | DType::Q4_0 | DType::Q4_16 => {
                let block_bytes = dtype.block_bytes().unwrap_or(QK);
                for (b, (chunk, block)) in row.chunks(QK).zip(dst.chunks_exact_mut(block_bytes)).enumerate() {
                    match importance {
                        None if dtype == DType::Q8_0 => q8_0::quantize_block(chunk, block),
                        None if dtype == DType::Q4_16 => q4_16::quantize_block(chunk, block),
                        None => q4_0::quantize_block(chunk, block),
                        Some(imp) => {
                            let imp = imp.get(b * QK..).unwrap_or(&[]);
                            quantize_block_weighted(dtype, chunk, imp, row, block);
                        }
                    }
                }
            }
        }
    }
    out
}

/// Why a tensor's values cannot be stored as a dtype.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum EncodeError {
    /// The value at `index` (flattened, row-major) is NaN or infinite.
    NonFinite {
        /// Flattened index of the first such value.
        index: usize,
        /// The value.
        value: f32,
    },
    /// The value at `index` is finite but would not be in `dtype`: beyond the f16
    /// range, or so large that its block's f16 scale overflows.
    OutOfRange {
        /// Flattened index of the first such value.
        index: usize,
        /// The value.
        value: f32,
        /// The dtype it does not fit.
        dtype: DType,
    },
}

impl core::fmt::Display for EncodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            EncodeError::NonFinite { index, value } => write!(f, "value {value} at index {index} is not finite"),
            EncodeError::OutOfRange { index, value, dtype } => write!(
                f,
                "value {value:e} at index {index} does not fit in {} (largest magnitude {:e})",
                dtype.name(),
                largest_finite(dtype)
            ),
        }
    }
}

impl std::error::Error for EncodeError {}

/// The largest magnitude `dtype` stores finitely: f32::MAX, f16's 65504, and for
/// the block types the largest value whose block scale (amax/127, max/8) is at most 65504.
pub fn largest_finite(dtype: DType) -> f32 {
    let f16_max = f16::MAX.to_f32();
    match dtype {
        DType::F32 => f32::MAX,
        DType::F16 => f16_max,
        DType::Q8_0 => f16_max * 127.0,
        DType::Q4_0 | DType::Q4_16 => f16_max * 8.0,
        DType::Ones => 1.0,
    }
}

/// Whether `v` (finite) is stored finitely as `dtype`: its f16 rounding, or the
/// f16 rounding of the scale a block whose largest magnitude is `v` gets.
fn fits(dtype: DType, v: f32) -> bool {
    let a = libm::fabsf(v);
    match dtype {
        DType::F32 => true,
        DType::F16 => f16::from_f32(a).is_finite(),
        DType::Q8_0 => f16::from_f32(a / 127.0).is_finite(),
        DType::Q4_0 | DType::Q4_16 => f16::from_f32(a / 8.0).is_finite(),
        DType::Ones => v == 1.0,
    }
}

/// Checks that every value is finite and stays finite when stored as `dtype`.
/// With `saturate`, values beyond the dtype's range are clamped to
/// ±[`largest_finite`] (a NaN or infinity is still an error); the returned
/// values are the ones to encode.
pub fn check_values(
    dtype: DType,
    values: &[f32],
    saturate: bool,
) -> Result<alloc::borrow::Cow<'_, [f32]>, EncodeError> {
    use alloc::borrow::Cow;
    if let Some(index) = values.iter().position(|v| !v.is_finite()) {
        return Err(EncodeError::NonFinite { index, value: values[index] });
    }
    let Some(index) = values.iter().position(|&v| !fits(dtype, v)) else {
        return Ok(Cow::Borrowed(values));
    };
    if !saturate {
        return Err(EncodeError::OutOfRange { index, value: values[index], dtype });
    }
    let max = largest_finite(dtype);
    Ok(Cow::Owned(values.iter().map(|&v| v.clamp(-max, max)).collect()))
}

/// [`encode_rows`] after [`check_values`]: the encoded tensor never holds a
/// non-finite value or scale.
pub fn encode_rows_checked(
    dtype: DType,
    cols: usize,
    values: &[f32],
    importance: Option<&[f32]>,
    saturate: bool,
) -> Result<Vec<u8>, EncodeError> {
    let values = check_values(dtype, values, saturate)?;
    Ok(encode_rows(dtype, cols, &values, importance))
}

/// Per-element weights of one block, llama.cpp style: the calibration
/// importance of the column times `sqrt(σ² + x²)` with σ² the row's mean square,
/// so large weights and important columns are both kept accurate.
fn block_weights(x: &[f32], importance: &[f32], row: &[f32]) -> [f32; QK] {
    let sigma2 = row.iter().map(|v| v * v).sum::<f32>() / row.len().max(1) as f32;
    let mut w = [0.0f32; QK];
    for (j, (wj, &xj)) in w.iter_mut().zip(x).enumerate() {
        let imp = importance.get(j).copied().filter(|v| v.is_finite() && *v >= 0.0).unwrap_or(1.0);
        *wj = imp * libm::sqrtf(sigma2 + xj * xj);
    }
    w
}

/// Quantizes `x` (≤ 32 values) to integer levels `lo..=hi` with scale `d`
/// (rounded to f16 first, as stored), returning the stored scale, the levels and the
/// weighted squared error.
fn levels_for(x: &[f32], w: &[f32; QK], d: f32, lo: i32, hi: i32) -> (f32, [i32; QK], f32) {
    let d = f16::from_f32(d).to_f32();
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut l = [0i32; QK];
    let mut err = 0.0f32;
    for (j, &v) in x.iter().enumerate() {
        l[j] = (libm::roundf(v * id) as i32).clamp(lo, hi);
        let e = v - d * l[j] as f32;
        err += w[j] * e * e;
    }
    (d, l, err)
}

/// Searches a block's scale minimizing `Σ w_j (x_j − d·q_j)²`: starting points
/// around `max / level` for a grid of levels, each refined by alternating
/// least squares (optimal d for fixed q, then q for fixed d).
fn search_scale(x: &[f32], w: &[f32; QK], lo: i32, hi: i32) -> (f32, [i32; QK]) {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if amax < libm::fabsf(v) {
            amax = libm::fabsf(v);
            max = v;
        }
    }
    if amax == 0.0 || !amax.is_finite() {
        return (0.0, [0; QK]);
    }
    // Round-to-nearest first, so the search never does worse than it.
    let rtn = if lo == -8 { max / -8.0 } else { amax / hi as f32 };
    let mut best = levels_for(x, w, rtn, lo, hi);
    let try_scale = |d0: f32, best: &mut (f32, [i32; QK], f32)| {
        let mut cand = levels_for(x, w, d0, lo, hi);
        for _ in 0..3 {
            if cand.2 < best.2 {
                *best = cand;
            }
            // Least-squares scale for these levels.
            let (mut sxl, mut sll) = (0.0f32, 0.0f32);
            for (j, &v) in x.iter().enumerate() {
                sxl += w[j] * v * cand.1[j] as f32;
                sll += w[j] * (cand.1[j] * cand.1[j]) as f32;
            }
            if sll <= 0.0 {
                break;
            }
            cand = levels_for(x, w, sxl / sll, lo, hi);
        }
        if cand.2 < best.2 {
            *best = cand;
        }
    };
    for step in -10..=10 {
        let level = (if lo == -8 { 8.0 } else { hi as f32 }) + 0.1 * step as f32;
        // The extreme value on the wider (negative) side, and on the positive side.
        try_scale(max / -level, &mut best);
        if lo == -8 {
            try_scale(max / (level - 1.0), &mut best);
        }
    }
    (best.0, best.1)
}

/// Weighted quantization of one block into `out` (q8_0 levels −127..=127,
/// q4_0 and q4_16 levels −8..=7 stored as nibble = level + 8; q4_16 searches each
/// 16-value half's scale on its own).
fn quantize_block_weighted(dtype: DType, x: &[f32], importance: &[f32], row: &[f32], out: &mut [u8]) {
    let x = &x[..x.len().min(QK)];
    let w = block_weights(x, importance, row);
    if dtype == DType::Q4_16 {
        let (mut d, mut levels) = ([0.0f32; 2], [0i32; QK]);
        for (h, half) in x.chunks(crate::dtype::QK4_16).enumerate() {
            let mut wh = [0.0f32; QK];
            wh[..half.len()].copy_from_slice(&w[h * crate::dtype::QK4_16..][..half.len()]);
            let (dh, l) = search_scale(half, &wh, -8, 7);
            d[h] = dh;
            levels[h * crate::dtype::QK4_16..][..half.len()].copy_from_slice(&l[..half.len()]);
        }
        return write_groups(dtype, &d, &levels, out);
    }
    if dtype == DType::Q8_0 {
        let (d, l) = search_scale(x, &w, -127, 127);
        let mut block = q8_0::BlockQ8_0 { d: f16::from_f32(d).to_le_bytes(), qs: [0; QK] };
        for (q, &v) in block.qs.iter_mut().zip(&l) {
            *q = v as i8;
        }
        block.write(out);
    } else {
        let (d, l) = search_scale(x, &w, -8, 7);
        let mut nibbles = [8u8; QK];
        for (n, &v) in nibbles.iter_mut().zip(&l[..x.len()]) {
            *n = (v + 8) as u8;
        }
        q4_0::pack(d, &nibbles, out);
    }
}

/// Integer level range of a block type: q8_0 −127..=127, q4_0 and q4_16 −8..=7 (`None` otherwise).
pub fn block_levels(dtype: DType) -> Option<(i32, i32)> {
    match dtype {
        DType::Q8_0 => Some((-127, 127)),
        DType::Q4_0 | DType::Q4_16 => Some((-8, 7)),
        DType::F32 | DType::F16 | DType::Ones => None,
    }
}

/// The stored (f16-rounded, as f32) scale of one scale group of `x` (≤ 32 values,
/// at most [`DType::group_size`]: 16 for q4_16) as `dtype`: round-to-nearest's (`max / −8` for q4_0, `max|x| / 127` for q8_0) without
/// `weights`, else the weighted search that minimizes `Σ_j w_j (x_j − d·q_j)²`.
/// Used by error-feedback quantizers (GPTQ) that pick each block's scale from the
/// updated weights, then round column by column with [`block_level`].
pub fn block_scale(dtype: DType, x: &[f32], weights: Option<&[f32]>) -> f32 {
    let Some((lo, hi)) = block_levels(dtype) else { return 0.0 };
    let x = &x[..x.len().min(QK)];
    match weights {
        Some(w) => {
            let mut wb = [0.0f32; QK];
            for (d, &v) in wb.iter_mut().zip(w) {
                *d = if v.is_finite() && v >= 0.0 { v } else { 0.0 };
            }
            search_scale(x, &wb, lo, hi).0
        }
        None => {
            let (mut amax, mut max) = (0.0f32, 0.0f32);
            for &v in x {
                if amax < libm::fabsf(v) {
                    amax = libm::fabsf(v);
                    max = v;
                }
            }
            let d = if lo == -8 { max / -8.0 } else { amax / 127.0 };
            f16::from_f32(d).to_f32()
        }
    }
}

/// The level of `v` at stored scale `d`: `round_half_away(v / d)` clamped to the
/// dtype's range (0 when `d` is 0).
pub fn block_level(dtype: DType, v: f32, d: f32) -> i32 {
    let Some((lo, hi)) = block_levels(dtype) else { return 0 };
    if d == 0.0 {
        return 0;
    }
    crate::scalar::round_half_away(v / d).clamp(lo, hi)
}

/// Writes one block of `dtype` with stored scale `d` and `levels` (≤ 32; missing
/// ones are 0) in the exact layout the kernels read: q8_0 = f16 scale + 32 i8,
/// q4_0 = f16 scale + 16 bytes of nibbles `level + 8` (element j low, j + 16 high);
/// q4_16 gets `d` for both halves (see [`write_groups`]).
pub fn write_block(dtype: DType, d: f32, levels: &[i32], out: &mut [u8]) {
    write_groups(dtype, &[d, d], levels, out)
}

/// Writes one block of `dtype` with one stored scale per scale group (`scales[g]`
/// for elements `g·group_size..`: one for q8_0 and q4_0, two for q4_16) and `levels`
/// (≤ 32; missing ones are 0) in the exact layout the kernels read.
pub fn write_groups(dtype: DType, scales: &[f32], levels: &[i32], out: &mut [u8]) {
    let Some((lo, hi)) = block_levels(dtype) else { return };
    let d = scales.first().copied().unwrap_or(0.0);
    let mut l = [0i32; QK];
    for (dst, &v) in l.iter_mut().zip(levels) {
        *dst = v.clamp(lo, hi);
    }
    if dtype == DType::Q8_0 {
        let mut block = q8_0::BlockQ8_0 { d: f16::from_f32(d).to_le_bytes(), qs: [0; QK] };
        for (q, &v) in block.qs.iter_mut().zip(&l) {
            *q = v as i8;
        }
        block.write(out);
    } else {
        let mut nibbles = [8u8; QK];
        for (n, &v) in nibbles.iter_mut().zip(&l) {
            *n = (v + 8) as u8;
        }
        if dtype == DType::Q4_16 {
            q4_16::pack([d, scales.get(1).copied().unwrap_or(d)], &nibbles, out);
        } else {
            q4_0::pack(d, &nibbles, out);
        }
    }
}

/// How far a stored tensor is from its f32 source.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ErrorStats {
    /// Root mean square error.
    pub rmse: f64,
    /// Largest absolute error.
    pub max_abs: f64,
    /// Cosine similarity of the flattened tensors (1 when both are zero).
    pub cosine: f64,
}

impl ErrorStats {
    /// Compares `decoded` with `source` element by element.
    pub fn between(source: &[f32], decoded: &[f32]) -> ErrorStats {
        let (mut se, mut max_abs, mut dot, mut na, mut nb) = (0.0f64, 0.0f64, 0.0f64, 0.0f64, 0.0f64);
        for (&a, &b) in source.iter().zip(decoded) {
            let (a, b) = (f64::from(a), f64::from(b));
            se += (a - b) * (a - b);
            max_abs = max_abs.max((a - b).abs());
            dot += a * b;
            na += a * a;
            nb += b * b;
        }
        let n = source.len().max(1) as f64;
        let cosine = if na == 0.0 && nb == 0.0 { 1.0 } else { dot / (na.sqrt() * nb.sqrt()).max(f64::MIN_POSITIVE) };
        ErrorStats { rmse: (se / n).sqrt(), max_abs, cosine }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::write::decode_tensor;

    fn wave(n: usize) -> Vec<f32> {
        (0..n).map(|i| libm::sinf(i as f32 * 0.37) * (1.0 + (i % 7) as f32 * 0.3)).collect()
    }

    #[test]
    fn rtn_matches_the_kernels_and_pads_rows() {
        let (rows, cols) = (3, 33);
        let x = wave(rows * cols);
        for dtype in DType::WEIGHTS {
            let bytes = encode_rows(dtype, cols, &x, None);
            assert_eq!(bytes.len(), rows * dtype.row_bytes(cols).unwrap());
            let y = decode_tensor(dtype, rows, cols, &bytes);
            let s = ErrorStats::between(&x, &y);
            assert!(s.cosine > 0.99, "{dtype:?} {s:?}");
        }
        // `ones` stores nothing and reads back every value as 1; only 1 fits it.
        let ones = [1.0f32; 33];
        assert!(encode_rows_checked(DType::Ones, 33, &ones, None, false).unwrap().is_empty());
        assert!(decode_tensor(DType::Ones, 1, 33, &[]).iter().all(|&v| v == 1.0));
        assert!(matches!(
            encode_rows_checked(DType::Ones, 33, &x[..33], None, false),
            Err(EncodeError::OutOfRange { dtype: DType::Ones, .. })
        ));
    }

    #[test]
    fn weighted_search_beats_round_to_nearest_in_weighted_error() {
        let cols = 172;
        let x = wave(8 * cols);
        let imp: Vec<f32> = (0..cols).map(|j| if j % 5 == 0 { 20.0 } else { 0.5 }).collect();
        let err = |bytes: &[u8]| {
            let y = decode_tensor(DType::Q4_0, 8, cols, bytes);
            x.iter().zip(&y).enumerate().map(|(i, (a, b))| imp[i % cols] * (a - b) * (a - b)).sum::<f32>()
        };
        let rtn = err(&encode_rows(DType::Q4_0, cols, &x, None));
        let searched = err(&encode_rows(DType::Q4_0, cols, &x, Some(&imp)));
        assert!(searched < rtn * 0.9, "searched {searched} vs rtn {rtn}");
    }

    #[test]
    fn values_beyond_a_dtype_are_refused_or_saturated() {
        let mut x = wave(64);
        x[37] = 1e5;
        assert_eq!(encode_rows_checked(DType::F32, 64, &x, None, false).map(|b| b.len()), Ok(256));
        let err = encode_rows_checked(DType::F16, 64, &x, None, false).unwrap_err();
        assert_eq!(err, EncodeError::OutOfRange { index: 37, value: 1e5, dtype: DType::F16 });
        // 1e5 fits q8_0 and q4_0 (scales 787 and 12500); 1e7 does not (scales 78740 and 1.25e6).
        x[37] = 1e7;
        for dtype in [DType::F16, DType::Q8_0, DType::Q4_0] {
            let err = encode_rows_checked(dtype, 64, &x, None, false).unwrap_err();
            assert_eq!(err, EncodeError::OutOfRange { index: 37, value: 1e7, dtype });
            for imp in [None, Some(&[1.0f32; 64][..])] {
                let bytes = encode_rows_checked(dtype, 64, &x, imp, true).unwrap();
                let y = decode_tensor(dtype, 1, 64, &bytes);
                assert!(y.iter().all(|v| v.is_finite()), "{dtype:?}");
                let top = largest_finite(dtype);
                assert!((y[37] - top).abs() <= top * 0.07, "{dtype:?}: {} vs {top}", y[37]);
            }
        }
        x[3] = f32::NAN;
        for dtype in DType::ALL {
            let err = encode_rows_checked(dtype, 64, &x, None, true).unwrap_err();
            assert!(matches!(err, EncodeError::NonFinite { index: 3, value } if value.is_nan()));
        }
    }

    #[test]
    fn the_largest_finite_value_of_each_dtype_round_trips_finitely() {
        for dtype in DType::ALL {
            let x = [largest_finite(dtype); 32];
            let bytes = encode_rows_checked(dtype, 32, &x, None, false).unwrap();
            assert!(decode_tensor(dtype, 1, 32, &bytes).iter().all(|v| v.is_finite()), "{dtype:?}");
        }
    }

    #[test]
    fn block_scale_and_levels_rebuild_round_to_nearest_q8_0() {
        // q8_0 round-to-nearest uses the f32 scale for the quants; with the f16
        // scale the levels may differ by one, never more, and decode within a step.
        let x = wave(32);
        for dtype in [DType::Q8_0, DType::Q4_0] {
            let d = block_scale(dtype, &x, None);
            let levels: Vec<i32> = x.iter().map(|&v| block_level(dtype, v, d)).collect();
            let mut ours = vec![0u8; dtype.row_bytes(32).unwrap()];
            write_block(dtype, d, &levels, &mut ours);
            let rtn = encode_rows(dtype, 32, &x, None);
            assert_eq!(ours[..2], rtn[..2], "{dtype:?}: same stored scale");
            let (a, b) = (decode_tensor(dtype, 1, 32, &ours), decode_tensor(dtype, 1, 32, &rtn));
            for (p, q) in a.iter().zip(&b) {
                assert!((p - q).abs() <= d * 1.001, "{dtype:?}: {p} vs {q}");
            }
            for (v, y) in x.iter().zip(&a) {
                assert!((v - y).abs() <= d * 0.5001 + 1e-6 || dtype == DType::Q4_0, "{dtype:?}: {v} vs {y}");
            }
        }
        assert_eq!(block_level(DType::Q4_0, 100.0, 1.0), 7);
        assert_eq!(block_level(DType::Q4_0, -2.5, 1.0), -3);
        assert_eq!(block_level(DType::Q8_0, 2.5, 1.0), 3);
        assert_eq!(block_level(DType::Q8_0, 2.5, 0.0), 0);
    }

    #[test]
    fn stats_of_identical_tensors() {
        let x = wave(50);
        let s = ErrorStats::between(&x, &x);
        assert_eq!((s.rmse, s.max_abs), (0.0, 0.0));
        assert!((s.cosine - 1.0).abs() < 1e-12);
    }
}
