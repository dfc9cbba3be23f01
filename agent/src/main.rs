//! `ferry-agent --config FILE`

use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use ferry_agent::postgres::PostgresSource;
use ferry_sdk::runtime::Agent;
use tokio_util::sync::CancellationToken;

/// Ferry's PostgreSQL agent: runs next to the database, dials out to the
/// control plane over mTLS and streams documents.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// YAML configuration file (optional when the environment has it all:
    /// FERRY_CONTROL_PLANE_URL, FERRY_TLS_CA, FERRY_TLS_CERT, FERRY_TLS_KEY,
    /// FERRY_CONNECTOR_ID; any key also as FERRY_ + path with "__").
    #[arg(long, short)]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        // Colours only on a terminal: a log file or journald gets plain text.
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stdout()) && std::env::var_os("NO_COLOR").is_none(),
        )
        .init();
    let args = Args::parse();
    let config =
        match ferry_agent::config::load_config(args.config.as_deref(), &ferry_sdk::settings::process_env()) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("ferry-agent: {e}");
                std::process::exit(2);
            }
        };
    let settings = config.agent;
    tracing::info!(url = %settings.control_plane_url, connectors = settings.connectors.len(), "starting agent");
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received: stopping"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received: stopping"),
        }
        token.cancel();
    });
    let agent = Agent::new(settings, vec![Arc::new(PostgresSource::with_limits(config.postgresql))]);
    if let Err(e) = agent.run(shutdown).await {
        eprintln!("ferry-agent: {e}");
        std::process::exit(2);
    }
    Ok(())
}
