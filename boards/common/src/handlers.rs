//! Fault, unexpected-exception and panic handlers for the semihosting boards:
//! each prints one `error: ...` line on semihosting stdout and ends the QEMU
//! run with exit code 1 instead of hanging.

use core::fmt::Write;

#[cfg(target_arch = "arm")]
use cortex_m_rt::{exception, ExceptionFrame};

use crate::host::{self, Out};

/// Reports a fault as an error line and exits 1 instead of hanging.
#[cfg(target_arch = "arm")]
#[exception]
unsafe fn HardFault(frame: &ExceptionFrame) -> ! {
    let mut out = Out::stdout();
    // The fault may interrupt a line of text: start a new one.
    let _ = writeln!(out, "\nerror: HardFault at pc {:#010x}", frame.pc());
    crate::Console::flush(&mut out);
    host::exit(false)
}

/// Any unexpected interrupt or exception: report and exit 1 (with the
/// feature `link`, the interrupt registered by `link::CmsdkUart::listen_rx` is served).
#[cfg(target_arch = "arm")]
#[exception]
unsafe fn DefaultHandler(irqn: i16) {
    // The link firmware's UART receive interrupt, when one is registered.
    #[cfg(feature = "link")]
    if crate::link::on_interrupt(irqn) {
        return;
    }
    let mut out = Out::stdout();
    // The fault may interrupt a line of text: start a new one.
    let _ = out.write_str(if irqn < 0 { "\nerror: unexpected exception -" } else { "\nerror: unexpected exception " });
    let _ = crate::num::write_decimal(&mut out, u64::from(irqn.unsigned_abs()));
    let _ = out.write_str("\n");
    crate::Console::flush(&mut out);
    host::exit(false)
}

/// Any exception (a fault, an illegal instruction, ...) on RISC-V: reports
/// `mcause` and `mepc` and exits 1 instead of hanging.
#[cfg(target_arch = "riscv32")]
#[export_name = "ExceptionHandler"]
fn exception_handler(_frame: &riscv_rt::TrapFrame) -> ! {
    let mut out = Out::stdout();
    let cause = riscv::register::mcause::read().bits();
    let pc = riscv::register::mepc::read();
    // The fault may interrupt a line of text: start a new one.
    let _ = writeln!(out, "\nerror: exception (mcause {cause:#x}) at pc {pc:#010x}");
    crate::Console::flush(&mut out);
    host::exit(false)
}

/// Any interrupt on RISC-V (the firmware enables none): report and exit 1.
#[cfg(target_arch = "riscv32")]
#[export_name = "DefaultHandler"]
fn default_handler() -> ! {
    let mut out = Out::stdout();
    let cause = riscv::register::mcause::read().bits();
    // The interrupt may interrupt a line of text: start a new one.
    let _ = writeln!(out, "\nerror: unexpected interrupt (mcause {cause:#x})");
    crate::Console::flush(&mut out);
    host::exit(false)
}

/// A panic is a bug (bad input gets error values); report it and exit 1.
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let mut out = Out::stdout();
    // The fault may interrupt a line of text: start a new one. Only the place
    // is printed: formatting the message would keep core::fmt's panic code.
    let _ = out.write_str("\nerror: panic");
    if let Some(at) = info.location() {
        let _ = out.write_str(" at ");
        let _ = out.write_str(at.file());
        for n in [at.line(), at.column()] {
            let _ = out.write_str(":");
            let _ = crate::num::write_decimal(&mut out, u64::from(n));
        }
    }
    let _ = out.write_str("\n");
    crate::Console::flush(&mut out);
    host::exit(false)
}
