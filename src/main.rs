//! The `rulebridge` binary: all behaviour lives in the library (`rulebridge::cli`).

fn main() -> std::process::ExitCode {
    rulebridge::cli::main()
}
