//! `hub-api`: serve (default), migrate, admin. Everything lives in the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = hub_api::config::Cli::parse();
    match hub_api::server::run_cli(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hub-api: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
