//! The `credproxy` binary: parse the command line and hand over to [`credproxy::cli`].

#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    credproxy::cli::main()
}
