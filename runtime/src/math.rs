//! The f32 operations around the matmuls, written as llama2.c writes them and
//! using `libm` or the crate's own [`exp`] on every target so host and
//! device round identically.

pub use crate::kernels::exp_shifted;
pub use crate::scalar::{exp, exp_at_most_zero, exp_branch_free, max_abs, round_half_away, EXP_MAX_REL_ERROR};

/// `out (n) = weight (n) * x (n) / sqrt(mean(x²) + eps)`; an empty `weight` is all
/// ones (a norm folded into the next matmuls, [`DType::Ones`](crate::format::DType::Ones)).
pub fn rmsnorm(out: &mut [f32], x: &[f32], weight: &[f32], eps: f32) {
    rmsnorm_from(out, x, weight, sum_squares(x), eps);
}

/// [`rmsnorm`] of `x` given `ss` = [`sum_squares`]`(x)` (what [`add_in_place_squares`]
/// returns), so a residual add and the norm after it read `x` once.
pub fn rmsnorm_from(out: &mut [f32], x: &[f32], weight: &[f32], ss: f32, eps: f32) {
    let scale = rms_scale(ss, x.len(), eps);
    if weight.is_empty() {
        // A folded norm (dtype ones): 1 · (scale · v), the same bits as a stored 1.0.
        for_each8(out, x, x, |_, v| scale * v);
        return;
    }
    // Hard-float Cortex-M55: whole groups of eight in an FPU loop (the same bits).
    let done = crate::kernels::norm8(out, x, weight, scale);
    let (Some(out), Some(weight), Some(x)) = (out.get_mut(done..), weight.get(done..), x.get(done..)) else { return };
    for_each8(out, weight, x, |w, v| w * (scale * v));
}

/// In-place RMSNorm (`x` is both input and output).
pub fn rmsnorm_in_place(x: &mut [f32], weight: &[f32], eps: f32) {
    rmsnorm_in_place_from(x, weight, sum_squares(x), eps);
}

/// [`rmsnorm_in_place`] given `ss` = [`sum_squares`]`(x)`.
pub fn rmsnorm_in_place_from(x: &mut [f32], weight: &[f32], ss: f32, eps: f32) {
    let scale = rms_scale(ss, x.len(), eps);
    // Hard-float Cortex-M55: whole groups of eight in an FPU loop (the same bits).
    let done = crate::kernels::norm8_in_place(x, weight, scale);
    let (Some(x), Some(weight)) = (x.get_mut(done..), weight.get(done..)) else { return };
    for (v, &w) in x.iter_mut().zip(weight) {
        *v = w * (scale * *v);
    }
}

/// `Σ x_i²`, left to right (eight values a step, so each group comes in with one
/// multi-register load; on Cortex-M55 an FPU loop of VMLA, which rounds the
/// product before adding: the same bits).
pub fn sum_squares(x: &[f32]) -> f32 {
    let (done, mut ss) = crate::kernels::squares8(x);
    let x = x.get(done..).unwrap_or(&[]);
    let groups = x.chunks_exact(8);
    let rest = groups.remainder();
    for g in groups {
        let g: &[f32; 8] = g.try_into().unwrap_or(&[0.0; 8]);
        for &v in g {
            ss += v * v;
        }
    }
    for &v in rest {
        ss += v * v;
    }
    ss
}

/// `1 / sqrt(ss / n + eps)`, RMSNorm's scale from `ss` = Σ x² over n values.
#[inline(always)]
fn rms_scale(ss: f32, n: usize, eps: f32) -> f32 {
    let mut ss = ss;
    ss /= n as f32;
    ss += eps;
    1.0 / crate::kernels::sqrt(ss)
}

