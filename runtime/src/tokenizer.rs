//! Tokenizers read in place from the model file: [`Tokenizer`] is either the
//! SentencePiece kind with llama2.c semantics ([`SpmTokenizer`], below) or the
//! byte-level BPE kind with GPT-2 / llama.cpp semantics ([`crate::bpe::BpeTokenizer`]).
//!
//! A version 2 file's tokenizer section starts with a u32 kind (0 = SentencePiece,
//! 1 = byte-level BPE) followed by that kind's layout; a version 1 file's section
//! is the SentencePiece layout alone. SentencePiece layout (all little-endian,
//! offsets relative to the start of the layout):
//!
//! ```text
//! 0            u32            vocab_size n
//! 4            u32            blob length B
//! 8            n × f32        merge scores
//! 8+4n         (n+1) × u32    piece start offsets into the blob (last = B)
//! 12+8n        n × u32        token ids sorted by piece bytes (built at convert time)
//! 12+12n       B bytes        piece bytes, concatenated
//! ```
//!
//! Encoding needs no heap: the caller's output slice is the merge workspace,
//! and pair lookups compare against the two pieces without concatenating them.
//! Given [`SpmTokenizer::encode_workspace`] slots, the merges run in O(n log n)
//! (a linked list of tokens, each pair's merge cached, and a tournament tree
//! picking the best pair); given only [`SpmTokenizer::encode_capacity`] slots, they
//! rescan the sequence after every merge, O(n²), which is fine for the short
//! prompts of a board. Both give the same tokens as llama2.c.

use core::cmp::Ordering;

use crate::bpe::BpeTokenizer;
use crate::error::{FormatError, TokenizerError};
use crate::format::read_u32;

/// Token id of the first byte-fallback token `<0x00>`.
pub const BYTE_TOKEN_BASE: u32 = 3;

/// A validated view of a SentencePiece (llama2.c) tokenizer section.
#[derive(Clone, Copy, Debug)]
pub struct SpmTokenizer<'a> {
    /// n × f32 merge scores.
    scores: &'a [u8],
    /// (n+1) × u32 blob offsets.
    offsets: &'a [u8],
    /// n × u32 ids in piece order.
    sorted: &'a [u8],
    /// Concatenated piece bytes.
    blob: &'a [u8],
    vocab_size: usize,
    /// Length in bytes of the longest piece.
    longest_piece: usize,
    bos_id: u32,
    eos_id: u32,
}

/// A free or absent slot in the merge workspace's links and tree.
const NONE: u32 = u32::MAX;

/// llama2.c's starting best score: only pairs scoring above it are merged.
const MIN_MERGE_SCORE: f32 = -1e10;

/// One byte per value, so a byte token can be returned as a `&'static [u8]`.
static BYTES: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = i as u8;
        i += 1;
    }
    t
};

/// Parses `<0xXX>` (upper- or lower-case hex) into its byte.
fn byte_piece_value(piece: &[u8]) -> Option<u8> {
    if piece.len() != 6 || &piece[..3] != b"<0x" || piece[5] != b'>' {
        return None;
    }
    let hex = |c: u8| (c as char).to_digit(16);
    Some((hex(piece[3])? * 16 + hex(piece[4])?) as u8)
}

