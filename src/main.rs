fn main() -> std::process::ExitCode {
    textcredits::cli::main()
}
