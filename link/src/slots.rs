//! Two model slots (A and B) in flash, so an upload never loses the model
//! being served.
//!
//! The region is split in two halves of whole erase sectors. Each slot starts
//! with a 32-byte header; the model file follows at [`DATA_OFFSET`]:
//!
//! ```text
//! offset  size  field
//! 0       8     magic "MLMSLOT1"
//! 8       4     seq          u32 LE: the upload's sequence number (higher = newer)
//! 12      4     len          u32 LE: file length in bytes
//! 16      4     crc          u32 LE: CRC-32/ISO-HDLC of the file
//! 20      4     header_crc   u32 LE: CRC-32 of bytes 0..20
//! 24      8     0xFF (unwritten)
//! ```
//!
//! An upload erases the *inactive* slot (header included), writes the file
//! after the header, checks it (length, CRC, `Model::parse`), and only then
//! writes the header: that one write is the commit. At boot
//! ([`Slots::scan`]) a slot counts only when its header, its file's CRC and
//! `Model::parse` all pass, and the valid slot with the highest `seq` is
//! active. A cut link, a reset or a torn header write at any moment therefore
//! leaves the previous model active.

use embedded_storage::nor_flash::NorFlash;

use crate::ramflash::Mapped;
use crate::CRC;

/// Slot header magic.
pub const MAGIC: [u8; 8] = *b"MLMSLOT1";
/// Bytes before the file in a slot (keeps the file 32-byte aligned in flash).
pub const DATA_OFFSET: usize = 32;
/// Bytes of the header that are written (the rest stays erased).
const HEADER_BYTES: usize = 24;

/// A committed model file in a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stored {
    /// 0 = A, 1 = B.
    pub slot: u8,
    /// Sequence number of its upload.
    pub seq: u32,
    /// File length in bytes.
    pub len: u32,
    /// CRC-32 of the file.
    pub crc: u32,
}

/// The two slots of a flash region.
#[derive(Clone, Copy, Debug)]
pub struct Slots {
    /// Bytes per slot (a multiple of the erase size).
    pub slot_bytes: usize,
    /// The active model, if any.
    pub active: Option<Stored>,
}

/// Why a slot operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotError {
    /// The region has no room for two slots.
    TooSmall,
    /// The flash driver refused an erase or write.
    Flash,
}

