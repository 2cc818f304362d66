//! The `natfw` command line. Thin: everything lives in the libraries.

fn main() {
    std::process::exit(natfw_gateway::cli::main());
}
