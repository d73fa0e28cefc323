//! Reading model files into 4-byte aligned memory and parsing them with context.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use microlm::{Checksum, Model};

/// A model file's bytes, held in u32 words so tensors can be read in place.
#[derive(Debug)]
pub struct ModelFile {
    /// Where the bytes came from.
    pub path: PathBuf,
    words: Vec<u32>,
    len: usize,
}

impl ModelFile {
    /// Reads a whole file.
    pub fn read(path: &Path) -> Result<ModelFile> {
        let data = crate::io::read(path, crate::io::MODEL)?;
        let mut words = vec![0u32; data.len().div_ceil(4)];
        bytemuck::cast_slice_mut::<u32, u8>(&mut words)[..data.len()].copy_from_slice(&data);
        Ok(ModelFile { path: path.to_path_buf(), words, len: data.len() })
    }

    /// Copies bytes already in memory (e.g. a file just built) into aligned storage.
    pub fn from_bytes(data: &[u8]) -> ModelFile {
        let mut words = vec![0u32; data.len().div_ceil(4)];
        bytemuck::cast_slice_mut::<u32, u8>(&mut words)[..data.len()].copy_from_slice(data);
        ModelFile { path: PathBuf::from("<memory>"), words, len: data.len() }
    }

    /// The file bytes (4-byte aligned).
    pub fn bytes(&self) -> &[u8] {
        &bytemuck::cast_slice::<u32, u8>(&self.words)[..self.len]
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
