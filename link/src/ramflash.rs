//! NOR-flash behaviour over RAM, for the QEMU boards (PSRAM-backed slots) and
//! the host tests: erase sets whole sectors to `0xFF`, a write can only clear
//! bits (it stores `old & new`, as NOR programming does), through the
//! `embedded-storage` [`NorFlash`] traits that real flash drivers implement.

use embedded_storage::nor_flash::{
    check_erase, check_read, check_write, ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};

/// A flash region the CPU can read in place (memory-mapped), so a model in it
/// is parsed and run without a copy.
pub trait Mapped {
    /// The whole region.
    fn mapped(&self) -> &[u8];
}

/// Erase-sector size of [`RamFlash`] in bytes.
pub const ERASE_SIZE: usize = 4096;
/// Write granularity of [`RamFlash`] in bytes.
pub const WRITE_SIZE: usize = 4;

/// NOR flash emulated over a RAM buffer (any length; only whole sectors are used).
#[derive(Debug)]
pub struct RamFlash<S> {
    mem: S,
}

/// A [`RamFlash`] request outside the region or not aligned to its sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RamFlashError(pub NorFlashErrorKind);

impl NorFlashError for RamFlashError {
    fn kind(&self) -> NorFlashErrorKind {
        self.0
    }
}

impl<S: AsRef<[u8]> + AsMut<[u8]>> RamFlash<S> {
    /// Wraps `mem` as it is (what it holds survives, as flash contents survive a reset).
    pub fn new(mem: S) -> Self {
        RamFlash { mem }
    }

    /// The backing memory.
    pub fn into_inner(self) -> S {
        self.mem
    }
}

impl<S> ErrorType for RamFlash<S> {
    type Error = RamFlashError;
}

impl<S: AsRef<[u8]> + AsMut<[u8]>> ReadNorFlash for RamFlash<S> {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), RamFlashError> {
        check_read(self, offset, bytes.len()).map_err(RamFlashError)?;
        let at = offset as usize;
        bytes.copy_from_slice(&self.mem.as_ref()[at..at + bytes.len()]);
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.mem.as_ref().len() / ERASE_SIZE * ERASE_SIZE
    }
}

impl<S: AsRef<[u8]> + AsMut<[u8]>> NorFlash for RamFlash<S> {
    const WRITE_SIZE: usize = WRITE_SIZE;
    const ERASE_SIZE: usize = ERASE_SIZE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), RamFlashError> {
        check_erase(self, from, to).map_err(RamFlashError)?;
        self.mem.as_mut()[from as usize..to as usize].fill(0xFF);
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), RamFlashError> {
        check_write(self, offset, bytes.len()).map_err(RamFlashError)?;
        let at = offset as usize;
        for (m, &b) in self.mem.as_mut()[at..at + bytes.len()].iter_mut().zip(bytes) {
            *m &= b;
        }
        Ok(())
    }
}

impl<S: AsRef<[u8]> + AsMut<[u8]>> Mapped for RamFlash<S> {
    fn mapped(&self) -> &[u8] {
        &self.mem.as_ref()[..self.capacity()]
    }
}
