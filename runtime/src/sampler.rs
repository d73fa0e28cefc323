//! Token sampling with llama2.c's exact semantics (xorshift64* RNG, temperature,
//! multinomial and top-p), plus top-k and min-p filters.

use crate::error::SamplerError;
use crate::math;

/// A (probability, token) pair in the sampler's scratch; 8 bytes, so a plan can size it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Candidate {
    /// Probability after softmax.
    pub prob: f32,
    /// Token id.
    pub index: u32,
}

const _: () = assert!(core::mem::size_of::<Candidate>() == 8);

/// llama2.c's xorshift64* generator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// Seeds the generator; a zero seed would stay zero forever.
    pub fn new(seed: u64) -> Result<Rng, SamplerError> {
        if seed == 0 {
            return Err(SamplerError::ZeroSeed);
        }
        Ok(Rng { state: seed })
    }

    /// Next 32 random bits (llama2.c `random_u32`).
    pub fn next_u32(&mut self) -> u32 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        (self.state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32) as u32
    }

    /// Uniform in [0, 1) with 24 bits (llama2.c `random_f32`).
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u32() >> 8) as f32 / 16_777_216.0
    }
}

/// Sampling settings; the defaults are llama2.c's (`-t 1.0 -p 0.9`).
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SamplerConfig {
    /// 0 = greedy (argmax); otherwise logits are divided by it before softmax.
    pub temperature: f32,
    /// Nucleus mass in (0, 1]; 1 disables top-p.
    pub top_p: f32,
    /// Keep only the k most likely tokens; 0 disables.
    pub top_k: usize,
    /// Drop tokens below `min_p × max probability`; 0 disables.
    pub min_p: f32,
    /// RNG seed (non-zero).
    pub seed: u64,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig { temperature: 1.0, top_p: 0.9, top_k: 0, min_p: 0.0, seed: 1 }
    }
}

/// Picks the next token from logits.
#[derive(Clone, Copy, Debug)]
pub struct Sampler {
    config: SamplerConfig,
    rng: Rng,
}

/// The sampler's order of candidates as one integer: a larger key comes
/// first. Descending probability (as `f32::total_cmp` orders it), then
/// ascending id (a stable sort's order); ids are distinct, so it is a total order.
fn key(c: &Candidate) -> u64 {
    // total_cmp's key: flip the magnitude bits of negative values, then compare signed.
    let bits = c.prob.to_bits() as i32;
    let ordered = (bits ^ (((bits >> 31) as u32) >> 1) as i32) as u32 ^ 0x8000_0000;
    (u64::from(ordered) << 32) | u64::from(!c.index)
}

/// Index of the largest value; the first one wins ties (llama2.c `sample_argmax`).
pub fn argmax(x: &[f32]) -> u32 {
    let mut best = 0usize;
    for (i, &v) in x.iter().enumerate().skip(1) {
        if v > x[best] {
            best = i;
        }
    }
    best as u32
}

/// [`argmax`] and the finiteness check in one pass: the index of the largest
/// logit (the first on ties), or `Err` with the index of the first NaN or
/// infinite one. The running maximum stays in a register; the check is an
/// integer test of the exponent bits.
fn argmax_finite(x: &[f32]) -> Result<u32, usize> {
    let Some(&first) = x.first() else { return Ok(0) };
    let (mut best, mut best_v) = (0usize, first);
    // Exponent bits all ones is infinity or NaN.
    let mut non_finite = (first.to_bits() & 0x7f80_0000) == 0x7f80_0000;
    let mut from = 1;
    // Hard-float Cortex-M: whole groups of eight in an FPU loop (the same choice), the rest here.
    if let Some((i, v, finite)) = crate::kernels::argmax8(x) {
        (best, best_v, non_finite, from) = (i, v, !finite, x.len() / 8 * 8);
    }
    for (i, &v) in x.iter().enumerate().skip(from) {
        non_finite |= (v.to_bits() & 0x7f80_0000) == 0x7f80_0000;
        if v > best_v {
            best = i;
            best_v = v;
        }
    }
    if non_finite {
        return Err(x.iter().position(|l| !l.is_finite()).unwrap_or(0));
    }
    Ok(best as u32)
}

