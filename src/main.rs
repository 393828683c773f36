//! The `healthset-responder` binary: parse the command line, run it, map the result to an exit code.

fn main() -> std::process::ExitCode {
    healthset_responder::cli::main()
}
