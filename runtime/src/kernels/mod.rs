//! Matrix-vector kernels, one module per weight dtype.
//!
//! Every kernel computes `out[r] = Σ_c w[r][c] · x[c]` with one fixed
//! summation order (DESIGN.md contract 3), so any optimized variant added later
//! must reproduce its scalar reference bit for bit.

pub mod f16;
pub mod f32;

use crate::format::DType;

/// A read-only weight matrix viewed in place in the model file.
#[derive(Clone, Copy, Debug)]
pub struct Matrix<'a> {
    /// Storage type of `data`.
    pub dtype: DType,
    /// Output features.
    pub rows: usize,
    /// Input features.
    pub cols: usize,
    /// rows × row_bytes(cols) bytes.
    pub data: &'a [u8],
}

impl Matrix<'_> {
    /// `out (rows) = self (rows, cols) · x (cols)`. Extra `out` or `x` entries are left alone / ignored.
    pub fn matvec(&self, x: &[f32], out: &mut [f32]) {
        let x = &x[..self.cols.min(x.len())];
        let rows = self.rows.min(out.len());
        let out = &mut out[..rows];
        match self.dtype {
            DType::F32 => f32::matvec(self.data, x, out),
            DType::F16 => f16::matvec(self.data, x, out),
        }
    }

    /// Writes row `row` converted to f32 into `out` (cols).
    pub fn row_to_f32(&self, row: usize, out: &mut [f32]) {
        let Some(bytes) = self
            .dtype
            .row_bytes(self.cols)
            .and_then(|rb| self.data.get(row.checked_mul(rb)?..(row + 1).checked_mul(rb)?))
        else {
            return;
        };
        match self.dtype {
            DType::F32 => f32::to_f32(bytes, out),
            DType::F16 => f16::to_f32(bytes, out),
        }
    }
}