impl Sampler {
    /// Checks the settings against a vocabulary of `vocab_size`.
    pub fn new(config: SamplerConfig, vocab_size: usize) -> Result<Sampler, SamplerError> {
        let t = config.temperature;
        if !(t.is_finite() && t >= 0.0) {
            return Err(SamplerError::Temperature);
        }
        if !(config.top_p > 0.0 && config.top_p <= 1.0) {
            return Err(SamplerError::TopP);
        }
        if config.top_k > vocab_size {
            return Err(SamplerError::TopK { top_k: config.top_k, vocab_size });
        }
        if !(0.0..=1.0).contains(&config.min_p) {
            return Err(SamplerError::MinP);
        }
        Ok(Sampler { config, rng: Rng::new(config.seed)? })
    }

    /// The settings.
    pub fn config(&self) -> &SamplerConfig {
        &self.config
    }

    /// Samples a token; `logits` (vocab) is overwritten with probabilities,
    /// `scratch` needs at least `logits.len()` entries. A NaN or infinite logit is
    /// an error ([`SamplerError::NonFiniteLogit`]), never a sampled token.
    pub fn sample(&mut self, logits: &mut [f32], scratch: &mut [Candidate]) -> Result<u32, SamplerError> {
        let n = logits.len();
        if scratch.len() < n {
            return Err(SamplerError::Scratch { needed: n, given: scratch.len() });
        }
        let greedy = argmax_finite(logits).map_err(|index| SamplerError::NonFiniteLogit { index })?;
        let c = self.config;
        if c.temperature == 0.0 {
            return Ok(greedy);
        }
        // llama2.c's division, so normal temperatures keep its exact probabilities.
        // A temperature so small that a scaled logit overflows is the t -> 0+ limit:
        // the most likely token (softmax of an infinite logit would be NaN).
        let mut finite = true;
        for l in logits.iter_mut() {
            *l /= c.temperature;
            finite &= l.is_finite();
        }
        if !finite {
            return Ok(greedy);
        }
        math::softmax(logits);
        let coin = self.rng.next_f32();
        if c.top_k == 0 && c.min_p == 0.0 {
            if c.top_p >= 1.0 {
                return Ok(sample_multinomial(logits, coin));
            }
            return Ok(sample_top_p(logits, c.top_p, scratch, coin));
        }
        Ok(sample_filtered(logits, &c, scratch, coin))
    }
}

/// Inverse-CDF draw over all tokens (llama2.c `sample_mult`).
fn sample_multinomial(probs: &[f32], coin: f32) -> u32 {
    let mut cdf = 0.0f32;
    for (i, &p) in probs.iter().enumerate() {
        cdf += p;
        if coin < cdf {
            return i as u32;
        }
    }
    probs.len().saturating_sub(1) as u32
}

/// Draws from `sorted` (descending) cut at the smallest prefix whose mass exceeds `mass`.
fn draw_from_prefix(sorted: &[Candidate], mass: f32, coin: f32) -> u32 {
    let mut cumulative = 0.0f32;
    let mut last = sorted.len().saturating_sub(1);
    for (i, c) in sorted.iter().enumerate() {
        cumulative += c.prob;
        if cumulative > mass {
            last = i;
            break;
        }
    }
    let r = coin * cumulative;
    let mut cdf = 0.0f32;
    for c in &sorted[..=last.min(sorted.len().saturating_sub(1))] {
        cdf += c.prob;
        if r < cdf {
            return c.index;
        }
    }
    sorted.get(last).map_or(0, |c| c.index)
}

/// llama2.c `sample_topp`: drop tokens below (1 - p) / (n - 1), sort, cut the nucleus, draw.
fn sample_top_p(probs: &[f32], top_p: f32, scratch: &mut [Candidate], coin: f32) -> u32 {
    let n = probs.len();
    if n < 2 {
        return 0;
    }
    let cutoff = (1.0 - top_p) / (n - 1) as f32;
    let kept = collect(probs, cutoff, scratch);
    if kept.is_empty() {
        return argmax(probs);
    }
    // Only the nucleus needs its order: take candidates most likely first until
    // their mass exceeds top_p (draw_from_prefix stops at the same one).
    let mut heap = Heap::new(kept);
    let mut cumulative = 0.0f32;
    while let Some(c) = heap.pop() {
        cumulative += c.prob;
        if cumulative > top_p {
            break;
        }
    }
    draw_from_prefix(heap.taken(), top_p, coin)
}

/// A binary heap over a candidate slice with the candidate that comes first
/// (the largest [`key`]) at the root. [`Heap::pop`] moves each candidate it
/// returns to the slice's end, so the candidates taken so far lie sorted (last
/// to first) behind the heap; [`Heap::taken`] gives them first to last. The
/// work is a linear heapify plus a sift per candidate taken, not a full sort.
struct Heap<'a> {
    v: &'a mut [Candidate],
    len: usize,
}

