//! A model file that QEMU's generic loader placed in RAM no section uses.

use crate::ModelError;

extern "C" {
    // memory.x: the model file's length word, and the window holding the file.
    static _model_len_word: u32;
    static _model_start: u8;
    static _model_end: u8;
}

/// The model file as its length word describes it. The board's memory.x puts
/// `_model_len_word` (written with `-device loader,data=LEN,data-len=4`) and
/// the window `_model_start`..`_model_end` in RAM that no output section uses.
pub fn loaded_model() -> Result<&'static [u8], ModelError> {
    // Only the addresses of the linker symbols are taken, never their contents.
    let (len_word, start, end) = (
        core::ptr::addr_of!(_model_len_word),
        core::ptr::addr_of!(_model_start),
        core::ptr::addr_of!(_model_end) as usize,
    );
    // SAFETY: the length word is in always-mapped RAM that no section uses.
    let len = unsafe { core::ptr::read_volatile(len_word) } as usize;
    let max = end - start as usize;
    if len == 0 {
        return Err(ModelError::NoModel { len_at: len_word as usize, at: start as usize });
    }
    if len > max {
        return Err(ModelError::TooLong { len, max });
    }
    // SAFETY: [start, start + len) lies in the window (checked against `max`
    // above), which no section occupies and nothing writes after QEMU's loader
    // at reset, so an immutable 'static view of it is sound.
    Ok(unsafe { core::slice::from_raw_parts(start, len) })
}
