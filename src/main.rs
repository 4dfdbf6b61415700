//! The `kubescaler` binary: parses the command line, loads and validates the configuration,
//! then runs the daemon or the requested subcommand.
//!
//! Exit codes: 0 success; 1 the daemon (or its runtime) failed; 2 invalid command line or
//! configuration.

use std::process::ExitCode;

use clap::Parser;

use kubescaler::cli::{Cli, Command};
use kubescaler::config::{self, ConfigSources, LogFormat};
use kubescaler::{logging, scaler};

/// Exit code of a daemon failure.
const EXIT_FAILURE: u8 = 1;
/// Exit code of an invalid configuration (clap uses 2 for a bad command line too).
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    // Exits 2 on a bad command line, 0 for --help and --version.
    let cli = Cli::parse();
    let sources = ConfigSources::from_cli(&cli);
    match cli.command() {
        Command::CheckConfig => check_config(&sources),
        Command::Run => run(&sources),
        Command::Simulate(args) => kubescaler::simulate::main(&args, &sources),
        Command::Explain(args) => explain(&sources, &args),
    }
}

/// One read-only pass, printed (exit 0), or why it could not be made (exit 1).
fn explain(sources: &ConfigSources, args: &kubescaler::cli::ExplainArgs) -> ExitCode {
    let config = match config::load(sources) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // Logs go to stderr; warnings only, so the table stays readable.
    if let Err(e) = logging::init(LogFormat::Text, "warn") {
        eprintln!("kubescaler: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    let Some(runtime) = runtime() else {
        return ExitCode::from(EXIT_FAILURE);
    };
    match runtime.block_on(scaler::explain_once(config)) {
        Ok(plan) => {
            match args.output {
                kubescaler::cli::ExplainOutput::Text => {
                    print!("{}", kubescaler::explain::render(&plan))
                }
                kubescaler::cli::ExplainOutput::Json => match serde_json::to_string_pretty(&plan) {
                    Ok(json) => println!("{json}"),
                    Err(e) => {
                        eprintln!("kubescaler: {e}");
                        return ExitCode::from(EXIT_FAILURE);
                    }
                },
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kubescaler: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// Prints the effective configuration (token redacted, each key with its source) or every
/// problem.
fn check_config(sources: &ConfigSources) -> ExitCode {
    match config::load_with_origins(sources) {
        Ok(loaded) => {
            print!("{}", loaded.to_annotated_yaml());
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

fn run(sources: &ConfigSources) -> ExitCode {
    let config = match config::load(sources) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Err(e) = logging::init(config.log_format, &config.log_level) {
        eprintln!("kubescaler: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    let Some(runtime) = runtime() else {
        return ExitCode::from(EXIT_FAILURE);
    };
    let json_logs = config.log_format == LogFormat::Json;
    match runtime.block_on(scaler::run_daemon(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Log collectors parse JSON lines; a text log would only repeat the stderr line.
            if json_logs {
                tracing::error!(error = %e, "kubescaler stopped");
            }
            eprintln!("kubescaler: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// The multi-threaded Tokio runtime, or `None` (said on stderr) when it cannot start.
fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => Some(runtime),
        Err(e) => {
            eprintln!("kubescaler: cannot start the async runtime: {e}");
            None
        }
    }
}
