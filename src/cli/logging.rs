//! The service log: `tracing` events written by `tracing-subscriber`, set up here by the
//! command line (the library layers only emit events; none installs anything global).
//!
//! The log goes to **stderr**, beside the operator lines the commands print there (the
//! address, pins, warnings): stdout stays for what a script captures, such as the
//! security-officer token `up` shows once, which must never be mixed with the log.
//! `--log-format auto` (the default) writes JSON lines when stderr is not a terminal (a
//! supervisor, a container runtime, a file) and readable text on a terminal; `json` and
//! `text` force one, `off` writes no log at all. `MPCP_PA_LOG` takes an `EnvFilter`
//! directive; the default `warn,mpcp_pa=info` keeps the dependencies (hyper, h2, rustls)
//! at warnings, so that nothing they might trace about a connection reaches the log.

use std::io::IsTerminal;

use clap::ValueEnum;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// The environment variable holding the log filter.
pub const FILTER_ENV: &str = "MPCP_PA_LOG";

/// The default filter of `serve` and `up`.
pub const DEFAULT_FILTER: &str = "warn,mpcp_pa=info";

/// How `serve` and `up` write their log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum LogFormat {
    /// JSON lines when stderr is not a terminal, text on a terminal.
    #[default]
    Auto,
    /// One JSON object per line.
    Json,
    /// Readable text.
    Text,
    /// No log.
    Off,
}

impl LogFormat {
    /// Whether this format writes JSON, given whether stderr is a terminal.
    pub fn json(self, terminal: bool) -> bool {
        match self {
            LogFormat::Json => true,
            LogFormat::Text | LogFormat::Off => false,
            LogFormat::Auto => !terminal,
        }
    }
}

/// Installs the log of `serve` / `up` in `format` on stderr, filtered by `MPCP_PA_LOG` or
/// `default`. A second call changes nothing.
pub fn init(format: LogFormat, default: &str) {
    if format == LogFormat::Off {
        return;
    }
    let filter = EnvFilter::try_from_env(FILTER_ENV).unwrap_or_else(|_| EnvFilter::new(default));
    let terminal = std::io::stderr().is_terminal();
    install(format.json(terminal), terminal, filter, std::io::stderr);
}

/// Installs the process's log: JSON lines or text (ANSI colours only on a `terminal`),
/// filtered by `filter`, written to `writer`. A second call changes nothing.
pub fn install<W>(json: bool, terminal: bool, filter: EnvFilter, writer: W)
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    // Already installed (a second call): the first one stays.
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(format_layer(json, terminal, writer))
        .try_init();
}

/// The log's formatting layer, as `serve` and `up` write it: one JSON object per line
/// (event fields at the top level, the request span's fields under `span`) or text. The
/// benchmark installs it over its own filter to measure what the log costs.
pub fn format_layer<S, W>(json: bool, ansi: bool, writer: W) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_target(false);
    if json {
        layer
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .boxed()
    } else {
        layer.with_ansi(ansi).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_is_json_off_a_terminal() {
        assert!(LogFormat::Auto.json(false));
        assert!(!LogFormat::Auto.json(true));
        assert!(LogFormat::Json.json(true));
        assert!(!LogFormat::Text.json(false));
    }
}
