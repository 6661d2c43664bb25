//! Start-up: read `.env`, parse the configuration, set up logging, bind, serve.

use clap::Parser;
use text_session_api::config::Config;
use text_session_api::server::Server;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

/// jemalloc: about a sixth less CPU per turn than the system allocator under load, with
/// memory per stored message and idle memory about the same (BENCHMARKS.md).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let _ = dotenvy::dotenv();
    let config = Config::parse();
    init_logging(&config);
    match run(config).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("text-session-api: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Text or JSON lines on stderr, filtered by `RUST_LOG` (default `info`). JSON lines
/// carry the fields of their spans: the request id, the session id, the turn id.
fn init_logging(config: &Config) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if config.log_format == "json" {
        builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .init();
    } else {
        builder.init();
    }
}

async fn run(config: Config) -> Result<(), Box<dyn std::error::Error>> {
    let server = Server::build(&config).await?;
    let listener = TcpListener::bind(config.bind).await?;
    let providers = &server.state().providers;
    println!(
        "text-session-api listening on http://{} (providers: {}; default: {}; store: {})",
        listener.local_addr()?,
        providers.names().collect::<Vec<_>>().join(", "),
        providers.default_name(),
        config.store,
    );
    server.serve(listener, shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => {
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
    tracing::info!("signal received");
}
