//! Byte-level BPE tokenizer (GPT-2; llama.cpp `LLAMA_VOCAB_TYPE_BPE`), read in
//! place from the model file, encoding and decoding without allocation.
//!
//! Encoding follows llama.cpp's `llm_tokenizer_bpe` (`src/llama-vocab.cpp`):
//!
//! 1. Special tokens are carved out of the text first (`tokenizer_st_partition`):
//!    the special-token list, sorted by piece length (longest first, then id), is
//!    applied one token at a time, splitting every remaining raw fragment at that
//!    token's non-overlapping occurrences. User-defined tokens (type 4) always
//!    match; control and unknown tokens (types 3, 2) only with `parse_special`.
//! 2. Each raw fragment is split into words by the pre-tokenizer: `gpt-2` is
//!    GPT-2's regex `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
//!    as llama.cpp's hand-written `unicode_regex_split_custom_gpt2` scans it;
//!    `smollm` (llama.cpp `LLAMA_VOCAB_PRE_TYPE_SMOLLM`) first isolates every
//!    `\p{N}` code point, then applies the same GPT-2 scan to each piece.
//! 3. Each word starts as one token per byte and merges the adjacent pair with
//!    the lowest merge rank, the leftmost of equal ranks, until no pair has a
//!    rank (`llm_tokenizer_bpe_session`).
//!
//! Unicode classes (`\p{L}`, `\p{N}`) come from the `unicode-general-category`
//! crate (Unicode 16.0); `\s` is the White_Space property (`char::is_whitespace`),
//! as in llama.cpp's tables. Bytes that are not valid UTF-8 are kept as they are,
//! each a one-byte code point of class "other" (llama.cpp replaces them with
//! U+FFFD first, so such text may tokenize differently there).
//!
//! Decoding a token gives its raw piece bytes (GPT-2's byte-to-unicode mapping
//! is undone at convert time; control and user-defined tokens keep their text).
//!
//! Section layout after the kind word (all u32 little-endian unless marked,
//! offsets relative to the start of this layout):
//!
//! ```text
//! 0     vocab_size n
//! 4     merge count m
//! 8     special count s
//! 12    pre-tokenizer id (0 = gpt-2, 1 = smollm)
//! 16    flags (bit 0: add BOS; other bits 0)
//! 20    unknown-token id   (u32::MAX: none)
//! 24    padding-token id   (u32::MAX: none)
//! 28    end-of-turn id     (u32::MAX: none)
//! 32    blob length B
//! 36    (n+1) × u32  piece start offsets into the blob (first 0, last B, non-decreasing by ≥ 1)
//! ..    256 × u32    token id of each byte's one-byte piece (u32::MAX: none; such a
//!                    byte stays a placeholder while its word merges, then is dropped,
//!                    as llama.cpp drops a symbol it finds no token for)
//! ..    m × 4 u32    merges (left id, right id, rank, result id), sorted by (left, right),
//!                    result piece = left piece ++ right piece, rank < m
//! ..    s × u32      special tokens (every token of type 2, 3 or 4), sorted by
//!                    (piece length descending, id ascending)
//! ..    n × u8       ggml token types (0 undefined, 1 normal, 2 unknown, 3 control,
//!                    4 user-defined, 5 unused, 6 byte)
//! ..    B bytes      piece bytes, concatenated
//! ```

use core::cmp::Ordering;

use unicode_general_category::{get_general_category, GeneralCategory};

use crate::error::{FormatError, TokenizerError};
use crate::format::read_u32;
use crate::tokenizer::{merge_fast, merge_fast_work, merge_rescanning};

/// ggml token type: normal token.
pub const TYPE_NORMAL: u8 = 1;
/// ggml token type: unknown token.
pub const TYPE_UNKNOWN: u8 = 2;
/// ggml token type: control token (matched in text only with `parse_special`).
pub const TYPE_CONTROL: u8 = 3;
/// ggml token type: user-defined token (always matched in text).
pub const TYPE_USER_DEFINED: u8 = 4;
/// Largest ggml token type (6 = byte).
pub const TYPE_MAX: u8 = 6;

