//! What a board needs to serve the host link (`microlm-link`): the run-time
//! arena over `embedded-alloc`, the interrupt-fed receive ring ([`RxRing`]),
//! the CMSDK APB UART of the Arm MPS2 machines, and [`serve`], the loop every
//! link firmware ends in.
//!
//! The arena: a firmware that takes models over the link cannot size its
//! arena at build time, so the free RAM is an `embedded-alloc` heap
//! ([`init_heap`]) and each generation whose (model, ctx, kv) needs another
//! size frees the old arena and allocates exactly `Model::plan(ctx, kv).total`
//! bytes. The runtime itself never allocates.
//!
//! Receiving: a token takes milliseconds to seconds of computation, and a UART
//! holds one byte (CMSDK) or one byte plus the shift register (STM32 USART),
//! so a firmware that read the UART only between tokens would lose what the
//! host sends meanwhile (a `Cancel`, the next request). The UART's receive
//! interrupt therefore moves every byte into a [`heapless::spsc::Queue`] of
//! [`RX_RING`] bytes as it arrives ([`rx_push`], the producer, in the
//! interrupt handler), and the link server's [`Port::read`] takes them from
//! there ([`RxRing`], the consumer) whenever it gets to them. A byte that
//! finds the ring full is dropped and counted ([`rx_dropped`]); the frame it
//! belonged to then fails its CRC and gets an `Error { kind: Frame }` reply.

extern crate alloc;

use alloc::vec::Vec;
use core::cell::RefCell;
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicI32, AtomicU32, AtomicUsize, Ordering};

use critical_section::Mutex;
use heapless::spsc::{Consumer, Producer, Queue};
use microlm_link::server::Port;

use embedded_alloc::LlffHeap as Heap;
use microlm_link::server::Arena;

#[global_allocator]
static HEAP: Heap = Heap::empty();

/// Hands `memory` to the heap; call once, before the first generation.
pub fn init_heap(memory: &'static mut [MaybeUninit<u8>]) {
    // SAFETY: called once at boot with memory nothing else uses ('static, exclusive).
    unsafe { HEAP.init(memory.as_mut_ptr() as usize, memory.len()) }
}

/// The arena from the heap: one `Vec<u32>` (4-byte aligned), replaced on resize.
#[derive(Debug, Default)]
pub struct HeapArena {
    words: Vec<u32>,
    bytes: usize,
}

impl Arena for HeapArena {
    fn resize(&mut self, bytes: usize) -> Option<&mut [u8]> {
        if bytes != self.bytes || self.words.is_empty() {
            // Free first, so the new arena can reuse the same RAM.
            self.words = Vec::new();
            self.bytes = 0;
            let mut words = Vec::new();
            words.try_reserve_exact(bytes.div_ceil(4)).ok()?;
            words.resize(bytes.div_ceil(4), 0);
            self.words = words;
            self.bytes = bytes;
        }
        let all: &mut [u8] = bytemuck::cast_slice_mut(&mut self.words);
        all.get_mut(..bytes)
    }

    fn free_bytes(&self) -> usize {
        HEAP.free() + self.words.len() * 4
    }
}

/// Size of the receive ring in bytes (the queue holds `RX_RING - 1`): room for
/// a whole [`microlm_link::MAX_FRAME`] frame and more while a token computes.
pub const RX_RING: usize = 1024;

/// The producer end of the ring, used by the receive interrupt only.
static RX_PRODUCER: Mutex<RefCell<Option<Producer<'static, u8, RX_RING>>>> = Mutex::new(RefCell::new(None));
/// Bytes dropped because the ring was full.
static RX_DROPPED: AtomicU32 = AtomicU32::new(0);

/// The consumer end of the receive ring: what the link server reads.
pub struct RxRing {
    consumer: Consumer<'static, u8, RX_RING>,
}

impl core::fmt::Debug for RxRing {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RxRing").field("waiting", &self.consumer.len()).finish()
    }
}

