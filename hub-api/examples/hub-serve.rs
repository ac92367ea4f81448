//! `hub-serve`: the hub library's own command line (`hub-api`'s flags and
//! subcommands) with no in-process worker, as `hub-api --no-worker` runs it.
//! It links no inference engine, so a release build for the registry
//! benchmarks (`scripts/bench/commits.sh`, `registry.sh`) compiles only the
//! hub: `cargo build --release -p hub-api --example hub-serve`, then
//! `HUB_BIN=target/release/examples/hub-serve`.

use clap::Parser;

/// The same allocator as the `hub-api` binary (`paddock/src/main.rs`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = hub_api::config::Cli::parse();
    match hub_api::server::run_cli(cli, None) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hub-serve: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