impl<'a> Heap<'a> {
    fn new(v: &'a mut [Candidate]) -> Self {
        heapify::<true>(v);
        let len = v.len();
        Heap { v, len }
    }

    /// The candidate that comes first among those left, or `None` when all have been taken.
    fn pop(&mut self) -> Option<Candidate> {
        if self.len == 0 {
            return None;
        }
        self.len -= 1;
        self.v.swap(0, self.len);
        sift_down::<true>(&mut self.v[..self.len], 0);
        Some(self.v[self.len])
    }

    /// The candidates taken, first to last.
    fn taken(self) -> &'a mut [Candidate] {
        let taken = &mut self.v[self.len..];
        taken.reverse();
        taken
    }
}

/// Makes `v` a heap: with the candidate that comes first at the root when
/// `FIRST`, else with the one that comes last.
fn heapify<const FIRST: bool>(v: &mut [Candidate]) {
    for i in (0..v.len() / 2).rev() {
        sift_down::<FIRST>(v, i);
    }
}

/// Whether `a` belongs above `b` in a heap of [`heapify`]'s orientation.
fn above<const FIRST: bool>(a: &Candidate, b: &Candidate) -> bool {
    if FIRST {
        key(a) > key(b)
    } else {
        key(a) < key(b)
    }
}

/// Restores the heap order below `i` in `heap`.
fn sift_down<const FIRST: bool>(heap: &mut [Candidate], mut i: usize) {
    loop {
        let left = 2 * i + 1;
        let Some(l) = heap.get(left) else { return };
        let child = match heap.get(left + 1) {
            Some(r) if above::<FIRST>(r, l) => left + 1,
            _ => left,
        };
        if !above::<FIRST>(&heap[child], &heap[i]) {
            return;
        }
        heap.swap(i, child);
        i = child;
    }
}

/// Sorts `v` first to last (heapsort: the last one left to the end each time).
fn sort(v: &mut [Candidate]) {
    heapify::<false>(v);
    for end in (1..v.len()).rev() {
        v.swap(0, end);
        sift_down::<false>(&mut v[..end], 0);
    }
}

/// Moves the `k` candidates of `v` that come first to `v[..k]`, in no particular order.
fn select_first(v: &mut [Candidate], k: usize) {
    if k == 0 || k >= v.len() {
        return;
    }
    let (top, rest) = v.split_at_mut(k);
    // `top` is a heap with the last of the k at its root: a candidate that comes
    // before it replaces it.
    heapify::<false>(top);
    for c in rest.iter_mut() {
        if key(c) > key(&top[0]) {
            core::mem::swap(c, &mut top[0]);
            sift_down::<false>(top, 0);
        }
    }
}

/// Writes candidates with probability >= `cutoff` in id order; returns them.
fn collect<'s>(probs: &[f32], cutoff: f32, scratch: &'s mut [Candidate]) -> &'s mut [Candidate] {
    let mut n0 = 0;
    for (i, &p) in probs.iter().enumerate() {
        if p >= cutoff {
            scratch[n0] = Candidate { prob: p, index: i as u32 };
            n0 += 1;
        }
    }
    &mut scratch[..n0]
}

