//! The `idgate` binary: parses the command line and hands over to [`idgate::cli`].
#![forbid(unsafe_code)]

// mimalloc: within noise of the system allocator on the offline verify path (BENCHMARKS.md,
// "Allocator": 0.3% slower in the last run, rounds overlapping), kept for its per-thread heaps
// under the gateway's many small allocations; `--features system-alloc` builds the comparison.
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    idgate::cli::main()
}
