//! Instruction counts from SysTick under `-icount shift=0`, and peak stack
//! from painting the stack at boot.

use core::sync::atomic::{AtomicU32, Ordering};

use cortex_m::peripheral::syst::SystClkSource;
use cortex_m::peripheral::SYST;
use cortex_m_rt::exception;

/// SysTick reload: the full 24-bit range, so it wraps every 2^24 ticks.
const RELOAD: u32 = 0x00FF_FFFF;

/// SysTick wraps since `Counter::start`.
static WRAPS: AtomicU32 = AtomicU32::new(0);

#[exception]
fn SysTick() {
    WRAPS.fetch_add(1, Ordering::Relaxed);
}

/// A free-running 24-bit SysTick extended to 64 bits by counting wraps.
pub struct Counter {
    _syst: SYST,
    instructions_per_tick: u64,
}

impl core::fmt::Debug for Counter {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Counter").field("instructions_per_tick", &self.instructions_per_tick).finish()
    }
}

impl Counter {
    /// Starts SysTick from zero on the processor clock. `instructions_per_tick`
    /// is the board's nanoseconds per processor clock cycle: `-icount shift=0`
    /// advances virtual time 1 ns per instruction.
    pub fn start(mut syst: SYST, instructions_per_tick: u64) -> Counter {
        syst.disable_counter();
        syst.set_clock_source(SystClkSource::Core);
        syst.set_reload(RELOAD);
        syst.clear_current();
        WRAPS.store(0, Ordering::Relaxed);
        syst.enable_interrupt();
        syst.enable_counter();
        Counter { _syst: syst, instructions_per_tick }
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
        self.ticks() * self.instructions_per_tick
    }
}

/// The word the free stack is painted with.
const PAINT: u32 = 0xC0DE_5AFE;
/// Bytes left unpainted just below the painter's own stack pointer.
const MARGIN: usize = 64;

extern "C" {
    // cortex-m-rt's linker script: the stack grows down from `_stack_start` to `_stack_end`.
    static _stack_start: u32;
    static _stack_end: u32;
}

/// Lowest and highest stack addresses.
fn stack_bounds() -> (usize, usize) {
    // Only the addresses of the linker symbols are taken, never their contents.
    (core::ptr::addr_of!(_stack_end) as usize, core::ptr::addr_of!(_stack_start) as usize)
}

/// Paints the unused stack (from its limit up to just below the current stack
/// pointer). Call first thing in `main`, before interrupts are enabled.
#[inline(never)]
pub fn paint_stack() {
    let (bottom, _) = stack_bounds();
    let sp = cortex_m::register::msp::read() as usize;
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
