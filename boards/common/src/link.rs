//! What a board needs to serve the host link (`microlm-link`): the run-time
//! arena over `embedded-alloc`, the CMSDK APB UART of the Arm MPS2 machines,
//! and [`serve`], the loop every link firmware ends in.
//!
//! The arena: a firmware that takes models over the link cannot size its
//! arena at build time, so the free RAM is an `embedded-alloc` heap
//! ([`init_heap`]) and each generation whose (model, ctx, kv) needs another
//! size frees the old arena and allocates exactly `Model::plan(ctx, kv).total`
//! bytes. The runtime itself never allocates.

extern crate alloc;

use alloc::vec::Vec;
use core::mem::MaybeUninit;

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

/// The CMSDK APB UART (Arm DDI0479C), as on the MPS2 machines: polled, 8N1.
///
/// Receive is polled between tokens. Under QEMU nothing is lost while the
/// model computes: QEMU offers the next byte only once the one-byte receive
/// buffer is read (the chardev backs up), so a socket peer simply waits.
#[derive(Debug)]
pub struct CmsdkUart {
    base: usize,
}

impl CmsdkUart {
    const DATA: usize = 0x00;
    const STATE: usize = 0x04;
    const CTRL: usize = 0x08;
    const BAUDDIV: usize = 0x10;
    const TXFULL: u32 = 1 << 0;
    const RXFULL: u32 = 1 << 1;

    /// Enables transmit and receive at `pclk / baud`.
    ///
    /// # Safety
    /// `base` is the address of a CMSDK APB UART that nothing else drives.
    pub unsafe fn new(base: usize, pclk: u32, baud: u32) -> CmsdkUart {
        let u = CmsdkUart { base };
        u.write_reg(Self::BAUDDIV, (pclk / baud).max(16));
        u.write_reg(Self::CTRL, 0b11);
        u
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

/// A serial port for the link server: a UART plus the board's instruction
/// counter and stack measurement.
#[derive(Debug)]
pub struct UartPort {
    /// The UART.
    pub uart: CmsdkUart,
    /// SysTick instruction counter.
    pub counter: crate::measure::Counter<'static>,
}

impl microlm_link::server::Port for UartPort {
    fn read(&mut self) -> Option<u8> {
        self.uart.try_read()
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
}

/// Serves the link forever.
pub fn serve<F, A, P>(mut server: microlm_link::server::Server<F, A, P>) -> !
where
    F: embedded_storage::nor_flash::NorFlash + microlm_link::ramflash::Mapped,
    A: Arena,
    P: microlm_link::server::Port,
{
    loop {
        server.poll();
    }
}