/// `out[i] = f(a[i], b[i])` for `i < out.len()` (all three as long), eight at a time.
#[inline(always)]
fn for_each8(out: &mut [f32], a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) {
    let n = out.len().min(a.len()).min(b.len());
    let (out, a, b) = (&mut out[..n], &a[..n], &b[..n]);
    let split = n / 8 * 8;
    let (out8, out_rest) = out.split_at_mut(split);
    for ((o, a), b) in out8.chunks_exact_mut(8).zip(a.chunks_exact(8)).zip(b.chunks_exact(8)) {
        let (o, a, b): (&mut [f32; 8], &[f32; 8], &[f32; 8]) = match (o.try_into(), a.try_into(), b.try_into()) {
            (Ok(o), Ok(a), Ok(b)) => (o, a, b),
            _ => return,
        };
        for i in 0..8 {
            o[i] = f(a[i], b[i]);
        }
    }
    for ((o, &a), &b) in out_rest.iter_mut().zip(&a[split..]).zip(&b[split..]) {
        *o = f(a, b);
    }
}

/// `x[i] += d[i]` (the residual connection), eight at a time.
pub fn add_in_place(x: &mut [f32], d: &[f32]) {
    let n = x.len().min(d.len());
    let split = n / 8 * 8;
    let (x8, x_rest) = x[..n].split_at_mut(split);
    for (x, d) in x8.chunks_exact_mut(8).zip(d.chunks_exact(8)) {
        let (x, d): (&mut [f32; 8], &[f32; 8]) = match (x.try_into(), d.try_into()) {
            (Ok(x), Ok(d)) => (x, d),
            _ => return,
        };
        for i in 0..8 {
            x[i] += d[i];
        }
    }
    for (x, &d) in x_rest.iter_mut().zip(&d[split..n]) {
        *x += d;
    }
}

/// [`add_in_place`], returning [`sum_squares`] of the updated `x` (its first
/// `min(x.len(), d.len())` values): the residual add and the sum of squares of the
/// RMSNorm after it in one pass (on Cortex-M55 an FPU loop, VADD then VMLA per value).
pub fn add_in_place_squares(x: &mut [f32], d: &[f32]) -> f32 {
    let n = x.len().min(d.len());
    let (x, d) = (&mut x[..n], &d[..n]);
    let (done, mut ss) = crate::kernels::add_squares8(x, d);
    let (x, d) = (&mut x[done..], &d[done..]);
    let split = x.len() / 8 * 8;
    let (x8, x_rest) = x.split_at_mut(split);
    for (x, d) in x8.chunks_exact_mut(8).zip(d.chunks_exact(8)) {
        let (x, d): (&mut [f32; 8], &[f32; 8]) = match (x.try_into(), d.try_into()) {
            (Ok(x), Ok(d)) => (x, d),
            _ => return ss,
        };
        for i in 0..8 {
            x[i] += d[i];
            ss += x[i] * x[i];
        }
    }
    for (x, &d) in x_rest.iter_mut().zip(&d[split..]) {
        *x += d;
        ss += *x * *x;
    }
    ss
}

/// Numerically stable softmax in place: subtract the max, exponentiate, normalize.
pub fn softmax(x: &mut [f32]) {
    let Some(&first) = x.first() else { return };
    let mut max = first;
    for &v in x.iter() {
        if v > max {
            max = v;
        }
    }
    let sum = exp_shifted(x, max);
    for v in x.iter_mut() {
        *v /= sum;
    }
}

/// Rotates consecutive pairs of `vec` (a multiple of `head_size` long) by
/// position `pos`, pair i of each head at frequency `theta^(-2i/head_size)`
/// computed with powf as llama2.c does.
pub fn rope(vec: &mut [f32], pos: usize, head_size: usize, theta: f32) {
    for head in vec.chunks_exact_mut(head_size) {
        for (pair, v) in head.chunks_exact_mut(2).enumerate() {
            let (fcr, fci) = rope_rotation(pair * 2, pos, head_size, theta);
            let (v0, v1) = (v[0], v[1]);
            v[0] = v0 * fcr - v1 * fci;
            v[1] = v0 * fci + v1 * fcr;
        }
    }
}