impl<'a> SpmTokenizer<'a> {
    /// Checks the section: sizes, monotonic offsets, piece lengths, and a
    /// strictly increasing sorted index (which also proves it a permutation).
    pub fn parse(
        section: &'a [u8],
        vocab_size: usize,
        max_piece_len: usize,
        bos_id: u32,
        eos_id: u32,
    ) -> Result<SpmTokenizer<'a>, FormatError> {
        let bad = FormatError::TokenizerTables;
        let n = read_u32(section, 0).ok_or(bad)? as usize;
        let blob_len = read_u32(section, 4).ok_or(bad)? as usize;
        if n != vocab_size {
            return Err(bad);
        }
        let scores_at = 8usize;
        let offsets_at = n.checked_mul(4).and_then(|v| v.checked_add(scores_at)).ok_or(bad)?;
        let sorted_at = (n + 1).checked_mul(4).and_then(|v| v.checked_add(offsets_at)).ok_or(bad)?;
        let blob_at = n.checked_mul(4).and_then(|v| v.checked_add(sorted_at)).ok_or(bad)?;
        let end = blob_at.checked_add(blob_len).ok_or(bad)?;
        if end != section.len() {
            return Err(bad);
        }
        let t = SpmTokenizer {
            scores: &section[scores_at..offsets_at],
            offsets: &section[offsets_at..sorted_at],
            sorted: &section[sorted_at..blob_at],
            blob: &section[blob_at..end],
            vocab_size: n,
            longest_piece: 0,
            bos_id,
            eos_id,
        };
        let mut t = t;
        // Offsets start at 0, never decrease, end at the blob length; pieces are 1..=max bytes.
        if read_u32(t.offsets, 0) != Some(0) || read_u32(t.offsets, n * 4) != Some(blob_len as u32) {
            return Err(bad);
        }
        for id in 0..n {
            let start = read_u32(t.offsets, id * 4).ok_or(bad)? as usize;
            let stop = read_u32(t.offsets, id * 4 + 4).ok_or(bad)? as usize;
            if stop <= start || stop - start > max_piece_len || stop > blob_len {
                return Err(FormatError::TokenizerPiece { id: id as u32 });
            }
            t.longest_piece = t.longest_piece.max(stop - start);
        }
        // The index must list ids whose pieces strictly increase in byte order.
        let mut prev: Option<&[u8]> = None;
        for pos in 0..n {
            let index_err = FormatError::TokenizerIndex { position: pos as u32 };
            let id = read_u32(t.sorted, pos * 4).ok_or(index_err)?;
            let piece = t.piece(id).ok_or(index_err)?;
            if let Some(p) = prev {
                if p >= piece {
                    return Err(index_err);
                }
            }
            prev = Some(piece);
        }
        Ok(t)
    }

    /// Number of tokens.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// Beginning-of-sequence id.
    pub fn bos_id(&self) -> u32 {
        self.bos_id
    }

    /// End-of-sequence id.
    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }

    /// The raw piece bytes of `id`.
    pub fn piece(&self, id: u32) -> Option<&'a [u8]> {
        let i = id as usize;
        if i >= self.vocab_size {
            return None;
        }
        let start = read_u32(self.offsets, i * 4)? as usize;
        let stop = read_u32(self.offsets, i * 4 + 4)? as usize;
        self.blob.get(start..stop)
    }

    /// The merge score of `id` (NaN for an out-of-range id, which never wins a merge).
    pub fn score(&self, id: u32) -> f32 {
        read_u32(self.scores, id as usize * 4).map_or(f32::NAN, f32::from_bits)
    }

    /// Binary search over the sorted index with a caller-supplied comparison of a piece to the key.
    fn search(&self, cmp: impl Fn(&[u8]) -> Ordering) -> Option<u32> {
        let (mut lo, mut hi) = (0usize, self.vocab_size);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let id = read_u32(self.sorted, mid * 4)?;
            match cmp(self.piece(id)?) {
                Ordering::Less => lo = mid + 1,
                Ordering::Greater => hi = mid,
                Ordering::Equal => return Some(id),
            }
        }
        None
    }

    /// The id whose piece is exactly `bytes`.
    pub fn lookup(&self, bytes: &[u8]) -> Option<u32> {
        self.search(|p| p.cmp(bytes))
    }

    /// The id whose piece is `a` followed by `b`, without building the concatenation.
    pub fn lookup_pair(&self, a: &[u8], b: &[u8]) -> Option<u32> {
        self.search(|p| {
            let split = p.len().min(a.len());
            match p[..split].cmp(&a[..split]) {
                Ordering::Equal if p.len() <= a.len() => (p.len()).cmp(&(a.len() + b.len())),
                Ordering::Equal => p[split..].cmp(b),
                other => other,
            }
        })
    }

    /// Slots `encode` needs in its output slice for `text` (an upper bound on the result).
    pub fn encode_capacity(text: &[u8]) -> usize {
        text.len() + 3
    }

    /// Slots of output slice with which `encode` merges in O(n log n) rather than
    /// O(n²): seven per token (ids, links, cached pairs, tree).
    pub fn encode_workspace(text: &[u8]) -> usize {
        Self::encode_capacity(text).saturating_mul(7)
    }

    /// A lower bound on the tokens `encode` returns for `text` (with BOS when
    /// `bos`), computed without encoding: every token covers at most the length of
    /// the longest piece in text bytes, so a text that cannot fit a context can be
    /// refused before it is encoded.
    pub fn min_tokens(&self, text: &[u8], bos: bool) -> usize {
        let covered = text.len() + usize::from(!text.is_empty()); // the dummy-prefix space
        covered.div_ceil(self.longest_piece.max(1)) + usize::from(bos)
    }

    /// Encodes `text` as llama2.c `encode` does: optional BOS, a dummy-prefix
    /// space for non-empty text, each UTF-8 code point (bytes grouped as llama2.c
    /// groups them) looked up whole or split into byte tokens, then repeated
    /// merges of the best-scoring adjacent pair (the leftmost of equal scores).
    /// Returns the token count. `out` needs [`SpmTokenizer::encode_capacity`] slots;
    /// with [`SpmTokenizer::encode_workspace`] slots long texts encode fast.
    pub fn encode(&self, text: &[u8], bos: bool, eos: bool, out: &mut [u32]) -> Result<usize, TokenizerError> {
        // Count the tokens before merging, so capacity is checked up front.
        let needed = self.pre_merge_count(text) + usize::from(bos) + usize::from(eos);
        if needed > out.len() {
            return Err(TokenizerError::OutputTooSmall { needed, given: out.len() });
        }
        let mut n = 0usize;
        let mut push = |id: u32| {
            out[n] = id;
            n += 1;
        };
        if bos {
            push(self.bos_id);
        }
        if !text.is_empty() {
            push(self.space_id());
        }
        self.for_each_code_point(text, |bytes| match self.lookup(bytes) {
            Some(id) => push(id),
            None => bytes.iter().for_each(|&b| push(u32::from(b) + BYTE_TOKEN_BASE)),
        });
        n = match tree_len(n).and_then(|p| n.checked_mul(5)?.checked_add(p)) {
            Some(work) if work <= out.len() && n < NONE as usize => {
                let (ids, work) = out.split_at_mut(n);
                merge_fast(ids, work, &|a, b| self.pair(a, b))
            }
            _ => merge_rescanning(&mut out[..n], &|a, b| self.pair(a, b)),
        };
        if eos {
            out[n] = self.eos_id;
            n += 1;
        }
        Ok(n)
    }

    /// The merge of `a` followed by `b` and its priority key (lower merges first), when it
    /// is eligible (llama2.c: a pair in the vocabulary scoring above -1e10; a NaN score never merges).
    fn pair(&self, a: u32, b: u32) -> Option<(u32, u32)> {
        let id = self.lookup_pair(self.piece(a)?, self.piece(b)?)?;
        let score = self.score(id);
        (score > MIN_MERGE_SCORE).then(|| (id, score_key(score)))
    }

    /// The dummy-prefix token: the piece " ", or its byte token if the vocabulary lacks it.
    fn space_id(&self) -> u32 {
        self.lookup(b" ").unwrap_or(u32::from(b' ') + BYTE_TOKEN_BASE)
    }

    /// Tokens produced from `text` before any merge (dummy prefix included).
    fn pre_merge_count(&self, text: &[u8]) -> usize {
        let mut count = usize::from(!text.is_empty());
        self.for_each_code_point(text, |bytes| count += if self.lookup(bytes).is_some() { 1 } else { bytes.len() });
        count
    }

    /// Groups bytes as llama2.c does: a lead byte plus up to three continuation bytes.
    fn for_each_code_point(&self, text: &[u8], mut f: impl FnMut(&[u8])) {
        let mut start = 0usize;
        for i in 0..text.len() {
            let len = i + 1 - start;
            let next_is_cont = text.get(i + 1).is_some_and(|&c| c & 0xC0 == 0x80);
            if next_is_cont && len < 4 {
                continue;
            }
            f(&text[start..=i]);
            start = i + 1;
        }
    }

    /// The bytes to print for `token` following `prev`: the leading space is
    /// dropped after BOS, and `<0xXX>` pieces become the raw byte.
    pub fn decode(&self, prev: u32, token: u32) -> &'a [u8] {
        let mut piece = self.piece(token).unwrap_or(&[]);
        if prev == self.bos_id && piece.first() == Some(&b' ') {
            piece = &piece[1..];
        }
        if let Some(b) = byte_piece_value(piece) {
            let b = b as usize;
            return &BYTES[b..b + 1];
        }
        piece
    }
}

