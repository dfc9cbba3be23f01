//! `ferry-control-plane --config FILE`

use std::path::PathBuf;

use clap::Parser;
use tokio_util::sync::CancellationToken;

/// Ferry's control plane: keeps connectors and sync jobs in Elasticsearch,
/// serves agents over mTLS and operators over the admin API.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// YAML configuration file. Every key can also be set from the
    /// environment: FERRY_ + the key path upper-cased, joined with "__"
    /// (e.g. FERRY_ELASTICSEARCH__HOST).
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
        .init();
    let args = Args::parse();
    let config = match ferry_control_plane::config::load(
        args.config.as_deref(),
        &ferry_sdk::settings::process_env(),
    ) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ferry-control-plane: {e}");
            std::process::exit(2);
        }
    };
    let shutdown = CancellationToken::new();
    let signal_token = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        signal_token.cancel();
    });
    if let Err(e) = ferry_control_plane::server::run(config, shutdown).await {
        tracing::error!("{e}");
        eprintln!("ferry-control-plane: {e}");
        std::process::exit(1);
    }
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}
