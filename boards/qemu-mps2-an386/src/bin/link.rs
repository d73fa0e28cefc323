//! microlm on QEMU's mps2-an386 (Cortex-M4F), serving the host link on UART0
//! (QEMU's first `-serial`): `microlm device --socket` or `microlm qemu --link`
//! talk to it. Received bytes reach the link through UART0's receive
//! interrupt and a ring buffer, so nothing sent while a token computes is lost.
//! It starts with no model; uploads go to two 8 MiB slots in
//! PSRAM, which behaves as NOR flash here (erase to 0xFF, writes clear bits)
//! and keeps its contents across a system reset, as flash would. The arena is
//! allocated at run time from a 3 MiB `embedded-alloc` heap.
#![no_std]
#![no_main]

use core::mem::MaybeUninit;

use cortex_m_rt::entry;
use microlm_board::link::{init_heap, serve, CmsdkUart, HeapArena, RxRing, UartPort};
use microlm_board::measure::{paint_stack, Counter, TickRate};
use microlm_link::ramflash::RamFlash;
use microlm_link::server::{BoardInfo, Server};

/// UART0 of the MPS2 FPGA images (QEMU hw/arm/mps2.c).
const UART0: usize = 0x4000_4000;
/// UART0's receive interrupt on the AN385/AN386 images (QEMU hw/arm/mps2.c:
/// RX 0, TX 1).
const UART0_RX_IRQ: u16 = 0;
/// The APB clock: 25 MHz, as the processor's.
const PCLK: u32 = 25_000_000;
/// Heap for the run-time arena, in .bss.
const HEAP_BYTES: usize = 3 * 1024 * 1024;

extern "C" {
    /// PSRAM start and end (memory.x).
    static mut _model_len_word: u8;
    static _model_end: u8;
}

static INFO: BoardInfo = BoardInfo {
    firmware: concat!(env!("CARGO_PKG_NAME"), "-link ", env!("CARGO_PKG_VERSION")),
    board: "mps2-an386",
    flash_bytes: 4 * 1024 * 1024,
    ram_bytes: 4 * 1024 * 1024,
};

#[entry]
fn main() -> ! {
    paint_stack();
    static mut HEAP: [MaybeUninit<u8>; HEAP_BYTES] = [MaybeUninit::uninit(); HEAP_BYTES];
    // SAFETY: `#[entry]` runs once, so this is the only reference to HEAP.
    init_heap(unsafe { &mut *core::ptr::addr_of_mut!(HEAP) });
    // SAFETY: memory.x reserves PSRAM (16 MiB from _model_len_word to _model_end) for
    // the model; no output section is placed there and nothing else touches it.
    let psram: &'static mut [u8] = unsafe {
        let start = core::ptr::addr_of_mut!(_model_len_word);
        let len = core::ptr::addr_of!(_model_end) as usize - start as usize;
        core::slice::from_raw_parts_mut(start, len)
    };
    let Some(p) = cortex_m::Peripherals::take() else { panic!("peripherals taken twice") };
    let Some(syst) = cortex_m::singleton!(: cortex_m::peripheral::SYST = p.SYST) else { panic!("SysTick taken twice") };
    // SysTick at the 25 MHz processor clock: 40 instructions per tick under -icount shift=0.
    let counter = Counter::start(syst, TickRate::whole(40));
    // SAFETY: UART0 is driven only here.
    let mut uart = unsafe { CmsdkUart::new(UART0, PCLK, 115_200) };
    let Some(rx) = RxRing::take() else { panic!("receive ring taken twice") };
    uart.listen_rx(UART0_RX_IRQ);
    let port = UartPort { uart, rx, counter };
    let server = Server::new(Some(RamFlash::new(psram)), None, HeapArena::default(), port, INFO);
    serve(server)
}
