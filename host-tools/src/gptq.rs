//! Hessian-aware block quantization (GPTQ) for the runtime's q4_0, q4_16 and q8_0 formats.
//!
//! Algorithm: Frantar et al., "GPTQ: Accurate Post-Training Quantization for
//! Generative Pre-trained Transformers" (ICLR 2023), Algorithm 1, and its
//! reference implementation (`gptq.py`). For a weight matrix W (rows × cols) that
//! multiplies inputs x (cols), the expected squared output error of a quantized Ŵ
//! is `tr((W − Ŵ) H (W − Ŵ)ᵀ)` with `H = E[x xᵀ]` (cols × cols) measured on
//! calibration text. GPTQ rounds the columns one at a time and spreads each
//! column's rounding error over the columns not yet rounded, weighted by the
//! inverse Hessian, so the later columns compensate:
//!
//! 1. `H ← H + λ·mean(diag H)·I` (dampening; a column never seen gets `H_ii = 1`);
//! 2. `U` = upper Cholesky factor of `H⁻¹` (`H⁻¹ = UᵀU`), via nalgebra;
//! 3. for column i: `q = quant(w_i)`, `e = (w_i − q) / U_ii`, `w_j −= e·U_ij` for j > i.
//!
//! The block formats store one f16 scale per 32 (q4_16: 16) consecutive values of
//! a row, so a group's scale is chosen when its first column is reached, from the weights as
//! updated so far ("grouped" GPTQ), with the runtime's own scale rule or a search
//! weighted by `diag H`. Levels are `round_half_away(w / d)` at the stored f16
//! scale, and blocks are written in the exact layout the kernels read.

use microlm::format::DType;
use microlm::kernels::QK;
use microlm::quant::{block_level, block_levels, block_scale, write_groups};
use nalgebra::DMatrix;

/// The running second moment `Σ x xᵀ` of a matmul's inputs.
#[derive(Clone, Debug)]
pub struct Hessian {
    /// Input length (cols of the weight matrix).
    pub n: usize,
    /// n × n, row-major: `Σ x_i x_j` over the observed inputs.
    pub sum: Vec<f64>,
    /// Inputs observed.
    pub count: usize,
}

impl Hessian {
    /// An empty accumulator for inputs of length `n`.
    pub fn new(n: usize) -> Hessian {
        Hessian { n, sum: vec![0.0; n * n], count: 0 }
    }

    /// Adds one input (length `n`; a different length is ignored).
    pub fn add(&mut self, x: &[f32]) {
        if x.len() != self.n {
            return;
        }
        for (i, &xi) in x.iter().enumerate() {
            let xi = f64::from(xi);
            if xi == 0.0 {
                continue;
            }
            let row = &mut self.sum[i * self.n..(i + 1) * self.n];
            for (s, &xj) in row.iter_mut().zip(x) {
                *s += xi * f64::from(xj);
            }
        }
        self.count += 1;
    }

    /// `E[x xᵀ]` (n × n).
    pub fn mean(&self) -> DMatrix<f64> {
        let c = self.count.max(1) as f64;
        DMatrix::from_row_slice(self.n, self.n, &self.sum).map(|v| v / c)
    }

    /// `E[x_i²]` (n values): the diagonal, as the importance-weighted search uses it.
    pub fn diagonal(&self) -> Vec<f32> {
        let c = self.count.max(1) as f64;
        (0..self.n).map(|i| (self.sum[i * self.n + i] / c) as f32).collect()
    }
}

/// Settings of one GPTQ run.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Dampening λ as a fraction of the mean diagonal (the paper uses 0.01).
    pub damp: f64,
    /// Choose each block's scale by a search weighted with `diag H` instead of the
    /// round-to-nearest rule applied to the updated weights.
    pub scale_search: bool,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings { damp: 0.01, scale_search: true }
    }
}

/// Why GPTQ could not run on a tensor.
#[derive(Clone, Debug, PartialEq)]
pub enum GptqError {
    /// The dtype is not a block type.
    NotBlockType(DType),
    /// The Hessian's size is not the tensor's column count.
    Shape {
        /// Tensor columns.
        cols: usize,
        /// Hessian size.
        n: usize,
    },
    /// `H + λI` stayed indefinite even with 1000× the dampening (non-finite activations).
    NotPositiveDefinite,
}

impl std::fmt::Display for GptqError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GptqError::NotBlockType(d) => write!(f, "GPTQ targets q8_0, q4_0 and q4_16, not {}", d.name()),
            GptqError::Shape { cols, n } => write!(f, "the Hessian is {n}×{n} but the tensor has {cols} columns"),
            GptqError::NotPositiveDefinite => {
                write!(f, "the input Hessian is not positive definite even after dampening (non-finite activations?)")
            }
        }
    }
}

