//! microlm on the STM32F405RG serving the host link on USART1 (PA9 TX, PA10
//! RX, 115200 8N1): `microlm device --port /dev/ttyACM0 info|generate|upload`
//! talks to it. Received bytes reach the link through USART1's RXNE
//! interrupt and the ring of `microlm_board::link`, so what the host sends
//! while a token computes (a `Cancel`) is not lost. The arena is allocated at
//! run time from an `embedded-alloc` heap in SRAM.
//!
//! - On the board (default feature `probe`, plus `link`): 168 MHz from the
//!   crystal, defmt over RTT. Uploads go to two model slots in the 128 KiB
//!   flash sectors past the firmware image (from 0x0802_0000 at the lowest;
//!   the image is about 150 KiB, so from 0x0804_0000: two slots of 384 KiB,
//!   each holding a file of 384 KiB less its 32-byte header), written through
//!   the HAL's flash driver (`embedded-storage` `NorFlash`). A model embedded
//!   at build time (MICROLM_MODEL) serves while no slot holds one; it makes the
//!   image larger and the slots smaller.
//! - Under QEMU netduinoplus2 (`--no-default-features --features qemu,link`):
//!   QEMU does not model the flash controller, so there are no slots: the
//!   model embedded at build time serves (read-only, reported as built in) and
//!   an upload gets `Error { UploadTooLarge, detail: 0 }` (no slot space).
#![no_std]
#![no_main]

#[cfg(all(feature = "qemu", feature = "probe"))]
compile_error!(
    "features `qemu` and `probe` exclude each other: build for QEMU with --no-default-features --features qemu,link"
);
#[cfg(not(any(feature = "qemu", feature = "probe")))]
compile_error!("enable `probe` (the board, the default) or `qemu` (QEMU netduinoplus2)");

use core::cell::RefCell;
use core::mem::MaybeUninit;

use cortex_m_rt::{entry, exception, ExceptionFrame};
use critical_section::Mutex;
use microlm_board::link::{init_heap, rx_push, HeapArena, RxRing};
use microlm_board::measure::{paint_stack, Counter};
use microlm_board::TickRate;
use microlm_link::server::{BoardInfo, Port, Server};
use panic_probe as _;
use static_cell::StaticCell;
use stm32f4xx_hal::pac::{self, interrupt, FLASH, USART1};
use stm32f4xx_hal::prelude::*;
use stm32f4xx_hal::serial::{Config, Rx, RxListen, Tx};

#[cfg(feature = "probe")]
use defmt_rtt as _;
#[cfg(feature = "qemu")]
use defmt_semihosting as _;

/// The model embedded at build time (MICROLM_MODEL; build.rs also sizes a
/// static arena, ARENA_WORDS and CTX, which this firmware does not use: its
/// arena comes from the heap).
mod embedded {
    #![allow(dead_code)]
    include!(concat!(env!("OUT_DIR"), "/model.rs"));

    /// The embedded file (empty without MICROLM_MODEL).
    pub(crate) fn model() -> &'static [u8] {
        &MODEL.0
    }
}

/// USART1's baud rate.
const BAUD: u32 = 115_200;
/// The Netduino Plus 2's crystal (HSE), in Hz.
#[cfg(feature = "probe")]
const HSE_HZ: u32 = 25_000_000;
/// Heap for the run-time arena, in .bss (the rest of the 128 KiB SRAM holds
/// the stack, the server's buffers and the receive ring).
const HEAP_BYTES: usize = 108 * 1024;

static INFO: BoardInfo = BoardInfo {
    firmware: concat!(env!("CARGO_PKG_NAME"), "-link ", env!("CARGO_PKG_VERSION")),
    board: "stm32f405",
    flash_bytes: 1024 * 1024,
    ram_bytes: 192 * 1024,
};

/// USART1's receiver, owned by its interrupt handler.
static RX: Mutex<RefCell<Option<Rx<USART1>>>> = Mutex::new(RefCell::new(None));

/// USART1: every received byte into the ring. A read error (overrun, noise,
/// framing) drops that byte; its frame then fails its CRC and gets an error reply.
#[interrupt]
fn USART1() {
    critical_section::with(|cs| {
        if let Some(rx) = RX.borrow_ref_mut(cs).as_mut() {
            loop {
                match embedded_hal_nb::serial::Read::read(rx) {
                    Ok(b) => rx_push(b),
                    Err(nb::Error::WouldBlock) => break,
                    // The HAL cleared the error flag; the next byte may be waiting.
                    Err(nb::Error::Other(_)) => {}
                }
            }
        }
    });
}

/// USART1 and the ring for the link server.
struct UsartPort {
    tx: Tx<USART1>,
    rx: RxRing,
    counter: Counter<'static>,
}

