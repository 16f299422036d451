use std::process::ExitCode;

/// jemalloc rather than the system allocator: records are allocated on one
/// thread (the fetch, the plugin call) and freed on another (the delivery
/// report), the pattern glibc's malloc handles worst; its malloc and free
/// were a quarter of a stage's CPU time in the profile (README, Benchmarks).
/// mimalloc was tried too: it kept taking fresh pages from the kernel.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    sluice::cli::main()
}
