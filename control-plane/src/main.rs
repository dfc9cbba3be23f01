//! `ferry-control-plane --config FILE` runs the control plane;
//! `ferry-control-plane certs init|agent` makes development certificates.

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
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Certificates for development and small deployments, without openssl.
    #[command(subcommand)]
    Certs(Certs),
}

#[derive(clap::Subcommand)]
enum Certs {
    /// Makes a CA (ca.pem, ca-key.pem) and the control plane's server
    /// certificate (server.pem, server-key.pem) in DIR. The CA also signs
    /// agent certificates: use ca.pem as agents.tls.client_ca.
    Init {
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// A DNS name or IP address agents use to reach the control plane;
        /// repeat for several (default: localhost and 127.0.0.1).
        #[arg(long = "host")]
        hosts: Vec<String>,
        /// Validity of the server certificate.
        #[arg(long, default_value_t = 365)]
        days: u32,
        /// Replace existing files (agents trusting the old CA are refused).
        #[arg(long)]
        force: bool,
    },
    /// Signs a client certificate for agent ID (its Subject CN) with the CA
    /// in DIR; writes OUT/ID.pem and OUT/ID-key.pem.
    Agent {
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        #[arg(long)]
        id: String,
        /// Where to write the files (default: DIR).
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long, default_value_t = 90)]
        days: u32,
        #[arg(long)]
        force: bool,
    },
}

fn certs(cmd: Certs) -> Result<(), ferry_control_plane::pki::PkiError> {
    use ferry_control_plane::pki;
    match cmd {
        Certs::Init { dir, hosts, days, force } => {
            let out = pki::init(&pki::InitOptions { dir, hosts, days, force })?;
            println!("CA certificate:     {}", out.ca.display());
            println!(
                "CA key:             {} (keep it secret; it signs agent certificates)",
                out.ca_key.display()
            );
            println!("server certificate: {}", out.server_cert.display());
            println!("server key:         {}", out.server_key.display());
            println!("CA fingerprint:     sha256:{}", out.ca_fingerprint);
            println!();
            println!("control plane configuration:");
            println!(
                "  agents:\n    tls:\n      cert: {}\n      key: {}\n      client_ca: {}",
                out.server_cert.display(),
                out.server_key.display(),
                out.ca.display()
            );
        }
        Certs::Agent { dir, id, out, days, force } => {
            let out_dir = out.unwrap_or_else(|| dir.clone());
            let a = pki::issue_agent(&dir, &id, &out_dir, days, force)?;
            println!("agent certificate: {} (CN={id})", a.cert.display());
            println!("agent key:         {}", a.key.display());
            println!(
                "agent configuration: control_plane.tls: {{ca: {}, cert: {}, key: {}}}",
                dir.join("ca.pem").display(),
                a.cert.display(),
                a.key.display()
            );
        }
    }
    Ok(())
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
    if let Some(Command::Certs(cmd)) = args.command {
        if let Err(e) = certs(cmd) {
            eprintln!("ferry-control-plane certs: {e}");
            std::process::exit(1);
        }
        return Ok(());
    }
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