impl core::fmt::Debug for UsartPort {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("UsartPort").field("rx", &self.rx).finish_non_exhaustive()
    }
}

impl Port for UsartPort {
    fn read(&mut self) -> Option<u8> {
        self.rx.pop()
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            let _ = nb::block!(embedded_hal_nb::serial::Write::write(&mut self.tx, b));
        }
    }
    fn counter(&mut self) -> u64 {
        self.counter.instructions()
    }
    fn stack_peak(&mut self) -> u32 {
        microlm_board::measure::stack_peak() as u32
    }
    fn reset(&mut self) {
        let _ = nb::block!(embedded_hal_nb::serial::Write::flush(&mut self.tx));
        cortex_m::peripheral::SCB::sys_reset()
    }
    fn idle(&mut self) {
        self.rx.wait();
    }
}

/// The model slots: the flash from `start` (an offset from 0x0800_0000, on a
/// 128 KiB sector boundary) to the end, through the HAL's driver. Reads are
/// memory-mapped.
struct SlotFlash {
    flash: &'static mut FLASH,
    start: usize,
    len: usize,
}

impl core::fmt::Debug for SlotFlash {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SlotFlash").field("start", &self.start).field("len", &self.len).finish()
    }
}

/// The flash sector size from 0x0802_0000 up (sectors 5 to 11, RM0090 3.3).
const SECTOR: usize = 128 * 1024;

impl SlotFlash {
    /// The sectors past the firmware image (`image_end` bytes from the flash
    /// base), from sector 5 (0x0802_0000) at the lowest.
    #[cfg(feature = "probe")]
    fn above(flash: &'static mut FLASH, image_end: usize) -> Option<SlotFlash> {
        use stm32f4xx_hal::flash::FlashExt;
        let start = image_end.div_ceil(SECTOR).max(1) * SECTOR;
        let len = flash.len().checked_sub(start)?;
        Some(SlotFlash { flash, start, len })
    }

    /// After an erase or a write: the flash interface's data cache may hold
    /// the old bytes, so it is reset (RM0090 3.5.2: DCRST only while DCEN is clear).
    fn flush_cache(&mut self) {
        let acr = self.flash.acr();
        let on = acr.read().dcen().bit_is_set();
        acr.modify(|_, w| w.dcen().clear_bit());
        acr.modify(|_, w| w.dcrst().set_bit());
        acr.modify(|_, w| w.dcrst().clear_bit());
        if on {
            acr.modify(|_, w| w.dcen().set_bit());
        }
    }
}

impl embedded_storage::nor_flash::ErrorType for SlotFlash {
    type Error = stm32f4xx_hal::flash::Error;
}

impl embedded_storage::nor_flash::ReadNorFlash for SlotFlash {
    const READ_SIZE: usize = 1;
    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        let from = offset as usize;
        match microlm_link::ramflash::Mapped::mapped(self).get(from..from + bytes.len()) {
            Some(src) => {
                bytes.copy_from_slice(src);
                Ok(())
            }
            None => Err(stm32f4xx_hal::flash::Error::ProgrammingAlignment),
        }
    }
    fn capacity(&self) -> usize {
        self.len
    }
}

impl embedded_storage::nor_flash::NorFlash for SlotFlash {
    const WRITE_SIZE: usize = 1;
    const ERASE_SIZE: usize = SECTOR;
    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        use stm32f4xx_hal::flash::FlashExt;
        embedded_storage::nor_flash::check_erase(self, from, to)
            .map_err(|_| stm32f4xx_hal::flash::Error::ProgrammingAlignment)?;
        let base = self.start as u32;
        let done = embedded_storage::nor_flash::NorFlash::erase(&mut self.flash.unlocked(), base + from, base + to);
        self.flush_cache();
        done
    }
    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        use stm32f4xx_hal::flash::FlashExt;
        embedded_storage::nor_flash::check_write(self, offset, bytes.len())
            .map_err(|_| stm32f4xx_hal::flash::Error::ProgrammingAlignment)?;
        let at = self.start as u32 + offset;
        let done = embedded_storage::nor_flash::NorFlash::write(&mut self.flash.unlocked(), at, bytes);
        self.flush_cache();
        done
    }
}

impl microlm_link::ramflash::Mapped for SlotFlash {
    fn mapped(&self) -> &[u8] {
        use stm32f4xx_hal::flash::FlashExt;
        &self.flash.read()[self.start..self.start + self.len]
    }
}

/// The board's clocks: 168 MHz from the 25 MHz crystal through the PLL.
#[cfg(feature = "probe")]
fn clocks(rcc: pac::RCC) -> stm32f4xx_hal::rcc::Clocks {
    rcc.constrain().cfgr.use_hse(HSE_HZ.Hz()).sysclk(168.MHz()).freeze()
}