/// Flag bit of the section: BOS is added when the caller asks for it.
pub const FLAG_ADD_BOS: u32 = 1;

/// Bytes of the fixed fields before the offsets table.
const FIXED: usize = 36;
/// "No such token" in the optional id fields and the merge workspace.
const NONE: u32 = u32::MAX;
/// Marker of a byte not covered by a special token.
const RAW: u32 = u32::MAX;
/// Marker of a byte inside a special token after its first byte.
const CONT: u32 = u32::MAX - 1;

/// How text is split into words before merging.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum PreTokenizer {
    /// GPT-2's regex (llama.cpp `LLAMA_VOCAB_PRE_TYPE_GPT2`, `tokenizer.ggml.pre = "gpt-2"`).
    Gpt2,
    /// Every `\p{N}` alone, then GPT-2's regex (llama.cpp `LLAMA_VOCAB_PRE_TYPE_SMOLLM`, `"smollm"`).
    Smollm,
}

impl PreTokenizer {
    /// The id stored in the section.
    pub fn id(self) -> u32 {
        match self {
            PreTokenizer::Gpt2 => 0,
            PreTokenizer::Smollm => 1,
        }
    }

    /// The pre-tokenizer with a stored id.
    pub fn from_id(id: u32) -> Option<PreTokenizer> {
        match id {
            0 => Some(PreTokenizer::Gpt2),
            1 => Some(PreTokenizer::Smollm),
            _ => None,
        }
    }

    /// The GGUF `tokenizer.ggml.pre` name.
    pub fn name(self) -> &'static str {
        match self {
            PreTokenizer::Gpt2 => "gpt-2",
            PreTokenizer::Smollm => "smollm",
        }
    }

    /// The pre-tokenizer of a GGUF `tokenizer.ggml.pre` name; `None` for any other name.
    pub fn from_name(name: &str) -> Option<PreTokenizer> {
        [PreTokenizer::Gpt2, PreTokenizer::Smollm].into_iter().find(|p| p.name() == name)
    }

    /// End (exclusive byte index) of the word that starts at `pos` in `text[..end]`.
    fn word_end(self, text: &[u8], pos: usize, end: usize) -> usize {
        let seg_end = match self {
            PreTokenizer::Gpt2 => end,
            PreTokenizer::Smollm => {
                // `\p{N}` split: a number code point is a piece alone; others run to the next one.
                match char_at(text, pos, end) {
                    Some((Class::Number, len)) => return pos + len,
                    _ => {
                        let mut p = pos;
                        while let Some((class, len)) = char_at(text, p, end) {
                            if class == Class::Number {
                                break;
                            }
                            p += len;
                        }
                        p
                    }
                }
            }
        };
        gpt2_word_end(text, pos, seg_end)
    }
}

/// The regex classes GPT-2's pattern distinguishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    /// `\p{L}`.
    Letter,
    /// `\p{N}`.
    Number,
    /// `\s` (White_Space).
    Space,
    /// Anything else (including bytes that are not valid UTF-8).
    Other,
}

/// The class and byte length of the code point at `pos`, or `None` at or past `end`.
fn char_at(text: &[u8], pos: usize, end: usize) -> Option<(Class, usize)> {
    if pos >= end {
        return None;
    }
    let lead = *text.get(pos)?;
    let len = match lead {
        0x00..=0x7F => 1,
        0xC2..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF4 => 4,
        _ => return Some((Class::Other, 1)),
    };
    let bytes = match pos.checked_add(len).filter(|&e| e <= end).and_then(|e| text.get(pos..e)) {
        Some(b) => b,
        None => return Some((Class::Other, 1)),
    };
    let Some(c) = core::str::from_utf8(bytes).ok().and_then(|s| s.chars().next()) else {
        return Some((Class::Other, 1));
    };
    Some((classify(c), len))
}

