#![forbid(unsafe_code)]

// The gateway allocates per request (headers, bodies, futures); mimalloc measured faster than
// glibc's allocator on that path (see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    sluice::cli::main()
}