/// QEMU: the HSI as it is out of reset (QEMU models no RCC).
#[cfg(feature = "qemu")]
fn clocks(rcc: pac::RCC) -> stm32f4xx_hal::rcc::Clocks {
    rcc.constrain().cfgr.freeze()
}

/// Bytes of flash the image occupies from 0x0800_0000 (code, read-only data,
/// the model if embedded, and the initial values of .data).
#[cfg(feature = "probe")]
fn image_end() -> usize {
    extern "C" {
        static __sidata: u8;
        static __sdata: u8;
        static __edata: u8;
    }
    // Only the addresses of the cortex-m-rt linker symbols are taken.
    let (sidata, sdata, edata) = (
        core::ptr::addr_of!(__sidata) as usize,
        core::ptr::addr_of!(__sdata) as usize,
        core::ptr::addr_of!(__edata) as usize,
    );
    sidata + (edata - sdata) - 0x0800_0000
}

type LinkServer = Server<SlotFlash, HeapArena, UsartPort>;
static SERVER: StaticCell<LinkServer> = StaticCell::new();

#[entry]
fn main() -> ! {
    paint_stack();
    static mut HEAP: [MaybeUninit<u8>; HEAP_BYTES] = [MaybeUninit::uninit(); HEAP_BYTES];
    // SAFETY: `#[entry]` runs once, so this is the only reference to HEAP.
    init_heap(unsafe { &mut *core::ptr::addr_of_mut!(HEAP) });
    let (Some(dp), Some(cp)) = (pac::Peripherals::take(), cortex_m::Peripherals::take()) else {
        defmt::panic!("peripherals already taken");
    };
    let clocks = clocks(dp.RCC);
    let gpioa = dp.GPIOA.split();
    let serial = match dp.USART1.serial((gpioa.pa9, gpioa.pa10), Config::default().baudrate(BAUD.bps()), &clocks) {
        Ok(serial) => serial,
        Err(_) => defmt::panic!("USART1 cannot run at {} baud from {} Hz", BAUD, clocks.pclk2().raw()),
    };
    let (tx, mut rx) = serial.split();
    let Some(ring) = RxRing::take() else { defmt::panic!("receive ring taken twice") };
    rx.listen();
    critical_section::with(|cs| *RX.borrow_ref_mut(cs) = Some(rx));
    // SAFETY: the USART1 handler touches only RX (behind a critical section)
    // and the ring's producer end; nothing in the main program relies on it being masked.
    unsafe { cortex_m::peripheral::NVIC::unmask(pac::Interrupt::USART1) };

    let Some(syst) = cortex_m::singleton!(: cortex_m::peripheral::SYST = cp.SYST) else {
        defmt::panic!("SysTick taken twice");
    };
    // SysTick on the 168 MHz core clock: 125/21 ns per tick (see main.rs).
    let counter = Counter::start(syst, TickRate { num: 125, den: 21 });
    let builtin = microlm_board::embedded_model(embedded::model()).ok();

    // The serve loop sleeps in `wfi`; keep the debug port clocked meanwhile so
    // probe-rs can go on reading the defmt log (RTT).
    #[cfg(feature = "probe")]
    dp.DBGMCU.cr().modify(|_, w| w.dbg_sleep().set_bit());
    #[cfg(feature = "probe")]
    let flash = {
        static FLASH_CELL: StaticCell<FLASH> = StaticCell::new();
        SlotFlash::above(FLASH_CELL.init(dp.FLASH), image_end())
    };
    // QEMU models no flash controller: no slots, the embedded model only.
    #[cfg(feature = "qemu")]
    let flash: Option<SlotFlash> = {
        let _ = dp.FLASH;
        None
    };
    defmt::info!(
        "microlm link on STM32F405: sysclk {} Hz, built-in model {} bytes, slots {} bytes",
        clocks.sysclk().raw(),
        builtin.map_or(0, |m| m.len()),
        flash.as_ref().map_or(0, |f| f.len)
    );
    let port = UsartPort { tx, rx: ring, counter };
    // Built in place: the server's buffers are larger than the stack should carry.
    let server = SERVER.init_with(|| Server::new(flash, builtin, HeapArena::default(), port, INFO));
    loop {
        server.poll();
        server.port().idle();
    }
}

/// A fault: a log line, then (under QEMU) exit 1; on the board, halt for the debugger.
#[exception]
unsafe fn HardFault(frame: &ExceptionFrame) -> ! {
    defmt::error!("HardFault at pc {=u32:#010x}", frame.pc());
    #[cfg(feature = "qemu")]
    microlm_board::host::exit(false);
    #[cfg(not(feature = "qemu"))]
    loop {
        cortex_m::asm::bkpt();
    }
}