/// The GPT-2 class of a code point.
fn classify(c: char) -> Class {
    use GeneralCategory as G;
    if c.is_whitespace() {
        return Class::Space;
    }
    match get_general_category(c) {
        G::UppercaseLetter | G::LowercaseLetter | G::TitlecaseLetter | G::ModifierLetter | G::OtherLetter => {
            Class::Letter
        }
        G::DecimalNumber | G::LetterNumber | G::OtherNumber => Class::Number,
        _ => Class::Other,
    }
}

/// End of the GPT-2 regex match at `pos` in `text[..end]` (`pos < end`), scanned
/// as llama.cpp's `unicode_regex_split_custom_gpt2` does.
fn gpt2_word_end(text: &[u8], pos: usize, end: usize) -> usize {
    let Some((class, len)) = char_at(text, pos, end) else { return end };
    let byte = |p: usize| if p < end { text.get(p).copied() } else { None };
    // 's|'t|'re|'ve|'m|'ll|'d
    if byte(pos) == Some(b'\'') {
        match byte(pos + 1) {
            Some(b's' | b't' | b'm' | b'd') => return pos + 2,
            Some(c1 @ (b'r' | b'v' | b'l')) => {
                let want = if c1 == b'l' { b'l' } else { b'e' };
                if byte(pos + 2) == Some(want) {
                    return pos + 3;
                }
            }
            _ => {}
        }
    }
    // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`: one optional space, then a run of one class.
    let space = byte(pos) == Some(b' ');
    let first = if space { char_at(text, pos + 1, end).map(|(c, _)| c) } else { Some(class) };
    if let Some(run) = first.filter(|&c| c != Class::Space) {
        let mut p = pos + usize::from(space);
        while let Some((c, l)) = char_at(text, p, end) {
            if c != run {
                break;
            }
            p += l;
        }
        return p;
    }
    // `\s+(?!\S)` leaves the last white space for the next word when more text follows; `\s+`.
    let (mut p, mut count, mut last) = (pos, 0usize, pos);
    while let Some((Class::Space, l)) = char_at(text, p, end) {
        last = p;
        p += l;
        count += 1;
    }
    if count > 1 && p < end {
        return last;
    }
    if count > 0 {
        return p;
    }
    pos + len
}

/// A validated view of a byte-level BPE tokenizer section.
#[derive(Clone, Copy, Debug)]
pub struct BpeTokenizer<'a> {
    /// (n+1) × u32 blob offsets.
    offsets: &'a [u8],
    /// 256 × u32 byte token ids.
    byte_ids: &'a [u8],
    /// m × (left, right, rank, result).
    merges: &'a [u8],
    /// s × u32 special ids in matching order.
    specials: &'a [u8],
    /// n × u8 token types.
    types: &'a [u8],
    /// Concatenated piece bytes.
    blob: &'a [u8],
    vocab_size: usize,
    merge_count: usize,
    special_count: usize,
    pre: PreTokenizer,
    add_bos: bool,
    bos_id: u32,
    eos_id: u32,
    unk_id: Option<u32>,
    pad_id: Option<u32>,
    eot_id: Option<u32>,
    /// Length in bytes of the longest piece.
    longest_piece: usize,
    /// Some special token is user-defined (matched even without `parse_special`).
    any_user_defined: bool,
    /// Some special token is control or unknown (matched with `parse_special`).
    any_control: bool,
}

/// A sub-slice `[at, at + len)` or the tables error.
fn take(section: &[u8], at: usize, len: usize) -> Result<&[u8], FormatError> {
    at.checked_add(len).and_then(|end| section.get(at..end)).ok_or(FormatError::TokenizerTables)
}

