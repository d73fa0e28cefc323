//! Host stand-ins for a board's link parts: flash memory, serial port and
//! arena, for the link tests and the link fuzz target.

use std::collections::VecDeque;

use microlm_link::ramflash::RamFlash;
use microlm_link::server::{Arena, BoardInfo, Port, Server};

/// Flash backing memory, 4-byte aligned as a board's flash is.
#[derive(Debug)]
pub struct Mem(pub Vec<u32>);

impl AsRef<[u8]> for Mem {
    fn as_ref(&self) -> &[u8] {
        bytemuck::cast_slice(&self.0)
    }
}

impl AsMut<[u8]> for Mem {
    fn as_mut(&mut self) -> &mut [u8] {
        bytemuck::cast_slice_mut(&mut self.0)
    }
}

/// Erased flash of `bytes` bytes.
pub fn blank_flash(bytes: usize) -> RamFlash<Mem> {
    RamFlash::new(Mem(vec![u32::MAX; bytes / 4]))
}

/// A serial port whose received bytes are queued by the test and whose sent
/// bytes are collected.
#[derive(Debug, Default)]
pub struct TestPort {
    /// Bytes the device will read.
    pub input: VecDeque<u8>,
    /// Bytes the device sent.
    pub output: Vec<u8>,
    /// Reset requests seen.
    pub resets: u32,
}

impl Port for TestPort {
    fn read(&mut self) -> Option<u8> {
        self.input.pop_front()
    }
    fn write(&mut self, bytes: &[u8]) {
        self.output.extend_from_slice(bytes);
    }
    fn reset(&mut self) {
        self.resets += 1;
    }
}

/// An arena of at most `limit` bytes from the host heap.
#[derive(Debug)]
pub struct VecArena {
    buf: Vec<u64>,
    /// Largest arena handed out.
    pub limit: usize,
}

impl VecArena {
    /// An arena that hands out at most `limit` bytes.
    pub fn new(limit: usize) -> Self {
        VecArena { buf: Vec::new(), limit }
    }
}

impl Arena for VecArena {
    fn resize(&mut self, bytes: usize) -> Option<&mut [u8]> {
        if bytes > self.limit {
            return None;
        }
        self.buf = vec![0; bytes.div_ceil(8)];
        Some(&mut bytemuck::cast_slice_mut(&mut self.buf)[..bytes])
    }
    fn free_bytes(&self) -> usize {
        self.limit
    }
}

/// The server the link tests drive.
pub type TestServer = Server<RamFlash<Mem>, VecArena, TestPort>;

/// What the test "board" reports.
pub const INFO: BoardInfo = BoardInfo { firmware: "test 0", board: "host", flash_bytes: 1 << 21, ram_bytes: 1 << 20 };

/// A server over `flash` with a 1 MiB arena.
pub fn server(flash: RamFlash<Mem>) -> TestServer {
    Server::new(Some(flash), None, VecArena::new(1 << 20), TestPort::default(), INFO)
}
