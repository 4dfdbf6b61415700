//! Logging setup: tracing-subscriber to stderr, human-readable text or one JSON object per
//! line, filtered by the `log-level` directive (already validated by [`crate::config`]).

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// The level is not a valid filter directive.
    #[error("invalid log-level {level:?}: {message}")]
    Filter {
        /// The directive given.
        level: String,
        /// The parser's message.
        message: String,
    },
    /// A global subscriber was already installed.
    #[error("cannot install the log subscriber: {0}")]
    Install(String),
}

/// Installs the global subscriber: `format` output to stderr, filtered by `level` (`info`,
/// `info,kubescaler=debug`...). Stdout stays free for command output such as `check-config`.
pub fn init(format: LogFormat, level: &str) -> Result<(), LoggingError> {
    let filter = EnvFilter::try_new(level).map_err(|e| LoggingError::Filter {
        level: level.to_string(),
        message: e.to_string(),
    })?;
    // Colours only on a terminal: a log file or collector would get escape codes.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    installed.map_err(|e| LoggingError::Install(e.to_string()))
}