impl<'a> BpeTokenizer<'a> {
    /// Checks the layout (see the module docs) exactly: sizes, offsets, types,
    /// byte table, merges (in range, strictly sorted, result = concatenation,
    /// rank < m), the special list (exactly the tokens of types 2–4, in order),
    /// flags and optional ids. `bos_id` and `eos_id` are checked by the header.
    pub fn parse(
        section: &'a [u8],
        vocab_size: usize,
        max_piece_len: usize,
        bos_id: u32,
        eos_id: u32,
    ) -> Result<BpeTokenizer<'a>, FormatError> {
        let bad = FormatError::TokenizerTables;
        let word = |at: usize| read_u32(section, at).ok_or(bad);
        let n = word(0)? as usize;
        let m = word(4)? as usize;
        let s = word(8)? as usize;
        if n != vocab_size || bos_id as usize >= n || eos_id as usize >= n {
            return Err(bad);
        }
        let pre_id = word(12)?;
        let pre = PreTokenizer::from_id(pre_id).ok_or(FormatError::TokenizerPreTokenizer { id: pre_id })?;
        let flags = word(16)?;
        if flags & !FLAG_ADD_BOS != 0 {
            return Err(FormatError::TokenizerFlags { flags });
        }
        let optional = |at: usize| -> Result<Option<u32>, FormatError> {
            match word(at)? {
                NONE => Ok(None),
                id if (id as usize) < n => Ok(Some(id)),
                id => Err(FormatError::TokenizerSpecialId { id }),
            }
        };
        let (unk_id, pad_id, eot_id) = (optional(20)?, optional(24)?, optional(28)?);
        let blob_len = word(32)? as usize;
        let size = |count: usize, each: usize| count.checked_mul(each).ok_or(bad);
        let offsets_at = FIXED;
        let bytes_at = offsets_at.checked_add(size(n.checked_add(1).ok_or(bad)?, 4)?).ok_or(bad)?;
        let merges_at = bytes_at + 256 * 4;
        let specials_at = merges_at.checked_add(size(m, 16)?).ok_or(bad)?;
        let types_at = specials_at.checked_add(size(s, 4)?).ok_or(bad)?;
        let blob_at = types_at.checked_add(n).ok_or(bad)?;
        if blob_at.checked_add(blob_len) != Some(section.len()) {
            return Err(bad);
        }
        let mut t = BpeTokenizer {
            offsets: take(section, offsets_at, (n + 1) * 4)?,
            byte_ids: take(section, bytes_at, 256 * 4)?,
            merges: take(section, merges_at, m * 16)?,
            specials: take(section, specials_at, s * 4)?,
            types: take(section, types_at, n)?,
            blob: take(section, blob_at, blob_len)?,
            vocab_size: n,
            merge_count: m,
            special_count: s,
            pre,
            add_bos: flags & FLAG_ADD_BOS != 0,
            bos_id,
            eos_id,
            unk_id,
            pad_id,
            eot_id,
            longest_piece: 0,
            any_user_defined: false,
            any_control: false,
        };
        // Offsets start at 0, end at the blob length; pieces are 1..=max bytes.
        if read_u32(t.offsets, 0) != Some(0) || read_u32(t.offsets, n * 4) != Some(blob_len as u32) {
            return Err(bad);
        }
        let mut specials_by_type = 0usize;
        for id in 0..n {
            let start = read_u32(t.offsets, id * 4).ok_or(bad)? as usize;
            let stop = read_u32(t.offsets, id * 4 + 4).ok_or(bad)? as usize;
            if stop <= start || stop - start > max_piece_len || stop > blob_len {
                return Err(FormatError::TokenizerPiece { id: id as u32 });
            }
            t.longest_piece = t.longest_piece.max(stop - start);
            let ty = t.types[id];
            if ty > TYPE_MAX {
                return Err(FormatError::TokenizerTokenType { id: id as u32, ty });
            }
            if is_special_type(ty) {
                specials_by_type += 1;
            }
        }
        for b in 0..=255u8 {
            let id = read_u32(t.byte_ids, usize::from(b) * 4).ok_or(bad)?;
            if id != NONE && t.piece(id) != Some(&[b][..]) {
                return Err(FormatError::TokenizerByteToken { byte: b });
            }
        }
        let mut prev: Option<(u32, u32)> = None;
        for index in 0..m {
            let err = FormatError::TokenizerMerge { index: index as u32 };
            let (left, right, rank, result) = t.merge(index).ok_or(err)?;
            if prev.is_some_and(|p| p >= (left, right)) || rank as usize >= m {
                return Err(err);
            }
            prev = Some((left, right));
            let (a, b, r) = (t.piece(left).ok_or(err)?, t.piece(right).ok_or(err)?, t.piece(result).ok_or(err)?);
            if r.len() != a.len() + b.len() || &r[..a.len()] != a || &r[a.len()..] != b {
                return Err(err);
            }
        }
        // The list holds distinct tokens of special types in matching order, and all of them.
        if s != specials_by_type {
            return Err(FormatError::TokenizerSpecial { index: s.min(specials_by_type) as u32 });
        }
        let mut prev: Option<(usize, u32)> = None;
        for index in 0..s {
            let err = FormatError::TokenizerSpecial { index: index as u32 };
            let id = read_u32(t.specials, index * 4).ok_or(err)?;
            let len = t.piece(id).ok_or(err)?.len();
            let ty = t.types[id as usize];
            if !is_special_type(ty) {
                return Err(err);
            }
            // Longer pieces first, then smaller ids: strictly increasing (reverse length, id).
            if prev.is_some_and(|(pl, pid)| (usize::MAX - pl, pid) >= (usize::MAX - len, id)) {
                return Err(err);
            }
            prev = Some((len, id));
            if ty == TYPE_USER_DEFINED {
                t.any_user_defined = true;
            } else {
                t.any_control = true;
            }
        }
        Ok(t)
    }

    /// Number of tokens.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// Number of merge rules.
    pub fn merge_count(&self) -> usize {
        self.merge_count
    }

    /// Number of special tokens (types 2, 3 and 4).
    pub fn special_count(&self) -> usize {
        self.special_count
    }

    /// The pre-tokenizer.
    pub fn pre_tokenizer(&self) -> PreTokenizer {
        self.pre
    }

    /// Whether BOS is added when the caller asks for it.
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    /// Beginning-of-sequence id.
    pub fn bos_id(&self) -> u32 {
        self.bos_id
    }

    /// End-of-sequence id.
    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }

    /// Unknown-token id, if the vocabulary has one.
    pub fn unk_id(&self) -> Option<u32> {
        self.unk_id
    }

    /// Padding-token id, if the vocabulary has one.
    pub fn pad_id(&self) -> Option<u32> {
        self.pad_id
    }

    /// End-of-turn id (e.g. `<|im_end|>`), if the vocabulary has one.
    pub fn eot_id(&self) -> Option<u32> {
        self.eot_id
    }

    /// The ggml token type of `id` (1 normal, 3 control, 4 user-defined, ...).
    pub fn token_type(&self, id: u32) -> Option<u8> {
        self.types.get(id as usize).copied()
    }

    /// The raw piece bytes of `id`.
    pub fn piece(&self, id: u32) -> Option<&'a [u8]> {
        let i = id as usize;
        if i >= self.vocab_size {
            return None;
        }
        let start = read_u32(self.offsets, i * 4)? as usize;
        let stop = read_u32(self.offsets, i.checked_add(1)? * 4)? as usize;
        self.blob.get(start..stop)
    }

    /// Merge `index` of the table: (left, right, rank, result).
    fn merge(&self, index: usize) -> Option<(u32, u32, u32, u32)> {
        let at = index.checked_mul(16)?;
        Some((
            read_u32(self.merges, at)?,
            read_u32(self.merges, at + 4)?,
            read_u32(self.merges, at + 8)?,
            read_u32(self.merges, at + 12)?,
        ))
    }

    /// The merge of `left` followed by `right`: (result id, rank), by binary search.
    pub fn merge_of(&self, left: u32, right: u32) -> Option<(u32, u32)> {
        let (mut lo, mut hi) = (0usize, self.merge_count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let (l, r, rank, result) = self.merge(mid)?;
            match (l, r).cmp(&(left, right)) {
                Ordering::Less => lo = mid + 1,
                Ordering::Greater => hi = mid,
                Ordering::Equal => return Some((result, rank)),
            }
        }
        None
    }

    /// The merge table in stored order: (left, right, rank, result).
    pub fn merges(&self) -> impl Iterator<Item = (u32, u32, u32, u32)> + '_ {
        (0..self.merge_count).filter_map(|i| self.merge(i))
    }

    /// The token of the one-byte piece `b`, if the vocabulary has one.
    pub fn byte_id(&self, b: u8) -> Option<u32> {
        read_u32(self.byte_ids, usize::from(b) * 4).filter(|&id| id != NONE)
    }

    /// A lower bound on the tokens `encode` returns for `text` (BOS counted when
    /// `bos` and the model adds it): each token covers at most the longest piece.
    pub fn min_tokens(&self, text: &[u8], bos: bool) -> usize {
        text.len().div_ceil(self.longest_piece.max(1)) + usize::from(bos && self.add_bos)
    }

    /// Encodes `text` (see the module docs): BOS first when `bos` and the model adds
    /// BOS, EOS last when `eos`; control tokens in the text match only with
    /// `parse_special`. Returns the token count.
    ///
    /// `out` needs `text.len()` + BOS + EOS slots (`Tokenizer::encode_capacity` is
    /// enough): the byte markers of the special-token split and the merges of each
    /// word live there. Slots beyond that are merge workspace: with 4·w + 2·w more
    /// (w = the longest word; `Tokenizer::encode_workspace` is enough) each word
    /// merges in O(w log w), otherwise in O(w²).
    pub fn encode(
        &self,
        text: &[u8],
        bos: bool,
        eos: bool,
        parse_special: bool,
        out: &mut [u32],
    ) -> Result<usize, TokenizerError> {
        let b = usize::from(bos && self.add_bos);
        let e = usize::from(eos);
        let n = text.len();
        let needed = b + n + e;
        if needed > out.len() {
            return Err(TokenizerError::OutputTooSmall { needed, given: out.len() });
        }
        let (head, work) = out.split_at_mut(needed);
        if b == 1 {
            head[0] = self.bos_id;
        }
        let body = &mut head[b..b + n];
        let matching = self.any_user_defined || (parse_special && self.any_control);
        if matching {
            self.mark_specials(text, parse_special, body);
        }
        // Invariant: count ≤ pos (every token covers at least one byte), so tokens
        // written at body[count..] never overwrite markers not yet read.
        let (mut count, mut pos) = (0usize, 0usize);
        while pos < n {
            if matching && body[pos] != RAW {
                // A special token starts here (parse wrote its list index).
                let id = read_u32(self.specials, body[pos] as usize * 4).unwrap_or(self.eos_id);
                let len = self.piece(id).map_or(1, <[u8]>::len).max(1);
                body[count] = id;
                count += 1;
                pos += len;
                continue;
            }
            let mut frag_end = n;
            if matching {
                frag_end = pos;
                while frag_end < n && body[frag_end] == RAW {
                    frag_end += 1;
                }
            }
            while pos < frag_end {
                let word_end = self.pre.word_end(text, pos, frag_end).clamp(pos + 1, frag_end);
                let word = &text[pos..word_end];
                let ids = &mut body[count..count + word.len()];
                for (slot, &byte) in ids.iter_mut().zip(word) {
                    // A byte without a token is a placeholder no merge involves.
                    *slot = self.byte_id(byte).unwrap_or(NONE);
                }
                let pair = |l: u32, r: u32| self.merge_of(l, r);
                let merged = match merge_fast_work(ids.len()) {
                    Some(w) if w <= work.len() => merge_fast(ids, work, pair),
                    _ => merge_rescanning(ids, pair),
                };
                // Drop the placeholders, keeping the order.
                let mut kept = 0;
                for k in 0..merged {
                    if ids[k] != NONE {
                        ids[kept] = ids[k];
                        kept += 1;
                    }
                }
                count += kept;
                pos = word_end;
            }
        }
        let mut total = b + count;
        if eos {
            head[total] = self.eos_id;
            total += 1;
        }
        Ok(total)
    }

    /// Writes into `marks[i]` the special-list index of the token starting at byte
    /// i, [`CONT`] inside it, [`RAW`] elsewhere, applying the list in order as
    /// llama.cpp's `tokenizer_st_partition` does.
    fn mark_specials(&self, text: &[u8], parse_special: bool, marks: &mut [u32]) {
        marks.fill(RAW);
        for k in 0..self.special_count {
            let Some(id) = read_u32(self.specials, k * 4) else { continue };
            let ty = self.types.get(id as usize).copied().unwrap_or(0);
            if !parse_special && ty != TYPE_USER_DEFINED {
                continue;
            }
            let Some(piece) = self.piece(id) else { continue };
            let len = piece.len();
            let mut i = 0usize;
            while len > 0 && i + len <= text.len() {
                if &text[i..i + len] == piece && marks[i..i + len].iter().all(|&m| m == RAW) {
                    marks[i] = k as u32;
                    marks[i + 1..i + len].fill(CONT);
                    i += len;
                } else {
                    i += 1;
                }
            }
        }
    }

    /// The bytes of `token`: its raw piece (empty for an out-of-range id). A piece
    /// may end inside a UTF-8 character; `Utf8Stream` reassembles them.
    pub fn decode(&self, token: u32) -> &'a [u8] {
        self.piece(token).unwrap_or(&[])
    }
}

