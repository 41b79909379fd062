//! `anodet serve`: flags → checked serve params → the library's HTTP service.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};

use super::RuntimeArgs;
use anodet::serve::{self, ByteSize, ModelSource, ServeParams, Token};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Run folder written by `anodet fit` (default: the latest fit, looked up again at each
    /// reload).
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// Address and port to listen on; port 0 picks a free one. Listening beyond loopback
    /// (e.g. 0.0.0.0:8080) should go with --token-file.
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR:PORT")]
    pub listen: SocketAddr,
    /// File whose first line is the bearer token every route but /healthz then requires
    /// (at least 16 printable characters).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Most images in one forward pass (requests arriving together share it), 1-256.
    #[arg(long, default_value_t = 16)]
    pub max_batch: usize,
    /// Longest wait, after the first image of a batch, for others to join it (0-1000 ms).
    #[arg(long, default_value_t = 5)]
    pub max_wait_ms: u64,
    /// Images that may wait for the network besides the batch being computed; more get 503
    /// with Retry-After.
    #[arg(long, default_value_t = 256)]
    pub queue: usize,
    /// Largest request body, e.g. 32MiB, 512KiB, 65536; larger ones get 413.
    #[arg(long, default_value = "32MiB", value_parser = super::parse::<ByteSize>)]
    pub max_body: ByteSize,
    /// Longest time a request may take, upload included (seconds); slower ones get 408.
    #[arg(long, default_value_t = 30)]
    pub request_timeout: u64,
    /// Longest time a client may take to send its request headers (seconds).
    #[arg(long, default_value_t = 10)]
    pub header_timeout: u64,
    /// On SIGTERM/SIGINT, longest wait for requests in flight (seconds).
    #[arg(long, default_value_t = 60)]
    pub drain_timeout: u64,
    /// Do not open the run's anomaly maps (POST /v1/heatmap then answers 409).
    #[arg(long)]
    pub no_maps: bool,
    /// Log format on stderr (the level comes from ANODET_LOG, e.g. info, warn, debug).
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

pub fn run(args: ServeArgs) -> anyhow::Result<i32> {
    init_logging(args.log_format);
    let token = args.token_file.as_deref().map(Token::from_file).transpose()?.map(Arc::new);
    let params = ServeParams {
        model: match &args.model {
            Some(dir) => ModelSource::Dir(dir.clone()),
            None => ModelSource::Latest(super::runs_root()),
        },
        listen: args.listen,
        token,
        max_batch: args.max_batch,
        max_wait: Duration::from_millis(args.max_wait_ms),
        queue: args.queue,
        max_body: args.max_body.0,
        request_timeout: Duration::from_secs(args.request_timeout),
        header_timeout: Duration::from_secs(args.header_timeout),
        drain_timeout: Duration::from_secs(args.drain_timeout),
        maps: !args.no_maps,
        runtime: args.runtime.runtime(),
    };
    serve::run(params, |address| {
        // The one line on stdout: where to reach the service (port 0 picks one).
        let _ = super::output::line(&format!("listening on http://{address}"));
    })?;
    Ok(0)
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("ANODET_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Text => builder.with_target(false).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
