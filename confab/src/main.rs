//! The `confab` command line: `confab dev` and `confab geo check`.

use clap::{Parser, Subcommand};
use confab::config::NodeConfig;
use confab::dev::{DevNode, DevOptions};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "confab", version, about = "confab: real-time team messaging")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run edge and core in one process (HTTPS, WSS and HTTP/3), on embedded storage unless
    /// a config file or a CONFAB_*_BACKEND variable names other engines.
    ///
    /// Environment: CONFAB_STORE_BACKEND, CONFAB_CASSANDRA_NODES (comma list),
    /// CONFAB_CASSANDRA_KEYSPACE, CONFAB_PRESENCE_BACKEND, CONFAB_REDIS_URL,
    /// CONFAB_FANOUT_BACKEND, CONFAB_EVENT_LOG_BACKEND, CONFAB_KAFKA_BROKERS. Each overrides
    /// the file's value; an address variable alone never switches a backend.
    Dev {
        /// Backends TOML file: sections [store], [presence], [fanout], [event_log].
        #[arg(long, env = "CONFAB_CONFIG")]
        config: Option<PathBuf>,
        /// Where messages, metadata, keys and the local CA live.
        #[arg(long, env = "CONFAB_DATA_DIR", default_value = "./confab-data")]
        data_dir: PathBuf,
        /// TCP address for HTTPS/WSS; HTTP/3 uses the same UDP port.
        #[arg(long, env = "CONFAB_LISTEN", default_value = "127.0.0.1:8443")]
        listen: SocketAddr,
        /// Refuse `POST /v1/teams` (teams are then created by an operator).
        #[arg(long)]
        no_team_creation: bool,
    },
    /// Deployment topology files.
    Geo {
        #[command(subcommand)]
        command: GeoCommand,
    },
}

#[derive(Subcommand)]
enum GeoCommand {
    /// Validate a geo-config TOML file.
    Check { file: PathBuf },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,pingora=warn")),
        )
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Dev {
            config,
            data_dir,
            listen,
            no_team_creation,
        } => {
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(runtime) => runtime,
                Err(error) => {
                    eprintln!("confab: cannot start the runtime: {error}");
                    return ExitCode::FAILURE;
                }
            };
            let mut options = DevOptions::new(data_dir, listen);
            options.allow_team_creation = !no_team_creation;
            let file = match config.as_deref().map(NodeConfig::load).transpose() {
                Ok(file) => file.unwrap_or_default(),
                Err(error) => {
                    eprintln!("confab dev: {error}");
                    return ExitCode::FAILURE;
                }
            };
            let backends = file
                .apply_env(|name| std::env::var(name).ok())
                .and_then(|config| config.backends(&options.data_dir, options.sync));
            match backends {
                Ok(backends) => {
                    // Stated up front so an operator sees which engines this node
                    // writes to before anything is written (URL passwords masked).
                    println!("confab dev backends:");
                    for line in backends.describe().lines() {
                        println!("  {line}");
                    }
                    options.backends = Some(backends);
                }
                Err(error) => {
                    eprintln!("confab dev: {error}");
                    return ExitCode::FAILURE;
                }
            }
            runtime.block_on(run_dev(options))
        }
        Command::Geo {
            command: GeoCommand::Check { file },
        } => geo_check(&file),
    }
}

async fn run_dev(options: DevOptions) -> ExitCode {
    let node = match DevNode::start(options).await {
        Ok(node) => node,
        Err(error) => {
            eprintln!("confab dev: {error}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "confab dev listening on https://{0} (WSS wss://{0}/v1/rtm, HTTP/3 udp {0})",
        node.addr
    );
    println!("trust the local CA at {}", node.ca_path.display());
    wait_for_stop_signal().await;
    tracing::info!("stopping: draining connections");
    node.shutdown(Duration::from_secs(10)).await;
    ExitCode::SUCCESS
}

async fn wait_for_stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the only stop is a kill; run until then.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

fn geo_check(file: &std::path::Path) -> ExitCode {
    let config = match confab_geo_config::load(file) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("{}: {error}", file.display());
            return ExitCode::FAILURE;
        }
    };
    match config.validate() {
        Ok(()) => {
            println!("{}: ok", file.display());
            ExitCode::SUCCESS
        }
        Err(issues) => {
            for issue in issues {
                eprintln!("{}: {issue}", file.display());
            }
            ExitCode::FAILURE
        }
    }
}
