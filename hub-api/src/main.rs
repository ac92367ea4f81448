//! `hub-api`: serve (default), migrate, admin. Everything lives in the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = hub_api::config::Cli::parse();
    // Before any thread exists: the in-process worker's compute pools read these.
    let threads = cli.config.worker_threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    });
    hub_worker::engine::threads::set_env_threads(threads);
    match hub_api::server::run_cli(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hub-api: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