/// Types matched in text by the special-token split: unknown, control, user-defined.
fn is_special_type(ty: u8) -> bool {
    matches!(ty, TYPE_UNKNOWN | TYPE_CONTROL | TYPE_USER_DEFINED)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Splits with the pre-tokenizer alone.
    fn words(pre: PreTokenizer, text: &str) -> std::vec::Vec<&str> {
        let b = text.as_bytes();
        let mut out = std::vec::Vec::new();
        let mut pos = 0;
        while pos < b.len() {
            let end = pre.word_end(b, pos, b.len());
            out.push(&text[pos..end]);
            pos = end;
        }
        out
    }

    #[test]
    fn gpt2_scan_matches_the_regex() {
        let g = PreTokenizer::Gpt2;
        assert_eq!(words(g, "Hello, world!"), ["Hello", ",", " world", "!"]);
        assert_eq!(words(g, "I'm here. You're"), ["I", "'m", " here", ".", " You", "'re"]);
        assert_eq!(words(g, "a  b   "), ["a", " ", " b", "   "]);
        assert_eq!(words(g, "x\n\nY"), ["x", "\n", "\n", "Y"]);
        assert_eq!(words(g, "12 345"), ["12", " 345"]);
        assert_eq!(words(g, "naïve 日本語 🙂"), ["naïve", " 日本語", " 🙂"]);
    }

    #[test]
    fn smollm_isolates_every_digit() {
        assert_eq!(words(PreTokenizer::Smollm, "ab 123 x3"), ["ab", " ", "1", "2", "3", " x", "3"]);
    }

    #[test]
    fn invalid_utf8_is_one_byte_of_class_other() {
        let t = b"a\xff\xfeb";
        assert_eq!(char_at(t, 1, t.len()), Some((Class::Other, 1)));
        assert_eq!(PreTokenizer::Gpt2.word_end(t, 1, t.len()), 3);
    }
}
