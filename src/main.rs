fn main() -> std::process::ExitCode {
    mpcp_pa::cli::main()
}