/// The priority key of a SentencePiece score: higher scores get lower keys, equal
/// scores (including -0.0 and 0.0) equal keys. `score` is finite here.
fn score_key(score: f32) -> u32 {
    let bits = (score + 0.0).to_bits(); // -0.0 + 0.0 = +0.0
                                        // Map to an unsigned order that increases with the float, then invert.
    let ordered = if bits & 0x8000_0000 != 0 { !bits } else { bits | 0x8000_0000 };
    !ordered
}

/// The merge of an adjacent pair: (merged id, key), lower keys merging first. A
/// trait object, so both tokenizer kinds share one copy of the merge code (flash).
pub(crate) type PairFn<'f> = &'f dyn Fn(u32, u32) -> Option<(u32, u32)>;

/// Merges `ids` by rescanning every adjacent pair after each merge: O(n²) with no
/// workspace. `pair(a, b)` gives the merged id and its key; the pair with the lowest
/// key merges first, the leftmost of equal keys. Returns the token count, ids in front.
///
/// A merge leaves its right slot [`NONE`] (no token id is: ids are below the
/// vocabulary size, a u32) and the gaps close once at the end, so nothing is
/// shifted per merge (and no `memmove`, 1.6 KB of a Cortex-M3 firmware, is linked).
pub(crate) fn merge_rescanning(ids: &mut [u32], pair: PairFn<'_>) -> usize {
    loop {
        let mut best: Option<(u32, u32, usize, usize)> = None;
        let mut left: Option<usize> = None;
        for right in 0..ids.len() {
            if ids[right] == NONE {
                continue;
            }
            if let Some(left) = left {
                if let Some((id, key)) = pair(ids[left], ids[right]) {
                    if best.is_none_or(|(k, ..)| key < k) {
                        best = Some((key, id, left, right));
                    }
                }
            }
            left = Some(right);
        }
        let Some((_, id, left, right)) = best else { break };
        ids[left] = id;
        ids[right] = NONE;
    }
    let mut n = 0;
    for i in 0..ids.len() {
        if ids[i] != NONE {
            ids[n] = ids[i];
            n += 1;
        }
    }
    n
}

