//! A small GGUF writer (ggml `docs/gguf.md`, v3, little-endian) for tests and
//! fuzz seeds: files are built field by field, so a test can write a valid
//! file and then corrupt exactly one field of it.
//!
//! Layout written: magic, version (u32), tensor count (u64), metadata count
//! (u64), the metadata entries (key string, value type u32, value), the tensor
//! infos (name string, n_dims u32, n_dims × u64 dimensions, type u32, offset
//! u64), zero padding to the alignment, then the data section as given.

/// GGUF metadata value type ids.
pub mod ty {
    pub const U8: u32 = 0;
    pub const I8: u32 = 1;
    pub const U16: u32 = 2;
    pub const I16: u32 = 3;
    pub const U32: u32 = 4;
    pub const I32: u32 = 5;
    pub const F32: u32 = 6;
    pub const BOOL: u32 = 7;
    pub const STRING: u32 = 8;
    pub const ARRAY: u32 = 9;
    pub const U64: u32 = 10;
    pub const I64: u32 = 11;
    pub const F64: u32 = 12;
}

/// A GGUF string: u64 length, then the bytes.
pub fn gguf_str(s: &[u8]) -> Vec<u8> {
    let mut out = (s.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(s);
    out
}

/// A GGUF file under construction.
#[derive(Clone, Debug)]
pub struct GgufWriter {
    /// Version field (3 unless changed).
    pub version: u32,
    /// Tensor count written instead of the real one, when set.
    pub tensor_count: Option<u64>,
    /// Metadata count written instead of the real one, when set.
    pub kv_count: Option<u64>,
    /// Padding of the data section start (32, GGUF's default, unless changed).
    pub alignment: usize,
    /// The data section, written after the padding.
    pub data: Vec<u8>,
    kv: Vec<u8>,
    n_kv: u64,
    infos: Vec<u8>,
    n_tensors: u64,
}

impl Default for GgufWriter {
    fn default() -> Self {
        GgufWriter {
            version: 3,
            tensor_count: None,
            kv_count: None,
            alignment: 32,
            data: Vec::new(),
            kv: Vec::new(),
            n_kv: 0,
            infos: Vec::new(),
            n_tensors: 0,
        }
    }
}

impl GgufWriter {
    /// An entry with a raw key (length-prefixed here), value type and encoded value.
    pub fn kv_raw(&mut self, key: &[u8], value_type: u32, value: &[u8]) -> &mut Self {
        self.kv.extend(gguf_str(key));
        self.kv.extend(value_type.to_le_bytes());
        self.kv.extend_from_slice(value);
        self.n_kv += 1;
        self
    }
    /// A uint32 entry.
    pub fn kv_u32(&mut self, key: &str, v: u32) -> &mut Self {
        self.kv_raw(key.as_bytes(), ty::U32, &v.to_le_bytes())
    }
    /// A string entry.
    pub fn kv_str(&mut self, key: &str, v: &str) -> &mut Self {
        self.kv_raw(key.as_bytes(), ty::STRING, &gguf_str(v.as_bytes()))
    }
    /// An array entry: element type, element count and the encoded elements as given.
    pub fn kv_array(&mut self, key: &str, elem_type: u32, count: u64, elems: &[u8]) -> &mut Self {
        let mut v = elem_type.to_le_bytes().to_vec();
        v.extend(count.to_le_bytes());
        v.extend_from_slice(elems);
        self.kv_raw(key.as_bytes(), ty::ARRAY, &v)
    }
    /// A tensor info with raw name bytes (length-prefixed here); `offset` is relative to the data section.
    pub fn tensor_raw(&mut self, name: &[u8], n_dims: u32, dims: &[u64], tensor_type: u32, offset: u64) -> &mut Self {
        self.infos.extend(gguf_str(name));
        self.infos.extend(n_dims.to_le_bytes());
        for d in dims {
            self.infos.extend(d.to_le_bytes());
        }
        self.infos.extend(tensor_type.to_le_bytes());
        self.infos.extend(offset.to_le_bytes());
        self.n_tensors += 1;
        self
    }
    /// A tensor info (`dims` fastest-varying first, as ggml's `ne`).
    pub fn tensor(&mut self, name: &str, dims: &[u64], tensor_type: u32, offset: u64) -> &mut Self {
        self.tensor_raw(name.as_bytes(), dims.len() as u32, dims, tensor_type, offset)
    }
    /// The file's bytes.
    pub fn build(&self) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend(self.version.to_le_bytes());
        out.extend(self.tensor_count.unwrap_or(self.n_tensors).to_le_bytes());
        out.extend(self.kv_count.unwrap_or(self.n_kv).to_le_bytes());
        out.extend_from_slice(&self.kv);
        out.extend_from_slice(&self.infos);
        out.resize(out.len().div_ceil(self.alignment.max(1)) * self.alignment.max(1), 0);
        out.extend_from_slice(&self.data);
        out
    }
}

/// The values of [`valid_tensors`]' F32 tensor `a` (`ne = [4, 2]`).
pub fn a_values() -> Vec<f32> {
    (0..8).map(|i| i as f32 * 0.5 - 1.0).collect()
}

/// The values of [`valid_tensors`]' Q8_0 tensor `b` (`ne = [32]`): 0.25 × (i − 16).
pub fn b_values() -> Vec<f32> {
    (0..32).map(|i| 0.25 * (i as f32 - 16.0)).collect()
}

/// A valid file's metadata (architecture, uint32 alignment 32, a string array, a
/// u8 array) without tensors: tests add their own tensor infos and data.
pub fn valid_metadata() -> GgufWriter {
    let mut w = GgufWriter::default();
    w.kv_str("general.architecture", "llama").kv_u32("general.alignment", 32);
    let tokens: Vec<u8> = [&b"<s>"[..], b"a", b"b"].iter().flat_map(|t| gguf_str(t)).collect();
    w.kv_array("tokenizer.ggml.tokens", ty::STRING, 3, &tokens);
    w.kv_array("test.bytes", ty::U8, 4, &[1, 2, 3, 4]);
    w
}

/// A complete valid file: [`valid_metadata`], an F32 tensor `a` (`ne = [4, 2]`, 32
/// bytes at offset 0) and a Q8_0 tensor `b` (`ne = [32]`, one 34-byte block at offset 32).
pub fn valid_tensors() -> GgufWriter {
    let mut w = valid_metadata();
    w.tensor("a", &[4, 2], 0, 0).tensor("b", &[32], 8, 32);
    w.data = a_values().iter().flat_map(|v| v.to_le_bytes()).collect();
    w.data.extend(half::f16::from_f32(0.25).to_le_bytes());
    w.data.extend((0..32).map(|i| (i as i8 - 16) as u8));
    w
}
