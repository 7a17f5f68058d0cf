//! The `retailflow` binary: parses the command line and hands over to the library.

/// mimalloc instead of glibc's malloc: the data path allocates on one thread and frees on
/// another all day, which glibc answers with arena locks and heap trimming that stall every
/// thread of the process, the API's included.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    retailflow::memory::keep_freed_memory();
    retailflow::cli::main()
}