/// Slots of `work` that [`merge_fast`] needs for `n` tokens (`None` on overflow).
pub(crate) fn merge_fast_work(n: usize) -> Option<usize> {
    n.checked_mul(4)?.checked_add(tree_len(n)?)
}

/// Merges `ids` in O(n log n), in the same order as [`merge_rescanning`]: the lowest
/// key first, the leftmost of equal keys. A token keeps the position it had before
/// merging, so "leftmost" is the smallest position. Returns the token count, ids in front.
///
/// `work` holds at least [`merge_fast_work`]`(n)` slots (n = `ids.len()` < u32::MAX,
/// `p` = tree leaves, a power of two ≥ n): `next`/`prev` n × position (NONE at the
/// ends), `merged` n × id of the pair starting there (NONE: no eligible pair), `key`
/// n × its key, `tree` p × winner position per node (1..p internal; leaf i is position
/// i). Dead slots of `ids` keep a stale id. With too little work it falls back to the rescan.
pub(crate) fn merge_fast(ids: &mut [u32], work: &mut [u32], pair: PairFn<'_>) -> usize {
    let n = ids.len();
    if n < 2 {
        return n;
    }
    let (Some(p), Some(need)) = (tree_len(n), merge_fast_work(n)) else { return merge_rescanning(ids, pair) };
    if need > work.len() || n >= NONE as usize {
        return merge_rescanning(ids, pair);
    }
    let (next, rest) = work.split_at_mut(n);
    let (prev, rest) = rest.split_at_mut(n);
    let (merged, rest) = rest.split_at_mut(n);
    let (key, rest) = rest.split_at_mut(n);
    let tree = &mut rest[..p];
    for i in 0..n {
        next[i] = if i + 1 < n { i as u32 + 1 } else { NONE };
        prev[i] = if i > 0 { i as u32 - 1 } else { NONE };
        (merged[i], key[i]) = match (i + 1 < n).then(|| pair(ids[i], ids[i + 1])).flatten() {
            Some(m) => m,
            None => (NONE, 0),
        };
    }
    // The better of two candidate positions: lower key, then smaller position.
    let better = |merged: &[u32], key: &[u32], a: u32, b: u32| -> u32 {
        let k = |i: u32| merged.get(i as usize).filter(|&&m| m != NONE).map(|_| key[i as usize]);
        match (k(a), k(b)) {
            (Some(ka), Some(kb)) => {
                if kb < ka || (kb == ka && b < a) {
                    b
                } else {
                    a
                }
            }
            (Some(_), None) => a,
            (None, Some(_)) => b,
            (None, None) => NONE,
        }
    };
    let child = |tree: &[u32], c: usize| if c >= p { (c - p) as u32 } else { tree[c] };
    for node in (1..p).rev() {
        tree[node] = better(merged, key, child(tree, 2 * node), child(tree, 2 * node + 1));
    }
    let update = |tree: &mut [u32], merged: &[u32], key: &[u32], leaf: u32| {
        let mut node = (p + leaf as usize) / 2;
        while node >= 1 {
            tree[node] = better(merged, key, child(tree, 2 * node), child(tree, 2 * node + 1));
            node /= 2;
        }
    };
    let mut count = n;
    loop {
        // n >= 2, so p >= 2 and tree[1] is the root: the best pair's position, or NONE.
        let best = tree[1];
        let Some(&m) = merged.get(best as usize) else { break };
        let (i, j) = (best as usize, next[best as usize] as usize);
        // Merge positions i and j (= next[i]) into i.
        ids[i] = m;
        let after = next[j];
        next[i] = after;
        if let Some(a) = prev.get_mut(after as usize) {
            *a = i as u32;
        }
        merged[j] = NONE;
        count -= 1;
        // The pairs that changed: (i, after) and (prev[i], i).
        let recompute = |merged: &mut [u32], key: &mut [u32], at: u32, right: u32| {
            let m = ids.get(right as usize).and_then(|&r| pair(ids[at as usize], r));
            (merged[at as usize], key[at as usize]) = m.unwrap_or((NONE, 0));
        };
        recompute(merged, key, i as u32, after);
        update(tree, merged, key, j as u32);
        update(tree, merged, key, i as u32);
        let before = prev[i];
        if before != NONE {
            recompute(merged, key, before, i as u32);
            update(tree, merged, key, before);
        }
    }
    // Compact the surviving tokens to the front (positions only grow, so in place is safe).
    let mut at = 0u32;
    for k in 0..count {
        ids[k] = ids[at as usize];
        at = next[at as usize];
    }
    count
}