/// min-p, then top-k, then top-p over the renormalized survivors.
fn sample_filtered(probs: &[f32], c: &SamplerConfig, scratch: &mut [Candidate], coin: f32) -> u32 {
    let max = probs.iter().copied().fold(0.0f32, f32::max);
    let kept = collect(probs, c.min_p * max, scratch);
    if kept.is_empty() {
        return argmax(probs);
    }
    let k = if c.top_k == 0 { kept.len() } else { c.top_k.min(kept.len()) };
    // The k most likely first, then sort only those.
    select_first(kept, k);
    let kept = &mut kept[..k];
    sort(kept);
    let total: f32 = kept.iter().map(|c| c.prob).sum();
    let mass = if c.top_p >= 1.0 { f32::INFINITY } else { c.top_p * total };
    draw_from_prefix(kept, mass, coin)
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::cmp::Ordering;

    /// The comparator the sampler sorted with before: descending probability, then ascending id.
    fn by_prob_desc(a: &Candidate, b: &Candidate) -> Ordering {
        b.prob.total_cmp(&a.prob).then(a.index.cmp(&b.index))
    }

    #[test]
    fn argmax_finite_equals_argmax_and_finds_the_first_non_finite() {
        let mut x: std::vec::Vec<f32> = (0..97).map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.25).collect();
        x[60] = 100.0;
        x[80] = 100.0; // a tie: the first wins, as in argmax
        assert_eq!(argmax_finite(&x), Ok(argmax(&x)));
        assert_eq!(argmax_finite(&x), Ok(60));
        assert_eq!(argmax_finite(&[]), Ok(0));
        assert_eq!(argmax_finite(&[f32::MAX, -f32::MAX]), Ok(0));
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            for at in [0, 1, 50, 96] {
                let mut y = x.clone();
                y[at] = bad;
                if at < 96 {
                    y[96] = f32::NAN;
                }
                assert_eq!(argmax_finite(&y), Err(at), "{bad} at {at}");
            }
        }
    }

    /// The sort-based top-p and filtered draws the heap replaced: same tokens.
    fn top_p_by_sort(probs: &[f32], top_p: f32, coin: f32) -> u32 {
        let cutoff = (1.0 - top_p) / (probs.len() - 1) as f32;
        let mut scratch = std::vec![Candidate::default(); probs.len()];
        let kept = collect(probs, cutoff, &mut scratch);
        if kept.is_empty() {
            return argmax(probs);
        }
        kept.sort_unstable_by(by_prob_desc);
        draw_from_prefix(kept, top_p, coin)
    }

    fn filtered_by_sort(probs: &[f32], c: &SamplerConfig, coin: f32) -> u32 {
        let max = probs.iter().copied().fold(0.0f32, f32::max);
        let mut scratch = std::vec![Candidate::default(); probs.len()];
        let kept = collect(probs, c.min_p * max, &mut scratch);
        if kept.is_empty() {
            return argmax(probs);
        }
        let k = if c.top_k == 0 { kept.len() } else { c.top_k.min(kept.len()) };
        kept.sort_unstable_by(by_prob_desc);
        let kept = &kept[..k];
        let total: f32 = kept.iter().map(|c| c.prob).sum();
        let mass = if c.top_p >= 1.0 { f32::INFINITY } else { c.top_p * total };
        draw_from_prefix(kept, mass, coin)
    }

    #[test]
    fn the_heap_draws_what_a_full_sort_draws() {
        let mut rng = Rng::new(12345).unwrap();
        for round in 0..300 {
            let n = 2 + (rng.next_u32() % 300) as usize;
            // Coarse values so that ties (broken by id) are common.
            let mut probs: std::vec::Vec<f32> = (0..n).map(|_| (rng.next_u32() % 17) as f32).collect();
            if round % 3 == 0 {
                for p in probs.iter_mut() {
                    *p = libm::expf(*p * 0.7);
                }
            }
            math::softmax(&mut probs);
            let coin = rng.next_f32();
            let mut scratch = std::vec![Candidate::default(); n];
            for top_p in [0.1, 0.5, 0.9, 0.99, 1.0] {
                if top_p < 1.0 {
                    let got = sample_top_p(&probs, top_p, &mut scratch, coin);
                    assert_eq!(got, top_p_by_sort(&probs, top_p, coin), "round {round}, top_p {top_p}");
                }
                for (top_k, min_p) in [(0, 0.05), (1, 0.0), (5, 0.0), (40, 0.01), (n, 0.0)] {
                    let c = SamplerConfig { top_p, top_k, min_p, ..Default::default() };
                    let got = sample_filtered(&probs, &c, &mut scratch, coin);
                    assert_eq!(got, filtered_by_sort(&probs, &c, coin), "round {round}, {c:?}");
                }
            }
            // The heap pops in sorted order.
            let kept = collect(&probs, 0.0, &mut scratch);
            let mut sorted = kept.to_vec();
            sorted.sort_unstable_by(by_prob_desc);
            let mut heap = Heap::new(kept);
            for want in &sorted {
                assert_eq!(heap.pop().as_ref(), Some(want));
            }
            assert_eq!(heap.pop(), None);
            assert_eq!(heap.taken(), &sorted[..]);
            let mut all = collect(&probs, 0.0, &mut scratch).to_vec();
            sort(&mut all);
            assert_eq!(all, sorted);
        }
    }

    #[test]
    fn the_key_orders_as_total_cmp_then_id() {
        let values = [f32::NEG_INFINITY, -2.0, -0.0, 0.0, f32::MIN_POSITIVE, 1e-30, 0.25, 1.0, f32::INFINITY];
        for a in values {
            for b in values {
                for (i, j) in [(0, 1), (1, 0), (3, 3)] {
                    let (x, y) = (Candidate { prob: a, index: i }, Candidate { prob: b, index: j });
                    assert_eq!(key(&y).cmp(&key(&x)), by_prob_desc(&x, &y), "{a} {b} {i} {j}");
                }
            }
        }
    }

    #[test]
    fn rng_matches_llama2c_sequence() {
        // First outputs of llama2.c's random_u32 for seed 42, computed from its C source.
        let mut rng = Rng::new(42).unwrap();
        let mut state: u64 = 42;
        for _ in 0..5 {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let expect = (state.wrapping_mul(0x2545F4914F6CDD1D) >> 32) as u32;
            assert_eq!(rng.next_u32(), expect);
        }
    }

    #[test]
    fn greedy_takes_first_max() {
        let mut s = Sampler::new(SamplerConfig { temperature: 0.0, ..Default::default() }, 4).unwrap();
        let mut logits = [0.5, 2.0, 2.0, -1.0];
        let mut scratch = [Candidate::default(); 4];
        assert_eq!(s.sample(&mut logits, &mut scratch), Ok(1));
    }

    #[test]
    fn top_k_one_is_argmax() {
        let cfg = SamplerConfig { temperature: 1.0, top_k: 1, seed: 9, ..Default::default() };
        let mut s = Sampler::new(cfg, 5).unwrap();
        for _ in 0..20 {
            let mut logits = [0.1, 0.3, 3.0, 0.2, 2.9];
            let mut scratch = [Candidate::default(); 5];
            assert_eq!(s.sample(&mut logits, &mut scratch), Ok(2));
        }
    }

    #[test]
    fn min_p_excludes_unlikely_tokens() {
        let cfg = SamplerConfig { temperature: 1.0, top_p: 1.0, min_p: 0.5, seed: 3, ..Default::default() };
        let mut s = Sampler::new(cfg, 4).unwrap();
        for _ in 0..200 {
            let mut logits = [0.0, 5.0, 4.9, -3.0];
            let mut scratch = [Candidate::default(); 4];
            let t = s.sample(&mut logits, &mut scratch).unwrap();
            assert!(t == 1 || t == 2, "sampled {t}");
        }
    }

    #[test]
    fn bad_settings_are_errors() {
        let ok = SamplerConfig::default();
        let bad = |c: SamplerConfig| Sampler::new(c, 10).unwrap_err();
        assert_eq!(bad(SamplerConfig { temperature: f32::NAN, ..ok }), SamplerError::Temperature);
        assert_eq!(bad(SamplerConfig { temperature: -1.0, ..ok }), SamplerError::Temperature);
        assert_eq!(bad(SamplerConfig { top_p: 0.0, ..ok }), SamplerError::TopP);
        assert_eq!(bad(SamplerConfig { top_p: 1.5, ..ok }), SamplerError::TopP);
        assert_eq!(bad(SamplerConfig { top_k: 11, ..ok }), SamplerError::TopK { top_k: 11, vocab_size: 10 });
        assert_eq!(bad(SamplerConfig { min_p: f32::NAN, ..ok }), SamplerError::MinP);
        assert_eq!(bad(SamplerConfig { seed: 0, ..ok }), SamplerError::ZeroSeed);
    }

    #[test]
    fn a_temperature_whose_scaled_logits_overflow_is_greedy() {
        for t in [1e-38f32, 1e-30, f32::MIN_POSITIVE, 1e-45] {
            let cfg = SamplerConfig { temperature: t, seed: 7, ..Default::default() };
            let mut s = Sampler::new(cfg, 4).unwrap();
            for _ in 0..10 {
                let mut logits = [0.5, 12.0, 11.5, -3.0];
                let mut scratch = [Candidate::default(); 4];
                assert_eq!(s.sample(&mut logits, &mut scratch), Ok(1), "t = {t:e}");
            }
        }
    }

    #[test]
    fn non_finite_logits_are_errors() {
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            for t in [0.0, 1.0] {
                let mut s = Sampler::new(SamplerConfig { temperature: t, ..Default::default() }, 4).unwrap();
                let mut logits = [0.5, 1.0, bad, -1.0];
                let mut scratch = [Candidate::default(); 4];
                assert_eq!(s.sample(&mut logits, &mut scratch), Err(SamplerError::NonFiniteLogit { index: 2 }));
            }
        }
    }

    #[test]
    fn small_scratch_is_an_error() {
        let mut s = Sampler::new(SamplerConfig::default(), 4).unwrap();
        let mut logits = [0.0; 4];
        let mut scratch = [Candidate::default(); 3];
        assert_eq!(s.sample(&mut logits, &mut scratch), Err(SamplerError::Scratch { needed: 4, given: 3 }));
    }
}
