/// mimalloc: the store's threads allocate and free many small rows
/// (README, "Performance").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    textcredits::cli::main()
}