impl std::error::Error for GptqError {}

/// The upper Cholesky factor U of `(H + λ·mean(diag H)·I)⁻¹` (dead columns get
/// `H_ii = 1`); λ grows tenfold, up to three times, while the factorization fails.
fn inverse_cholesky_upper(h: &Hessian, damp: f64) -> Result<DMatrix<f64>, GptqError> {
    let mut m = h.mean();
    let n = h.n;
    for i in 0..n {
        if m[(i, i)] <= 0.0 {
            m[(i, i)] = 1.0;
        }
    }
    let mean_diag = (0..n).map(|i| m[(i, i)]).sum::<f64>() / n.max(1) as f64;
    let mut lambda = damp.max(0.0) * mean_diag;
    for _ in 0..4 {
        let mut damped = m.clone();
        for i in 0..n {
            damped[(i, i)] += lambda;
        }
        if let Some(chol) = damped.cholesky() {
            // H⁻¹ from the factor (triangular solves), then H⁻¹ = L Lᵀ, U = Lᵀ.
            let inv = chol.inverse();
            if let Some(c2) = inv.cholesky() {
                let u = c2.l().transpose();
                if u.iter().all(|v| v.is_finite()) {
                    return Ok(u);
                }
            }
        }
        lambda = if lambda > 0.0 { lambda * 10.0 } else { 1e-6 * mean_diag.max(1e-12) };
    }
    Err(GptqError::NotPositiveDefinite)
}

/// Quantizes W (rows × cols, row-major, finite) as `dtype` with GPTQ against `h`
/// (cols × cols); returns `rows × dtype.row_bytes(cols)` bytes in the runtime's
/// block layout (a last partial block is zero-padded, as round-to-nearest pads).
pub fn quantize(
    dtype: DType,
    rows: usize,
    cols: usize,
    w: &[f32],
    h: &Hessian,
    settings: Settings,
) -> Result<Vec<u8>, GptqError> {
    if block_levels(dtype).is_none() {
        return Err(GptqError::NotBlockType(dtype));
    }
    if h.n != cols {
        return Err(GptqError::Shape { cols, n: h.n });
    }
    let u = inverse_cholesky_upper(h, settings.damp)?;
    let diag = h.diagonal();
    // Values per scale (32, or 16 for q4_16) and per stored block (32).
    let gs = dtype.group_size().unwrap_or(QK);
    let (groups, blocks) = (cols.div_ceil(gs), cols.div_ceil(QK));
    let row_bytes = dtype.row_bytes(cols).unwrap_or(0);
    let block_bytes = dtype.block_bytes().unwrap_or(0);
    // Working copy, updated in place by the error feedback: rows × cols.
    let mut work: Vec<f64> = w.iter().map(|&v| f64::from(v)).collect();
    // Per row: each group's scale, and the levels so far (rows × blocks × 32).
    let mut levels = vec![0i32; rows * blocks * QK];
    let mut scales = vec![0.0f32; rows * groups];
    let mut group = [0.0f32; QK];
    for g in 0..groups {
        let (start, end) = (g * gs, ((g + 1) * gs).min(cols));
        for r in 0..rows {
            for (v, &x) in group.iter_mut().zip(&work[r * cols + start..r * cols + end]) {
                *v = x as f32;
            }
            let weights = settings.scale_search.then(|| &diag[start..end]);
            scales[r * groups + g] = block_scale(dtype, &group[..end - start], weights);
        }
        for i in start..end {
            let uii = u[(i, i)];
            for r in 0..rows {
                let d = scales[r * groups + g];
                let row = &mut work[r * cols..(r + 1) * cols];
                let q = block_level(dtype, row[i] as f32, d);
                levels[r * blocks * QK + i] = q;
                let err = (row[i] - f64::from(d) * f64::from(q)) / uii;
                for j in i + 1..cols {
                    row[j] -= err * u[(i, j)];
                }
            }
        }
    }
    let per_block = QK / gs;
    let mut out = vec![0u8; rows * row_bytes];
    for (r, dst) in out.chunks_exact_mut(row_bytes.max(1)).enumerate().take(rows) {
        for (b, block) in dst.chunks_exact_mut(block_bytes.max(1)).enumerate().take(blocks) {
            let at = (r * blocks + b) * QK;
            let first = r * groups + b * per_block;
            let last = (first + per_block).min((r + 1) * groups);
            write_groups(dtype, &scales[first..last], &levels[at..at + QK], block);
        }
    }
    Ok(out)
}

