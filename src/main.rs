//! The `retailflow` binary: parses the command line and hands over to the library.

fn main() -> std::process::ExitCode {
    retailflow::cli::main()
}
