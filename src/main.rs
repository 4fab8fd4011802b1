//! The `idgate` binary: parses the command line and hands over to [`idgate::cli`].
#![forbid(unsafe_code)]

// mimalloc: measured faster than the system allocator on the verify path (BENCHMARKS.md;
// `--features system-alloc` builds the comparison binary).
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    idgate::cli::main()
}