/// The expected squared output error `Σ_r e_r H e_rᵀ / rows` with `e = W − Ŵ` and
/// `H = E[x xᵀ]`: what GPTQ minimizes, per row (rows × cols inputs, row-major).
pub fn output_error(rows: usize, cols: usize, w: &[f32], w_hat: &[f32], h: &Hessian) -> f64 {
    let m = h.mean();
    let mut total = 0.0;
    for r in 0..rows {
        let e: Vec<f64> = (0..cols).map(|c| f64::from(w[r * cols + c]) - f64::from(w_hat[r * cols + c])).collect();
        for i in 0..cols {
            let mut s = 0.0;
            for j in 0..cols {
                s += m[(i, j)] * e[j];
            }
            total += e[i] * s;
        }
    }
    total / rows.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use microlm::quant::encode_rows;
    use microlm::write::decode_tensor;

    /// A deterministic pseudo-random stream (xorshift64*), uniform in [-1, 1).
    fn rng(seed: u64) -> impl FnMut() -> f32 {
        let mut s = seed.max(1);
        move || {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            ((s.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        }
    }

    /// Correlated inputs (x = A z, a few strong columns) and their Hessian.
    fn inputs(cols: usize, n: usize) -> (Vec<Vec<f32>>, Hessian) {
        let mut r = rng(7);
        let a: Vec<f32> = (0..cols * 8).map(|_| r()).collect();
        let mut h = Hessian::new(cols);
        let mut xs = Vec::new();
        for _ in 0..n {
            let z: Vec<f32> = (0..8).map(|_| r()).collect();
            let x: Vec<f32> = (0..cols)
                .map(|c| {
                    let scale = if c % 7 == 0 { 3.0 } else { 1.0 };
                    scale * ((0..8).map(|k| a[c * 8 + k] * z[k]).sum::<f32>() + 0.1 * r())
                })
                .collect();
            h.add(&x);
            xs.push(x);
        }
        (xs, h)
    }

    #[test]
    fn gptq_lowers_the_output_error_against_round_to_nearest() {
        for (rows, cols) in [(16, 64), (8, 72)] {
            let (_, h) = inputs(cols, 400);
            let mut r = rng(11);
            let w: Vec<f32> = (0..rows * cols).map(|_| r() * 0.5).collect();
            for dtype in [DType::Q4_0, DType::Q4_16, DType::Q8_0] {
                let rtn = decode_tensor(dtype, rows, cols, &encode_rows(dtype, cols, &w, None));
                let rtn_err = output_error(rows, cols, &w, &rtn, &h);
                for scale_search in [false, true] {
                    let settings = Settings { scale_search, ..Settings::default() };
                    let bytes = quantize(dtype, rows, cols, &w, &h, settings).unwrap();
                    assert_eq!(bytes.len(), rows * dtype.row_bytes(cols).unwrap());
                    let g = decode_tensor(dtype, rows, cols, &bytes);
                    let g_err = output_error(rows, cols, &w, &g, &h);
                    assert!(
                        g_err < 0.7 * rtn_err,
                        "{dtype:?} {rows}x{cols} search {scale_search}: {g_err} vs {rtn_err}"
                    );
                }
            }
        }
    }

    #[test]
    fn identity_hessian_is_round_to_nearest_at_the_same_scales() {
        // With H = I there is nothing to compensate: every level is round(w / d).
        let (rows, cols) = (4, 64);
        let mut h = Hessian::new(cols);
        for i in 0..cols {
            let mut x = vec![0.0; cols];
            x[i] = 1.0;
            h.add(&x);
        }
        let mut r = rng(3);
        let w: Vec<f32> = (0..rows * cols).map(|_| r()).collect();
        let settings = Settings { damp: 0.0, scale_search: false };
        let bytes = quantize(DType::Q8_0, rows, cols, &w, &h, settings).unwrap();
        let rtn = encode_rows(DType::Q8_0, cols, &w, None);
        let (a, b) = (decode_tensor(DType::Q8_0, rows, cols, &bytes), decode_tensor(DType::Q8_0, rows, cols, &rtn));
        let (ea, eb) = (output_error(rows, cols, &w, &a, &h), output_error(rows, cols, &w, &b, &h));
        assert!(ea <= eb * 1.0001, "{ea} vs {eb}");
    }

    #[test]
    fn bad_inputs_get_errors() {
        let h = Hessian::new(8);
        assert_eq!(
            quantize(DType::F16, 1, 8, &[0.0; 8], &h, Settings::default()),
            Err(GptqError::NotBlockType(DType::F16))
        );
        assert_eq!(
            quantize(DType::Q4_0, 1, 4, &[0.0; 4], &h, Settings::default()),
            Err(GptqError::Shape { cols: 4, n: 8 })
        );
        let mut nan = Hessian::new(2);
        nan.add(&[f32::NAN, 1.0]);
        assert_eq!(
            quantize(DType::Q4_0, 1, 2, &[0.5, 0.25], &nan, Settings::default()),
            Err(GptqError::NotPositiveDefinite)
        );
    }
}
