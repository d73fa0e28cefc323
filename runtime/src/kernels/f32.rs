//! f32 weights: a sequential dot product per row, exactly as llama2.c `matmul`.

/// Views little-endian f32 bytes as `&[f32]` when aligned (always true for a parsed model).
fn as_f32(bytes: &[u8]) -> Option<&[f32]> {
    bytemuck::try_cast_slice(bytes).ok()
}

/// `out (rows) = w (rows, cols) · x (cols)`, where `cols = x.len()` and `rows = out.len()`.
pub fn matvec(w: &[u8], x: &[f32], out: &mut [f32]) {
    let cols = x.len();
    if cols == 0 {
        return out.fill(0.0);
    }
    match as_f32(w) {
        Some(w) => {
            for (o, row) in out.iter_mut().zip(w.chunks_exact(cols)) {
                *o = dot(row, x);
            }
        }
        // Unaligned bytes (never for a parsed model): the same order, decoding each value.
        None => {
            for (o, row) in out.iter_mut().zip(w.chunks_exact(cols * 4)) {
                let mut acc = 0.0f32;
                for (wb, &xv) in row.chunks_exact(4).zip(x) {
                    acc += f32::from_le_bytes([wb[0], wb[1], wb[2], wb[3]]) * xv;
                }
                *o = acc;
            }
        }
    }
}

/// Σ a\[i\]·b\[i\] accumulated left to right in f32 (over the shorter length).
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = 0.0f32;
    // Eight at a time as fixed-size arrays, so each side comes in with one multi-register load.
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (a8.remainder(), b8.remainder());
    for (ca, cb) in a8.zip(b8) {
        let (ca, cb): (&[f32; 8], &[f32; 8]) = (ca.try_into().unwrap_or(&[0.0; 8]), cb.try_into().unwrap_or(&[0.0; 8]));
        for i in 0..8 {
            acc += ca[i] * cb[i];
        }
    }
    for (&av, &bv) in ra.iter().zip(rb) {
        acc += av * bv;
    }
    acc
}

/// Copies little-endian f32 bytes into `out`.
pub fn to_f32(bytes: &[u8], out: &mut [f32]) {
    for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
        *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matvec_matches_naive_sum() {
        let w: [f32; 6] = [1.0, 2.0, 3.0, -1.0, 0.5, 0.25];
        let x = [1.0, 10.0, 100.0];
        let mut out = [0.0; 2];
        matvec(bytemuck::cast_slice(&w), &x, &mut out);
        assert_eq!(out, [321.0, -1.0 + 5.0 + 25.0]);
    }

    #[test]
    fn unaligned_path_is_bit_identical() {
        let w: [f32; 8] = [0.1, -0.7, 1.3e-3, 4.5, 2.2, -9.1, 0.33, 7.0];
        let x = [0.3f32, 1.7, -2.9, 0.01];
        let mut aligned = [0.0f32; 2];
        matvec(bytemuck::cast_slice(&w), &x, &mut aligned);
        let mut shifted = [0u8; 33];
        shifted[1..].copy_from_slice(bytemuck::cast_slice(&w));
        let mut unaligned = [0.0f32; 2];
        matvec(&shifted[1..], &x, &mut unaligned);
        assert_eq!(aligned.map(f32::to_bits), unaligned.map(f32::to_bits));
    }
}