/// Tokenizer kind word of a version 2 section: SentencePiece (llama2.c).
pub const KIND_SENTENCEPIECE: u32 = 0;
/// Tokenizer kind word of a version 2 section: byte-level BPE (GPT-2).
pub const KIND_BPE: u32 = 1;

/// The tokenizer stored in a model file, of either kind.
///
/// `encode`, `decode`, `min_tokens` and the slot counts work for both kinds, so
/// generation, evaluation, sessions and boards need not know which one a model has.
#[derive(Clone, Copy, Debug)]
pub enum Tokenizer<'a> {
    /// SentencePiece pieces with scores and byte fallback (llama2.c `tokenizer.bin`).
    SentencePiece(SpmTokenizer<'a>),
    /// Byte-level BPE with merge ranks (GPT-2, llama.cpp `LLAMA_VOCAB_TYPE_BPE`).
    Bpe(BpeTokenizer<'a>),
}

impl<'a> Tokenizer<'a> {
    /// Parses a version 2 tokenizer section: a u32 kind, then that kind's layout.
    /// `max_piece_len` bounds every piece; `bos_id`/`eos_id` come from the header
    /// (already checked against `vocab_size`). Errors name the first inconsistency.
    pub fn parse(
        section: &'a [u8],
        vocab_size: usize,
        max_piece_len: usize,
        bos_id: u32,
        eos_id: u32,
    ) -> Result<Tokenizer<'a>, FormatError> {
        let kind = read_u32(section, 0).ok_or(FormatError::TokenizerTables)?;
        let rest = &section[4..];
        match kind {
            KIND_SENTENCEPIECE => {
                SpmTokenizer::parse(rest, vocab_size, max_piece_len, bos_id, eos_id).map(Tokenizer::SentencePiece)
            }
            KIND_BPE => BpeTokenizer::parse(rest, vocab_size, max_piece_len, bos_id, eos_id).map(Tokenizer::Bpe),
            kind => Err(FormatError::TokenizerKind { kind }),
        }
    }

    /// Parses a version 1 section (SentencePiece layout, no kind word).
    pub fn parse_v1(
        section: &'a [u8],
        vocab_size: usize,
        max_piece_len: usize,
        bos_id: u32,
        eos_id: u32,
    ) -> Result<Tokenizer<'a>, FormatError> {
        SpmTokenizer::parse(section, vocab_size, max_piece_len, bos_id, eos_id).map(Tokenizer::SentencePiece)
    }

    /// The SentencePiece tokenizer, if that is the kind.
    pub fn as_sentencepiece(&self) -> Option<&SpmTokenizer<'a>> {
        match self {
            Tokenizer::SentencePiece(t) => Some(t),
            Tokenizer::Bpe(_) => None,
        }
    }

    /// The byte-level BPE tokenizer, if that is the kind.
    pub fn as_bpe(&self) -> Option<&BpeTokenizer<'a>> {
        match self {
            Tokenizer::SentencePiece(_) => None,
            Tokenizer::Bpe(t) => Some(t),
        }
    }

    /// Number of tokens.
    pub fn vocab_size(&self) -> usize {
        match self {
            Tokenizer::SentencePiece(t) => t.vocab_size(),
            Tokenizer::Bpe(t) => t.vocab_size(),
        }
    }

    /// Beginning-of-sequence id.
    pub fn bos_id(&self) -> u32 {
        match self {
            Tokenizer::SentencePiece(t) => t.bos_id(),
            Tokenizer::Bpe(t) => t.bos_id(),
        }
    }

    /// End-of-sequence id.
    pub fn eos_id(&self) -> u32 {
        match self {
            Tokenizer::SentencePiece(t) => t.eos_id(),
            Tokenizer::Bpe(t) => t.eos_id(),
        }
    }

    /// Whether `encode(.., bos = true, ..)` puts BOS first: always for SentencePiece,
    /// as the model file says for byte-level BPE (SmolLM2: no).
    pub fn adds_bos(&self) -> bool {
        match self {
            Tokenizer::SentencePiece(_) => true,
            Tokenizer::Bpe(t) => t.add_bos(),
        }
    }

    /// The raw piece bytes of `id` (byte-level BPE: the bytes, GPT-2's byte-to-unicode undone).
    pub fn piece(&self, id: u32) -> Option<&'a [u8]> {
        match self {
            Tokenizer::SentencePiece(t) => t.piece(id),
            Tokenizer::Bpe(t) => t.piece(id),
        }
    }

    /// Slots `encode` needs in its output slice for `text`, for either kind (an upper
    /// bound on the result: one per byte plus BOS, EOS and the dummy-prefix space).
    pub fn encode_capacity(text: &[u8]) -> usize {
        SpmTokenizer::encode_capacity(text)
    }

    /// Slots with which `encode` merges in O(n log n) rather than O(n²), for either kind.
    pub fn encode_workspace(text: &[u8]) -> usize {
        SpmTokenizer::encode_workspace(text)
    }

    /// A lower bound on the tokens `encode` returns for `text` (with BOS when
    /// `bos` and the model adds it), computed without encoding.
    pub fn min_tokens(&self, text: &[u8], bos: bool) -> usize {
        match self {
            Tokenizer::SentencePiece(t) => t.min_tokens(text, bos),
            Tokenizer::Bpe(t) => t.min_tokens(text, bos),
        }
    }

    /// Encodes `text` without matching control tokens in it (llama.cpp
    /// `parse_special = false`; user-defined tokens still match). `bos` asks for BOS
    /// (added when [`Tokenizer::adds_bos`]), `eos` appends EOS. Returns the token
    /// count; `out` needs [`Tokenizer::encode_capacity`] slots, and with
    /// [`Tokenizer::encode_workspace`] slots long texts encode fast.
    pub fn encode(&self, text: &[u8], bos: bool, eos: bool, out: &mut [u32]) -> Result<usize, TokenizerError> {
        self.encode_special(text, bos, eos, false, out)
    }

    /// [`Tokenizer::encode`], with `parse_special` choosing whether control tokens
    /// written in the text (e.g. `<|im_start|>`) become their ids, as llama.cpp's
    /// `parse_special`. The SentencePiece kind has no such tokens and ignores it.
    pub fn encode_special(
        &self,
        text: &[u8],
        bos: bool,
        eos: bool,
        parse_special: bool,
        out: &mut [u32],
    ) -> Result<usize, TokenizerError> {
        match self {
            Tokenizer::SentencePiece(t) => t.encode(text, bos, eos, out),
            Tokenizer::Bpe(t) => t.encode(text, bos, eos, parse_special, out),
        }
    }

    /// The bytes to print for `token` following `prev` (SentencePiece: llama2.c's
    /// rules; byte-level BPE: the piece's raw bytes, which may end inside a UTF-8
    /// character, so print through [`Utf8Stream`]).
    pub fn decode(&self, prev: u32, token: u32) -> &'a [u8] {
        match self {
            Tokenizer::SentencePiece(t) => t.decode(prev, token),
            Tokenizer::Bpe(t) => t.decode(token),
        }
    }
}

