//! Instruction counts under `-icount shift=0` (SysTick on Cortex-M, the
//! `minstret` CSR on RISC-V), and peak stack from painting the stack at boot.

#[cfg(target_arch = "arm")]
use core::sync::atomic::{AtomicU32, Ordering};

#[cfg(target_arch = "arm")]
use cortex_m::peripheral::syst::SystClkSource;
#[cfg(target_arch = "arm")]
use cortex_m::peripheral::SYST;
#[cfg(target_arch = "arm")]
use cortex_m_rt::exception;

/// What counts a run's instructions: SysTick on Cortex-M.
#[cfg(target_arch = "arm")]
pub type Timer = SYST;

/// What counts a run's instructions on RISC-V: a free-running 64-bit counter,
/// read at the start and at the end of the generation loop. [`Timer::MINSTRET`]
/// is the `minstret` CSR (instructions retired), which QEMU counts exactly
/// under `-icount`; a core without it (the ESP32-C3 has its own performance
/// counters) passes its own reader, and its [`TickRate`] says what a count is.
#[cfg(target_arch = "riscv32")]
#[derive(Clone, Copy, Debug)]
pub struct Timer {
    read: fn() -> u64,
}

#[cfg(target_arch = "riscv32")]
impl Timer {
    /// The `minstret` CSR (with `minstreth`: 64 bits).
    pub const MINSTRET: Timer = Timer { read: riscv::register::minstret::read64 };

    /// A counter read by `read` (monotonic, 64 bits, wrapping).
    pub const fn new(read: fn() -> u64) -> Timer {
        Timer { read }
    }
}

#[cfg(target_arch = "arm")]
/// SysTick reload: the full 24-bit range, so it wraps every 2^24 ticks.
const RELOAD: u32 = 0x00FF_FFFF;

#[cfg(target_arch = "arm")]
/// SysTick wraps since `Counter::start`.
static WRAPS: AtomicU32 = AtomicU32::new(0);

#[cfg(target_arch = "arm")]
#[exception]
fn SysTick() {
    WRAPS.fetch_add(1, Ordering::Relaxed);
}

/// A free-running 24-bit SysTick extended to 64 bits by counting wraps (on
/// RISC-V: the board's counter, `minstret` on QEMU, read at the start and at the end). It borrows the
/// [`Timer`] for as long as it counts, so a board can count run after run.
pub struct Counter<'a> {
    // Held on Cortex-M only to keep SysTick borrowed; read on RISC-V.
    #[cfg_attr(target_arch = "arm", allow(dead_code))]
    timer: &'a mut Timer,
    rate: TickRate,
    /// The counter at `start`.
    #[cfg(target_arch = "riscv32")]
    start: u64,
}

/// Instructions per SysTick tick under `-icount shift=0` (1 ns of virtual time
/// per instruction): the processor clock's period in nanoseconds, as the
/// fraction `num / den` (25 MHz: 40/1; 168 MHz: 125/21).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TickRate {
    /// Numerator (nanoseconds).
    pub num: u64,
    /// Denominator (ticks), at least 1.
    pub den: u64,
}

impl TickRate {
    /// A whole number of nanoseconds per tick.
    pub const fn whole(ns: u64) -> TickRate {
        TickRate { num: ns, den: 1 }
    }

    /// Instructions in `ticks` ticks, rounded to the nearest.
    pub fn instructions(self, ticks: u64) -> u64 {
        let den = self.den.max(1);
        // ticks = q·den + r, so (ticks·num + den/2) / den = q·num + (r·num + den/2) / den
        // exactly, in u64 arithmetic (no 128-bit multiply and divide in the firmware).
        // (`num::div_rem`: no u64 division routine in the firmware.)
        let (q, r) = crate::num::div_rem(ticks, den);
        q.wrapping_mul(self.num).wrapping_add(crate::num::div_rem(r * self.num + den / 2, den).0)
    }
}

impl core::fmt::Debug for Counter<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Counter").field("rate", &self.rate).finish()
    }
}

