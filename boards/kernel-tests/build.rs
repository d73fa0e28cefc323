//! Links with the mps2-an386 board's memory.x (the machine these tests run on).

fn main() {
    microlm_build_support::link_memory_x("../qemu-mps2-an386/memory.x");
}