/// Leaves of the merge tree for `n` tokens: the next power of two (at least 1).
fn tree_len(n: usize) -> Option<usize> {
    n.max(1).checked_next_power_of_two()
}

/// Reassembles UTF-8 characters split across tokens so a sink prints them whole.
///
/// Complete characters pass through; a sequence that cannot be valid UTF-8 is
/// replaced by U+FFFD, so the output is always valid UTF-8. Single-byte ASCII
/// control pieces other than white space are dropped, as llama2.c does.
#[derive(Clone, Copy, Debug, Default)]
pub struct Utf8Stream {
    pending: [u8; 4],
    len: usize,
}

const REPLACEMENT: &[u8] = "\u{FFFD}".as_bytes();

/// Length of the UTF-8 sequence a lead byte starts, or 0 if it cannot start one.
fn sequence_len(lead: u8) -> usize {
    match lead {
        0x00..=0x7F => 1,
        0xC2..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF4 => 4,
        _ => 0,
    }
}

impl Utf8Stream {
    /// A stream with nothing pending.
    pub const fn new() -> Self {
        Utf8Stream { pending: [0; 4], len: 0 }
    }

    /// Feeds the bytes of one decoded piece; `emit` receives complete UTF-8 text.
    pub fn push(&mut self, piece: &[u8], mut emit: impl FnMut(&str)) {
        // llama2.c's safe_printf: a lone unprintable ASCII byte is not printed.
        if let [b] = piece {
            if b.is_ascii_control() && !b.is_ascii_whitespace() {
                return;
            }
        }
        for &b in piece {
            self.push_byte(b, &mut emit);
        }
    }