fn header(seq: u32, len: u32, crc: u32) -> [u8; HEADER_BYTES] {
    let mut h = [0u8; HEADER_BYTES];
    h[..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&seq.to_le_bytes());
    h[12..16].copy_from_slice(&len.to_le_bytes());
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    let hc = CRC.checksum(&h[..20]);
    h[20..24].copy_from_slice(&hc.to_le_bytes());
    h
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl Slots {
    /// Finds the active model of a region (see the [module docs](self)).
    pub fn scan<F: NorFlash + Mapped>(flash: &F) -> Result<Slots, SlotError> {
        let slot_bytes = flash.capacity() / 2 / F::ERASE_SIZE * F::ERASE_SIZE;
        if slot_bytes <= DATA_OFFSET {
            return Err(SlotError::TooSmall);
        }
        let mut s = Slots { slot_bytes, active: None };
        for slot in 0..2u8 {
            if let Some(stored) = s.check(flash, slot) {
                if s.active.is_none_or(|a| stored.seq > a.seq) {
                    s.active = Some(stored);
                }
            }
        }
        Ok(s)
    }

    /// Largest file a slot holds.
    pub fn capacity(&self) -> usize {
        self.slot_bytes - DATA_OFFSET
    }

    /// Byte offset of `slot`'s file in the region.
    pub fn data_start(&self, slot: u8) -> usize {
        usize::from(slot) * self.slot_bytes + DATA_OFFSET
    }

    /// The slot an upload goes to: the one not active.
    pub fn inactive(&self) -> u8 {
        match self.active {
            Some(a) => 1 - a.slot,
            None => 0,
        }
    }

    /// The active model's file, in place.
    pub fn active_file<'f, F: Mapped>(&self, flash: &'f F) -> Option<&'f [u8]> {
        let a = self.active?;
        let start = self.data_start(a.slot);
        flash.mapped().get(start..start + a.len as usize)
    }

    /// `slot` as stored, if its header, CRC and model are valid.
    fn check<F: Mapped>(&self, flash: &F, slot: u8) -> Option<Stored> {
        let base = usize::from(slot) * self.slot_bytes;
        let region = flash.mapped().get(base..base + self.slot_bytes)?;
        let h = &region[..HEADER_BYTES];
        if h[..8] != MAGIC || CRC.checksum(&h[..20]) != u32_at(h, 20) {
            return None;
        }
        let (seq, len, crc) = (u32_at(h, 8), u32_at(h, 12), u32_at(h, 16));
        let file = region.get(DATA_OFFSET..DATA_OFFSET.checked_add(len as usize)?)?;
        if CRC.checksum(file) != crc || microlm::Model::parse(file).is_err() {
            return None;
        }
        Some(Stored { slot, seq, len, crc })
    }

    /// Erases `slot` (header and file).
    pub fn erase<F: NorFlash>(&self, flash: &mut F, slot: u8) -> Result<(), SlotError> {
        let base = (usize::from(slot) * self.slot_bytes) as u32;
        flash.erase(base, base + self.slot_bytes as u32).map_err(|_| SlotError::Flash)
    }

    /// Writes the header that makes `slot` (whose file is already written and
    /// checked) the active one, then re-reads the slots.
    pub fn commit<F: NorFlash + Mapped>(
        &mut self,
        flash: &mut F,
        slot: u8,
        len: u32,
        crc: u32,
    ) -> Result<(), SlotError> {
        let seq = self.active.map_or(1, |a| a.seq.wrapping_add(1));
        let base = (usize::from(slot) * self.slot_bytes) as u32;
        let mut h = [0xFFu8; DATA_OFFSET];
        h[..HEADER_BYTES].copy_from_slice(&header(seq, len, crc));
        flash.write(base, &h).map_err(|_| SlotError::Flash)?;
        *self = Slots::scan(flash)?;
        Ok(())
    }
}

/// Writes a file to flash in order, in pieces of any length, keeping the
/// bytes that do not fill a whole write unit (`F::WRITE_SIZE`, at most 16)
/// until the next piece or [`SlotWriter::finish`].
#[derive(Debug)]
pub struct SlotWriter {
    /// Region offset the carried bytes go to.
    at: u32,
    carry: [u8; 16],
    carried: usize,
}

impl SlotWriter {
    /// A writer starting at region offset `at` (a multiple of the write size).
    pub fn new(at: u32) -> Self {
        SlotWriter { at, carry: [0xFF; 16], carried: 0 }
    }

    /// Writes `bytes` after what came before.
    pub fn write<F: NorFlash>(&mut self, flash: &mut F, mut bytes: &[u8]) -> Result<(), SlotError> {
        let w = F::WRITE_SIZE;
        if w > self.carry.len() {
            return Err(SlotError::Flash);
        }
        while !bytes.is_empty() {
            if self.carried > 0 || bytes.len() < w {
                let n = (w - self.carried).min(bytes.len());
                self.carry[self.carried..self.carried + n].copy_from_slice(&bytes[..n]);
                self.carried += n;
                bytes = &bytes[n..];
                if self.carried == w {
                    flash.write(self.at, &self.carry[..w]).map_err(|_| SlotError::Flash)?;
                    self.at += w as u32;
                    self.carried = 0;
                }
                continue;
            }
            let whole = bytes.len() / w * w;
            flash.write(self.at, &bytes[..whole]).map_err(|_| SlotError::Flash)?;
            self.at += whole as u32;
            bytes = &bytes[whole..];
        }
        Ok(())
    }

    /// Writes the carried bytes, padded with `0xFF` (erased) to a whole write unit.
    pub fn finish<F: NorFlash>(&mut self, flash: &mut F) -> Result<(), SlotError> {
        if self.carried > 0 {
            let w = F::WRITE_SIZE;
            self.carry[self.carried..w].fill(0xFF);
            flash.write(self.at, &self.carry[..w]).map_err(|_| SlotError::Flash)?;
            self.at += w as u32;
            self.carried = 0;
        }
        Ok(())
    }
}
