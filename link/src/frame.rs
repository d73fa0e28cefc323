//! Encoding a message into one frame, and collecting frames from a byte stream.
//!
//! The format is in the [crate docs](crate#frames). Encoding stacks postcard's
//! flavors: [`postcard::ser_flavors::crc::CrcModifier`] appends the
//! CRC-32 of the serialized bytes, and [`postcard::ser_flavors::Cobs`]
//! COBS-encodes everything and ends the frame with `0x00`. Decoding undoes
//! COBS in place (the `cobs` crate), checks the CRC before looking at the
//! message, then deserializes with postcard and refuses trailing bytes.

use postcard::ser_flavors::{crc::CrcModifier, Cobs, Slice};
use serde::{Deserialize, Serialize};

use crate::{ErrorKind, CRC, MAX_FRAME};

/// Why bytes are not a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum FrameError {
    /// The frame is not valid COBS.
    Cobs,
    /// The frame is shorter than its CRC.
    Short,
    /// The CRC does not match the bytes.
    Crc,
    /// The frame exceeded [`MAX_FRAME`] bytes; it was dropped up to its delimiter.
    Oversized,
    /// The CRC matched but the bytes are no message of the expected type.
    Decode,
    /// The output buffer is too small for the encoded message.
    BufferFull,
}

impl FrameError {
    /// The [`ErrorKind`] and detail a device replies with.
    pub fn reply(self) -> (ErrorKind, u32) {
        match self {
            FrameError::Cobs => (ErrorKind::Frame, 0),
            FrameError::Crc => (ErrorKind::Frame, 1),
            FrameError::Short => (ErrorKind::Frame, 2),
            FrameError::Oversized => (ErrorKind::Oversized, MAX_FRAME as u32),
            FrameError::Decode | FrameError::BufferFull => (ErrorKind::Decode, 0),
        }
    }
}

/// Encodes `msg` as one frame into `buf`; returns the frame, delimiter included.
pub fn encode<'b, T: Serialize + ?Sized>(msg: &T, buf: &'b mut [u8]) -> Result<&'b mut [u8], FrameError> {
    let cobs = Cobs::try_new(Slice::new(buf)).map_err(|_| FrameError::BufferFull)?;
    postcard::serialize_with_flavor(msg, CrcModifier::new(cobs, CRC.digest())).map_err(|_| FrameError::BufferFull)
}

/// Decodes one frame (its bytes up to, not including, the `0x00` delimiter), in place.
pub fn decode<'a, T: Deserialize<'a>>(frame: &'a mut [u8]) -> Result<T, FrameError> {
    let n = cobs::decode_in_place(frame).map_err(|_| FrameError::Cobs)?;
    let bytes = &frame[..n];
    let Some(body_len) = n.checked_sub(4) else { return Err(FrameError::Short) };
    let (body, crc) = bytes.split_at(body_len);
    if CRC.checksum(body).to_le_bytes() != crc {
        return Err(FrameError::Crc);
    }
    match postcard::take_from_bytes::<T>(body) {
        Ok((msg, [])) => Ok(msg),
        _ => Err(FrameError::Decode),
    }
}

/// Collects the bytes of a stream into frames of at most `N` bytes on the
/// wire, the `0x00` delimiter included (use [`MAX_FRAME`]): at most `N - 1`
/// encoded bytes before the delimiter; a longer frame ends as
/// [`Feed::Oversized`].
#[derive(Debug)]
pub struct Frames<const N: usize> {
    buf: [u8; N],
    len: usize,
    /// The frame being collected ran past `N`: skip to its delimiter.
    overflow: bool,
}

impl<const N: usize> Default for Frames<N> {
    fn default() -> Self {
        Self::new()
    }
}

/// What one byte completed.
#[derive(Debug, PartialEq, Eq)]
pub enum Feed<'a> {
    /// No frame ended at this byte.
    Pending,
    /// A frame ended: its bytes without the delimiter, to [`decode`] in place.
    Frame(&'a mut [u8]),
    /// A frame longer than `N` ended; its bytes are gone.
    Oversized,
}

impl<const N: usize> Frames<N> {
    /// An empty accumulator.
    pub const fn new() -> Self {
        Frames { buf: [0; N], len: 0, overflow: false }
    }

    /// Takes one byte of the stream. A lone `0x00` (an empty frame) is skipped.
    pub fn push(&mut self, byte: u8) -> Feed<'_> {
        if byte != 0 {
            // Keep one place for the delimiter, so N counts the frame as sent.
            if self.len + 1 < N {
                self.buf[self.len] = byte;
                self.len += 1;
            } else {
                self.overflow = true;
            }
            return Feed::Pending;
        }
        let (len, overflow) = (self.len, self.overflow);
        self.len = 0;
        self.overflow = false;
        if overflow {
            Feed::Oversized
        } else if len == 0 {
            Feed::Pending
        } else {
            Feed::Frame(&mut self.buf[..len])
        }
    }

    /// Forgets a partly received frame.
    pub fn clear(&mut self) {
        self.len = 0;
        self.overflow = false;
    }
}