    fn push_byte(&mut self, b: u8, emit: &mut impl FnMut(&str)) {
        if self.len > 0 && b & 0xC0 != 0x80 {
            // A new lead byte arrived before the pending character was complete.
            self.len = 0;
            emit_bytes(REPLACEMENT, emit);
        }
        if self.len == 0 {
            match sequence_len(b) {
                1 => return emit_bytes(&[b], emit),
                0 => return emit_bytes(REPLACEMENT, emit),
                _ => {}
            }
        }
        self.pending[self.len] = b;
        self.len += 1;
        let want = sequence_len(self.pending[0]);
        if self.len == want {
            let bytes = self.pending;
            self.len = 0;
            match core::str::from_utf8(&bytes[..want]) {
                Ok(s) => emit(s),
                Err(_) => emit_bytes(REPLACEMENT, emit),
            }
        }
    }

    /// Flushes an incomplete trailing character as U+FFFD.
    pub fn finish(&mut self, mut emit: impl FnMut(&str)) {
        if self.len > 0 {
            self.len = 0;
            emit_bytes(REPLACEMENT, &mut emit);
        }
    }
}

fn emit_bytes(bytes: &[u8], emit: &mut impl FnMut(&str)) {
    if let Ok(s) = core::str::from_utf8(bytes) {
        emit(s);
    }
}