/// Applies RoPE to `q` and `k` (whole heads of `rotation.len()` values) with
/// `rotation`, (cos, sin) per pair of a head, as [`rope`] does for each pair:
/// `v0' = v0·cos − v1·sin`, `v1' = v0·sin + v1·cos`. On MVE four pairs a step in
/// vector lanes where that keeps these bits (`kernels::rope_qk`).
pub fn rope_rotate(q: &mut [f32], k: &mut [f32], rotation: &[f32]) {
    let done = crate::kernels::rope_qk(q, k, rotation);
    for (vec, done) in [q, k].into_iter().zip(done) {
        if done {
            continue;
        }
        for head in vec.chunks_exact_mut(rotation.len().max(2)) {
            for (v, cs) in head.chunks_exact_mut(2).zip(rotation.chunks_exact(2)) {
                let (v0, v1, fcr, fci) = (v[0], v[1], cs[0], cs[1]);
                v[0] = v0 * fcr - v1 * fci;
                v[1] = v0 * fci + v1 * fcr;
            }
        }
    }
}

/// (cos, sin) of the RoPE angle for element `head_dim` (even) at `pos`.
#[inline]
pub fn rope_rotation(head_dim: usize, pos: usize, head_size: usize, theta: f32) -> (f32, f32) {
    let freq = 1.0 / libm::powf(theta, head_dim as f32 / head_size as f32);
    let val = pos as f32 * freq;
    // One argument reduction for both: the same bits as `libm::cosf` and `libm::sinf`
    // (checked for every seventh f32 in 0..70,000 by `sincos_equals_sin_and_cos`).
    let (sin, cos) = libm::sincosf(val);
    (cos, sin)
}

/// SwiGLU: `gate[i] = silu(gate[i]) * up[i]`.
pub fn swiglu(gate: &mut [f32], up: &[f32]) {
    let n = gate.len().min(up.len());
    let (gate, up) = (&mut gate[..n], &up[..n]);
    let mut at = 0;
    while at < n {
        // Hard-float Cortex-M: runs of four in an FPU loop (the same bits); the rest here.
        at += crate::kernels::swiglu4(&mut gate[at..], &up[at..]);
        let (Some(g), Some(&u)) = (gate.get_mut(at), up.get(at)) else { break };
        let v = *g;
        *g = v * (1.0 / (1.0 + exp(-v))) * u;
        at += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_sums_to_one_and_orders() {
        let mut x = [1.0f32, 2.0, 3.0, -1e30];
        softmax(&mut x);
        assert!((x.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(x[2] > x[1] && x[1] > x[0] && x[3] == 0.0);
    }

    #[test]
    fn sincos_equals_sin_and_cos() {
        let mut bits = 0u32;
        while f32::from_bits(bits) < 70_000.0 {
            let x = f32::from_bits(bits);
            let (s, c) = libm::sincosf(x);
            assert_eq!((s.to_bits(), c.to_bits()), (libm::sinf(x).to_bits(), libm::cosf(x).to_bits()), "{x}");
            bits += 7 * 61;
        }
    }

    #[test]
    fn rope_at_position_zero_is_identity() {
        let mut v = [1.0f32, 2.0, 3.0, 4.0];
        rope(&mut v, 0, 4, 10000.0);
        assert_eq!(v, [1.0, 2.0, 3.0, 4.0]);
    }

    #[test]
    fn rope_preserves_pair_norms() {
        let mut v = [3.0f32, 4.0, 1.0, 0.0];
        rope(&mut v, 7, 4, 10000.0);
        assert!((libm::hypotf(v[0], v[1]) - 5.0).abs() < 1e-5);
        assert!((libm::hypotf(v[2], v[3]) - 1.0).abs() < 1e-6);
    }

    #[test]
    fn rmsnorm_unit_weights_gives_unit_rms() {
        let x = [1.0f32, -2.0, 3.0, -4.0];
        let mut out = [0.0f32; 4];
        rmsnorm(&mut out, &x, &[1.0; 4], 0.0);
        let rms = libm::sqrtf(out.iter().map(|v| v * v).sum::<f32>() / 4.0);
        assert!((rms - 1.0).abs() < 1e-6);
    }
}
