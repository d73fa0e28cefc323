//! Opening model files as 4-byte aligned bytes and parsing them with context.
//!
//! A model file is memory-mapped read-only ([`memmap2`], `mmap(2)` with
//! `PROT_READ` and `MAP_PRIVATE`), not read into the heap: the kernel pages the
//! weights in from the page cache as the forward pass touches them, so a run's
//! resident memory is about the file once (shared with other processes mapping
//! it) plus the session arena, instead of the file twice while it is copied. A
//! mapping starts on a page boundary, so the bytes are 4-byte aligned as
//! [`Model::parse`] requires.
//!
//! The file is checked before it is mapped as [`crate::io::open`] checks any
//! input: devices and FIFOs are refused with one line, and so are files over
//! [`crate::io::MODEL`]'s limit. Empty files (and regular files that report a
//! length of 0, such as those in /proc) and files the file system cannot map
//! are read and copied instead.
//!
//! Changes under the map: the CLI itself never rewrites a file in place (its
//! outputs are written to a temporary file and renamed over the target, so a
//! mapped model keeps its old inode and bytes). Another program writing into the
//! file while it is mapped changes the weights under a running model: a private
//! map does not snapshot pages the process has not written (Linux shows the new
//! bytes), and the checksum is verified only when the file is parsed. Truncating
//! it makes a read past the new end fault (SIGBUS). This is the usual contract
//! of mapped model files (llama.cpp, safetensors): replace a model by renaming
//! a new file over it, never by writing into it.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use microlm::{Checksum, Model};

/// Where a [`ModelFile`]'s bytes live.
#[derive(Debug)]
enum Storage {
    /// A read-only private map of the whole file (page-aligned).
    Mapped(memmap2::Mmap),
    /// A heap copy in u32 words (4-byte aligned) and its length in bytes.
    Words(Vec<u32>, usize),
}

/// A model file's bytes, 4-byte aligned so tensors can be read in place.
#[derive(Debug)]
pub struct ModelFile {
    /// Where the bytes came from.
    pub path: PathBuf,
    storage: Storage,
}

impl ModelFile {
    /// Opens a whole file: maps it read-only, or reads it if it cannot be mapped
    /// (see the module docs).
    ///
    /// # Errors
    /// The path is missing or unreadable, is not a regular file, or is over
    /// [`crate::io::MODEL`]'s limit.
    pub fn read(path: &Path) -> Result<ModelFile> {
        let limit = crate::io::MODEL;
        let (file, len) = crate::io::open(path, limit)?;
        if len > 0 {
            if let Some(map) = map(&file).filter(|m| m.len() as u64 == len && m.as_ptr().align_offset(4) == 0) {
                return Ok(ModelFile { path: path.to_path_buf(), storage: Storage::Mapped(map) });
            }
        }
        let data = crate::io::read_open(path, file, len, limit)?;
        let mut file = ModelFile::from_bytes(&data);
        file.path = path.to_path_buf();
        Ok(file)
    }

    /// Whether the bytes are a map of the file (rather than a heap copy).
    pub fn is_mapped(&self) -> bool {
        matches!(self.storage, Storage::Mapped(_))
    }

    /// Copies bytes already in memory (e.g. a file just built) into aligned storage.
    pub fn from_bytes(data: &[u8]) -> ModelFile {
        let mut words = vec![0u32; data.len().div_ceil(4)];
        bytemuck::cast_slice_mut::<u32, u8>(&mut words)[..data.len()].copy_from_slice(data);
        ModelFile { path: PathBuf::from("<memory>"), storage: Storage::Words(words, data.len()) }
    }

    /// The file bytes (4-byte aligned).
    pub fn bytes(&self) -> &[u8] {
        match &self.storage {
            Storage::Mapped(map) => map,
            Storage::Words(words, len) => &bytemuck::cast_slice::<u32, u8>(words)[..*len],
        }
    }

    /// Parses the file, naming it in the error.
    pub fn parse(&self, no_checksum: bool) -> Result<Model<'_>> {
        let checksum = if no_checksum { Checksum::Skip } else { Checksum::Verify };
        Model::parse_with(self.bytes(), checksum)
            .with_context(|| format!("{} is not a valid model file", self.path.display()))
    }
}

/// An arena of `bytes` bytes, 4-byte aligned, as `Session::new` wants it.
pub fn arena(bytes: usize) -> Vec<u32> {
    vec![0u32; bytes.div_ceil(4)]
}

/// Maps all of `file` read-only and private; `None` where the file system cannot.
#[allow(unsafe_code)]
fn map(file: &File) -> Option<memmap2::Mmap> {
    // SAFETY: memmap2 requires that the file not be modified or truncated while
    // mapped, which another process could still do; the module docs state the
    // consequences (changed weights, or SIGBUS past a new end), the same
    // contract as any mapped model file. The map is read-only and private, so
    // this process never writes through it.
    unsafe { memmap2::MmapOptions::new().map_copy_read_only(file) }.ok()
}
