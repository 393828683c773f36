//! The `healthset-responder` binary: parse the command line, run it, map the result to an exit code.

/// mimalloc, not the system allocator: a delivery's buffers are allocated on the async workers and freed on the
/// store's writer thread, which the system allocator answers with lock traffic and consolidation work.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    healthset_responder::cli::main()
}
