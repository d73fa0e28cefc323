//! f16 weights: each value widened to f32, then the same sequential dot as f32.

use half::f16;

/// `out (rows) = w (rows, cols) · x (cols)` with `w` little-endian binary16.
pub fn matvec(w: &[u8], x: &[f32], out: &mut [f32]) {
    let cols = x.len();
    if cols == 0 {
        return out.fill(0.0);
    }
    for (o, row) in out.iter_mut().zip(w.chunks_exact(cols * 2)) {
        let mut acc = 0.0f32;
        for (wb, &xv) in row.chunks_exact(2).zip(x) {
            acc += f16::from_le_bytes([wb[0], wb[1]]).to_f32() * xv;
        }
        *o = acc;
    }
}

/// Widens little-endian binary16 bytes into `out`.
pub fn to_f32(bytes: &[u8], out: &mut [f32]) {
    for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *o = f16::from_le_bytes([b[0], b[1]]).to_f32();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_f32_kernel_on_representable_values() {
        let vals = [0.5f32, -1.25, 2.0, 0.125, -3.0, 4.5];
        let (mut w16, mut w32) = ([0u8; 12], [0u8; 24]);
        for (i, &v) in vals.iter().enumerate() {
            w16[2 * i..2 * i + 2].copy_from_slice(&f16::from_f32(v).to_le_bytes());
            w32[4 * i..4 * i + 4].copy_from_slice(&v.to_le_bytes());
        }
        let x = [1.5f32, -0.75, 3.0];
        let (mut a, mut b) = ([0.0f32; 2], [0.0f32; 2]);
        matvec(&w16, &x, &mut a);
        crate::kernels::f32::matvec(&w32, &x, &mut b);
        assert_eq!(a, b);
    }
}