impl RxRing {
    /// Creates the ring and hands its producer end to [`rx_push`]; `None`
    /// when called a second time.
    pub fn take() -> Option<RxRing> {
        let queue: &'static mut Queue<u8, RX_RING> = cortex_m::singleton!(: Queue<u8, RX_RING> = Queue::new())?;
        let (producer, consumer) = queue.split();
        critical_section::with(|cs| *RX_PRODUCER.borrow_ref_mut(cs) = Some(producer));
        Some(RxRing { consumer })
    }

    /// The oldest received byte not yet read.
    pub fn pop(&mut self) -> Option<u8> {
        self.consumer.dequeue()
    }

    /// Sleeps (`wfi`) until the next interrupt if no byte is waiting. The
    /// check and the sleep run with interrupts masked, so a byte arriving
    /// between them still wakes the core (a pending interrupt ends `wfi`).
    pub fn wait(&mut self) {
        cortex_m::interrupt::free(|_| {
            if !self.consumer.ready() {
                cortex_m::asm::wfi();
            }
        });
    }
}

/// Queues one received byte (call from the UART's receive interrupt handler).
/// Before [`RxRing::take`], or with the ring full, the byte is dropped and counted.
pub fn rx_push(byte: u8) {
    let queued =
        critical_section::with(|cs| RX_PRODUCER.borrow_ref_mut(cs).as_mut().is_some_and(|p| p.enqueue(byte).is_ok()));
    if !queued {
        RX_DROPPED.fetch_add(1, Ordering::Relaxed);
    }
}

/// Bytes dropped so far because the ring was full.
pub fn rx_dropped() -> u32 {
    RX_DROPPED.load(Ordering::Relaxed)
}

/// The CMSDK UART whose receive interrupt feeds the ring: its base address
/// (0 = none) and its interrupt number (-1 = none), for [`on_interrupt`].
static IRQ_UART: AtomicUsize = AtomicUsize::new(0);
static IRQ_NUMBER: AtomicI32 = AtomicI32::new(-1);

/// Serves interrupt `irqn` if it is the receive interrupt registered by
/// [`CmsdkUart::listen_rx`]; false otherwise. The firmwares without a device
/// crate route every interrupt to cortex-m-rt's `DefaultHandler`, which calls this.
pub fn on_interrupt(irqn: i16) -> bool {
    if i32::from(irqn) != IRQ_NUMBER.load(Ordering::Acquire) {
        return false;
    }
    let mut uart = CmsdkUart { base: IRQ_UART.load(Ordering::Acquire) };
    uart.drain_rx();
    true
}

/// An external interrupt number for the NVIC.
#[derive(Clone, Copy, Debug)]
struct Irq(u16);

// SAFETY: `Irq` is built only from a board's documented interrupt number
// (below the NVIC's 496), which is what `number` returns.
unsafe impl cortex_m::interrupt::InterruptNumber for Irq {
    fn number(self) -> u16 {
        self.0
    }
}

/// The CMSDK APB UART (Arm DDI0479C), as on the MPS2 machines: 8N1, transmit
/// polled, receive polled ([`CmsdkUart::try_read`]) or through its receive
/// interrupt into the [`RxRing`] ([`CmsdkUart::listen_rx`]).
#[derive(Debug)]
pub struct CmsdkUart {
    base: usize,
}

impl CmsdkUart {
    const DATA: usize = 0x00;
    const STATE: usize = 0x04;
    const CTRL: usize = 0x08;
    /// INTSTATUS on read, INTCLEAR (write 1 to clear) on write.
    const INTCLEAR: usize = 0x0C;
    const BAUDDIV: usize = 0x10;
    const TXFULL: u32 = 1 << 0;
    const RXFULL: u32 = 1 << 1;
    const TX_EN: u32 = 1 << 0;
    const RX_EN: u32 = 1 << 1;
    const RX_INTEN: u32 = 1 << 3;
    const RX_INT: u32 = 1 << 1;

    /// Enables transmit and receive at `pclk / baud`.
    ///
    /// # Safety
    /// `base` is the address of a CMSDK APB UART that nothing else drives.
    pub unsafe fn new(base: usize, pclk: u32, baud: u32) -> CmsdkUart {
        let u = CmsdkUart { base };
        u.write_reg(Self::BAUDDIV, (pclk / baud).max(16));
        u.write_reg(Self::CTRL, Self::TX_EN | Self::RX_EN);
        u
    }

