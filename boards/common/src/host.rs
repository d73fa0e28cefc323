//! Semihosting: buffered stdout, the command line, the clock and the exit code
//! (cortex-m-semihosting on Arm, riscv-semihosting on RISC-V: the same calls).

use core::fmt;

#[cfg(target_arch = "arm")]
use cortex_m_semihosting as sh;
#[cfg(target_arch = "riscv32")]
use riscv_semihosting as sh;
use sh::{debug, hio, nr};

/// Text to the host's stdout, buffered so a token or a stats line is one write.
pub struct Out {
    stream: Option<hio::HostStream>,
    buf: [u8; 256],
    len: usize,
    /// The last byte written, to know whether a line is open.
    last: u8,
}

impl fmt::Debug for Out {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Out").field("open", &self.stream.is_some()).field("buffered", &self.len).finish()
    }
}

impl Out {
    /// Opens the host's stdout (if the host refuses, output is dropped; the exit code still tells).
    pub fn stdout() -> Out {
        Out { stream: hio::hstdout().ok(), buf: [0; 256], len: 0, last: b'\n' }
    }

    /// Writes out everything buffered.
    fn write_out(&mut self) {
        if let Some(stream) = &mut self.stream {
            // A failed write cannot be reported anywhere else; the exit code still tells.
            let _ = stream.write_all(&self.buf[..self.len]);
        }
        self.len = 0;
    }
}

impl crate::Console for Out {
    fn flush(&mut self) {
        self.write_out();
    }

    fn end_line(&mut self) {
        if self.last != b'\n' {
            let _ = fmt::Write::write_str(self, "\n");
        }
    }
}

impl fmt::Write for Out {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if self.len == self.buf.len() {
                self.write_out();
            }
            self.buf[self.len] = b;
            self.len += 1;
            self.last = b;
        }
        Ok(())
    }
}

/// Reads the semihosting command line into `buf`; `None` if it does not fit.
pub fn cmdline(buf: &mut [u8]) -> Option<&mut [u8]> {
    // SYS_GET_CMDLINE's parameter block: buffer address and size; the host
    // writes the text (NUL terminated) and stores its length in word 1.
    let mut block = [buf.as_mut_ptr() as usize, buf.len()];
    // SAFETY: the host writes at most `buf.len()` bytes into `buf` and one word
    // into `block`, both live and exclusively borrowed for the call.
    let status = unsafe { sh::syscall1(nr::GET_CMDLINE, block.as_mut_ptr() as usize) };
    let len = block[1];
    (status == 0 && len < buf.len()).then(|| &mut buf[..len])
}

/// Seconds since the Unix epoch from the host clock (SYS_TIME).
pub fn time() -> u64 {
    // SAFETY: SYS_TIME takes no parameter block and only returns a value.
    unsafe { sh::syscall1(nr::TIME, 0) as u64 }
}

/// Ends the QEMU run with exit code 0 (`ok`) or 1.
pub fn exit(ok: bool) -> ! {
    debug::exit(if ok { debug::EXIT_SUCCESS } else { debug::EXIT_FAILURE });
    // Only reached if a debugger resumes after the exit request.
    loop {
        #[cfg(target_arch = "arm")]
        cortex_m::asm::wfi();
        #[cfg(target_arch = "riscv32")]
        riscv::asm::wfi();
    }
}
