//! The `locus` binary: reads the configuration, sets up logging, and runs the server.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// Locus realtime engine.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file; every key can also be set as LOCUS_<SECTION>__<KEY>.
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (path, required) = match cli.config {
        Some(p) => (p, true),
        None => (PathBuf::from("config.toml"), false),
    };
    let config = match locus::Config::load(&path, required) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("locus: {e}");
            return ExitCode::from(2);
        }
    };
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.server.log));
    tracing_subscriber::fmt().with_env_filter(filter).init();
    match actix_web::rt::System::new().block_on(locus::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "locus stopped with an error");
            ExitCode::FAILURE
        }
    }
}
