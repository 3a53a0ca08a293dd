fn main() -> std::process::ExitCode {
    genboot::cli::main()
}