#[cfg(target_arch = "arm")]
impl<'a> Counter<'a> {
    /// Starts SysTick from zero on the processor clock. `rate` is the board's
    /// nanoseconds per processor clock cycle: `-icount shift=0` advances
    /// virtual time 1 ns per instruction.
    pub fn start(syst: &'a mut SYST, rate: TickRate) -> Counter<'a> {
        syst.disable_counter();
        syst.set_clock_source(SystClkSource::Core);
        syst.set_reload(RELOAD);
        syst.clear_current();
        WRAPS.store(0, Ordering::Relaxed);
        syst.enable_interrupt();
        syst.enable_counter();
        Counter { timer: syst, rate }
    }

    /// Ticks since `start`.
    pub fn ticks(&self) -> u64 {
        loop {
            let before = WRAPS.load(Ordering::Relaxed);
            let current = SYST::get_current();
            // A wrap between the two loads would pair an old wrap count with a new
            // counter value: read again.
            if WRAPS.load(Ordering::Relaxed) == before {
                return u64::from(before) * (u64::from(RELOAD) + 1) + u64::from(RELOAD - current);
            }
        }
    }

    /// Instructions since `start` (exact under `-icount shift=0`, to a tick).
    pub fn instructions(&self) -> u64 {
        self.rate.instructions(self.ticks())
    }
}

#[cfg(target_arch = "riscv32")]
impl<'a> Counter<'a> {
    /// Starts counting. `rate` is instructions per count (1 for `minstret`).
    pub fn start(timer: &'a mut Timer, rate: TickRate) -> Counter<'a> {
        let start = (timer.read)();
        Counter { timer, rate, start }
    }

    /// Counts since `start`.
    pub fn ticks(&self) -> u64 {
        (self.timer.read)().wrapping_sub(self.start)
    }

    /// Instructions since `start` (with `minstret`: exact under `-icount shift=0`).
    pub fn instructions(&self) -> u64 {
        self.rate.instructions(self.ticks())
    }
}

/// The word the free stack is painted with.
const PAINT: u32 = 0xC0DE_5AFE;
/// Bytes left unpainted just below the painter's own stack pointer.
const MARGIN: usize = 64;

#[cfg(any(target_arch = "arm", all(target_arch = "riscv32", not(feature = "riscv-rt"))))]
extern "C" {
    // cortex-m-rt's (and esp-hal's) linker script: the stack grows down from `_stack_start` to `_stack_end`.
    static _stack_start: u32;
    static _stack_end: u32;
}

#[cfg(all(target_arch = "riscv32", feature = "riscv-rt"))]
extern "C" {
    // riscv-rt's linker script: the stack grows down from `_stack_start` to
    // `__estack` (the end of the heap, which is empty: the top of .bss).
    static _stack_start: u32;
    static __estack: u32;
}

/// Lowest and highest stack addresses.
#[cfg(any(target_arch = "arm", all(target_arch = "riscv32", not(feature = "riscv-rt"))))]
fn stack_bounds() -> (usize, usize) {
    // Only the addresses of the linker symbols are taken, never their contents.
    (core::ptr::addr_of!(_stack_end) as usize, core::ptr::addr_of!(_stack_start) as usize)
}

/// Lowest and highest stack addresses.
#[cfg(all(target_arch = "riscv32", feature = "riscv-rt"))]
fn stack_bounds() -> (usize, usize) {
    // Only the addresses of the linker symbols are taken, never their contents.
    (core::ptr::addr_of!(__estack) as usize, core::ptr::addr_of!(_stack_start) as usize)
}

/// The stack pointer.
#[cfg(target_arch = "arm")]
fn stack_pointer() -> usize {
    cortex_m::register::msp::read() as usize
}

/// The stack pointer.
#[cfg(target_arch = "riscv32")]
fn stack_pointer() -> usize {
    let sp: usize;
    // SAFETY: copies the stack pointer into a register; no memory is touched.
    unsafe { core::arch::asm!("mv {}, sp", out(reg) sp, options(nomem, nostack, preserves_flags)) };
    sp
}

/// Paints the unused stack (from its limit up to just below the current stack
/// pointer). Call first thing in `main`, before interrupts are enabled.
#[inline(never)]
pub fn paint_stack() {
    let (bottom, _) = stack_bounds();
    let sp = stack_pointer();
    let mut p = bottom;
    while p + MARGIN < sp {
        // SAFETY: [bottom, sp - MARGIN) is RAM reserved for the stack and not in
        // use yet (it lies below the stack pointer, and no interrupt is enabled).
        unsafe { core::ptr::write_volatile(p as *mut u32, PAINT) };
        p += 4;
    }
}

/// Peak stack use in bytes since `paint_stack`: the distance from the top of the
/// stack down to the lowest word that no longer holds the paint.
pub fn stack_peak() -> usize {
    let (bottom, top) = stack_bounds();
    let mut p = bottom;
    // SAFETY: [bottom, top) is the stack region of RAM; reading it is always valid.
    while p < top && unsafe { core::ptr::read_volatile(p as *const u32) } == PAINT {
        p += 4;
    }
    top - p
}