    /// Turns on the receive interrupt, number `irqn` on the NVIC (UART0 on
    /// the MPS2 AN385/AN386 images: 0, QEMU hw/arm/mps2.c), and routes it to
    /// [`rx_push`]: from now on every received byte goes into the ring that
    /// [`RxRing::take`] made, and [`CmsdkUart::try_read`] sees nothing.
    pub fn listen_rx(&mut self, irqn: u16) {
        IRQ_UART.store(self.base, Ordering::Release);
        IRQ_NUMBER.store(i32::from(irqn), Ordering::Release);
        let ctrl = self.read_reg(Self::CTRL);
        self.write_reg(Self::CTRL, ctrl | Self::RX_INTEN);
        // A byte that arrived before the interrupt was enabled raised none.
        self.drain_rx();
        // SAFETY: the handler (`on_interrupt`) takes only the ring's producer
        // end, behind a critical section, and this UART's receive registers,
        // which the main program no longer reads; no critical section of the
        // main program relies on this interrupt being masked.
        unsafe { cortex_m::peripheral::NVIC::unmask(Irq(irqn)) }
    }

    /// Clears the receive interrupt, then moves every waiting byte into the
    /// ring (a byte arriving after the clear raises the interrupt again).
    fn drain_rx(&mut self) {
        self.write_reg(Self::INTCLEAR, Self::RX_INT);
        while let Some(b) = self.try_read() {
            rx_push(b);
        }
    }

    fn read_reg(&self, off: usize) -> u32 {
        // SAFETY: `new`'s contract: a UART register block at `base`.
        unsafe { core::ptr::read_volatile((self.base + off) as *const u32) }
    }

    fn write_reg(&self, off: usize, v: u32) {
        // SAFETY: as in `read_reg`.
        unsafe { core::ptr::write_volatile((self.base + off) as *mut u32, v) }
    }

    /// The received byte, if one is waiting.
    pub fn try_read(&mut self) -> Option<u8> {
        (self.read_reg(Self::STATE) & Self::RXFULL != 0).then(|| self.read_reg(Self::DATA) as u8)
    }

    /// Sends `bytes`, waiting for room before each.
    pub fn write_all(&mut self, bytes: &[u8]) {
        for &b in bytes {
            while self.read_reg(Self::STATE) & Self::TXFULL != 0 {}
            self.write_reg(Self::DATA, u32::from(b));
        }
    }
}

/// A serial port for the link server: a CMSDK UART that transmits, the
/// [`RxRing`] its receive interrupt fills, the board's instruction counter
/// and stack measurement.
#[derive(Debug)]
pub struct UartPort {
    /// The UART (transmit; receive runs in its interrupt, see [`CmsdkUart::listen_rx`]).
    pub uart: CmsdkUart,
    /// What the receive interrupt queued.
    pub rx: RxRing,
    /// SysTick instruction counter.
    pub counter: crate::measure::Counter<'static>,
}

impl Port for UartPort {
    fn read(&mut self) -> Option<u8> {
        self.rx.pop()
    }
    fn write(&mut self, bytes: &[u8]) {
        self.uart.write_all(bytes);
    }
    fn counter(&mut self) -> u64 {
        self.counter.instructions()
    }
    fn stack_peak(&mut self) -> u32 {
        crate::measure::stack_peak() as u32
    }
    fn reset(&mut self) {
        cortex_m::peripheral::SCB::sys_reset()
    }
    fn idle(&mut self) {
        self.rx.wait();
    }
}

/// Serves the link forever, letting the port sleep ([`Port::idle`]) whenever
/// no byte is waiting.
pub fn serve<F, A, P>(mut server: microlm_link::server::Server<F, A, P>) -> !
where
    F: embedded_storage::nor_flash::NorFlash + microlm_link::ramflash::Mapped,
    A: Arena,
    P: Port,
{
    loop {
        server.poll();
        server.port().idle();
    }
}
