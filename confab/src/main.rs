//! The `confab` command line: `confab dev`, the cluster roles `confab core`,
//! `confab edge` and `confab notify`, and `confab geo check|nodes`.

use clap::{Parser, Subcommand};
use confab::config::{Backends, NodeConfig};
use confab::core_node::{CoreNode, CoreOptions};
use confab::dev::{DevNode, DevOptions};
use confab::edge_node::{EdgeNode, EdgeOptions};
use confab::notify_node::{NotifyWorker, SYSTEM_CA_BUNDLE};
use confab::ops_http::OpsHttp;
use confab_store::SyncPolicy;
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
    /// Run one core node of a cluster: the chat service on shared engines (Cassandra,
    /// Redis, Kafka), serving edges and peer cores on the internal link (mutual TLS) at
    /// its geo-config address. Backends as for `dev` (--config, CONFAB_*_BACKEND).
    Core {
        /// The cluster's geo-config.
        #[arg(long, env = "CONFAB_GEO")]
        geo: PathBuf,
        /// This node's name among the geo-config's cores.
        #[arg(long)]
        node: String,
        #[arg(long, env = "CONFAB_CONFIG")]
        config: Option<PathBuf>,
        /// This node's own files (its certificate).
        #[arg(long)]
        data_dir: PathBuf,
        /// The cluster CA, shared by every node (made on first start).
        #[arg(long)]
        ca_dir: PathBuf,
        /// The token signing key, shared by every core (made on first start).
        #[arg(long)]
        keys_dir: PathBuf,
        /// How long a channel lease lasts without renewal, in milliseconds.
        #[arg(long, default_value_t = 10_000)]
        lease_ttl_ms: u64,
        /// Serve /metrics and /healthz over plain HTTP here (an internal address).
        #[arg(long)]
        ops_listen: Option<SocketAddr>,
        #[arg(long)]
        no_team_creation: bool,
    },
    /// Run one edge (PoP) of a cluster: HTTPS, WSS and HTTP/3 at its geo-config address,
    /// in front of the geo-config's cores (its own region's first).
    Edge {
        #[arg(long, env = "CONFAB_GEO")]
        geo: PathBuf,
        /// This PoP's name among the geo-config's pops.
        #[arg(long)]
        pop: String,
        /// This node's own files (its certificate).
        #[arg(long)]
        data_dir: PathBuf,
        /// The cluster CA, shared by every node.
        #[arg(long)]
        ca_dir: PathBuf,
        #[arg(long)]
        no_team_creation: bool,
    },
    /// Run a push notification worker: reads the durable event log (group `notify`) and
    /// POSTs a push for each DM and @mention to recipients who are not active, at the
    /// webhook URLs they registered. Backends as for `dev` (--config, CONFAB_*_BACKEND).
    Notify {
        #[arg(long, env = "CONFAB_CONFIG")]
        config: Option<PathBuf>,
        /// Where embedded backends live, if the config names any.
        #[arg(long, env = "CONFAB_DATA_DIR", default_value = "./confab-data")]
        data_dir: PathBuf,
        /// PEM files of the CAs `https` push sinks are checked against (repeatable);
        /// default the system bundle.
        #[arg(long)]
        push_ca: Vec<PathBuf>,
        /// Serve /metrics and /healthz over plain HTTP here (an internal address).
        #[arg(long)]
        ops_listen: Option<SocketAddr>,
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
    /// List a valid geo-config's nodes, one per line, for scripts:
    /// `core NAME REGION ADDR` and `pop NAME REGION WSS`.
    Nodes { file: PathBuf },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        // Colour codes only for a person at a terminal, not in log files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
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
            let mut options = DevOptions::new(data_dir, listen);
            options.allow_team_creation = !no_team_creation;
            match load_backends(config.as_deref(), &options.data_dir, options.sync, "dev") {
                Ok(backends) => options.backends = Some(backends),
                Err(code) => return code,
            }
            run(run_dev(options))
        }
        Command::Core {
            geo,
            node,
            config,
            data_dir,
            ca_dir,
            keys_dir,
            lease_ttl_ms,
            ops_listen,
            no_team_creation,
        } => {
            let geo = match load_geo(&geo) {
                Ok(geo) => geo,
                Err(code) => return code,
            };
            let backends =
                match load_backends(config.as_deref(), &data_dir, SyncPolicy::Fsync, "core") {
                    Ok(backends) => backends,
                    Err(code) => return code,
                };
            let mut options =
                match CoreOptions::from_geo(&geo, &node, (data_dir, ca_dir, keys_dir), backends) {
                    Ok(options) => options,
                    Err(error) => {
                        eprintln!("confab core: {error}");
                        return ExitCode::FAILURE;
                    }
                };
            options.allow_team_creation = !no_team_creation;
            options.lease_ttl = Duration::from_millis(lease_ttl_ms);
            run(async move {
                let ops = start_ops(ops_listen).await?;
                let node = CoreNode::start(options)
                    .await
                    .map_err(|e| format!("confab core: {e}"))?;
                println!(
                    "confab core {} listening on {} (internal link, mutual TLS)",
                    node.name(),
                    node.addr
                );
                wait_for_stop_signal().await;
                tracing::info!("stopping: draining calls and sequencers");
                node.shutdown(Duration::from_secs(10)).await;
                if let Some(ops) = ops {
                    ops.stop();
                }
                Ok(())
            })
        }
        Command::Edge {
            geo,
            pop,
            data_dir,
            ca_dir,
            no_team_creation,
        } => {
            let geo = match load_geo(&geo) {
                Ok(geo) => geo,
                Err(code) => return code,
            };
            let mut options = match EdgeOptions::from_geo(&geo, &pop, data_dir, ca_dir) {
                Ok(options) => options,
                Err(error) => {
                    eprintln!("confab edge: {error}");
                    return ExitCode::FAILURE;
                }
            };
            options.allow_team_creation = !no_team_creation;
            run(async move {
                let node = EdgeNode::start(options)
                    .await
                    .map_err(|e| format!("confab edge: {e}"))?;
                println!(
                    "confab edge {pop} listening on https://{} (WSS, HTTP/3 udp)",
                    node.addr
                );
                println!("trust the cluster CA at {}", node.ca_path.display());
                wait_for_stop_signal().await;
                tracing::info!("stopping: draining connections");
                node.shutdown().await;
                Ok(())
            })
        }
        Command::Notify {
            config,
            data_dir,
            push_ca,
            ops_listen,
        } => {
            let backends =
                match load_backends(config.as_deref(), &data_dir, SyncPolicy::Fsync, "notify") {
                    Ok(backends) => backends,
                    Err(code) => return code,
                };
            let ca_files = if push_ca.is_empty() {
                vec![PathBuf::from(SYSTEM_CA_BUNDLE)]
            } else {
                push_ca
            };
            run(async move {
                let ops = start_ops(ops_listen).await?;
                let worker = NotifyWorker::start(&backends, &ca_files)
                    .await
                    .map_err(|e| format!("confab notify: {e}"))?;
                println!("confab notify listening on the event log (group notify)");
                wait_for_stop_signal().await;
                tracing::info!("stopping: finishing the record in hand");
                worker.shutdown(Duration::from_secs(10)).await;
                if let Some(ops) = ops {
                    ops.stop();
                }
                Ok(())
            })
        }
        Command::Geo {
            command: GeoCommand::Check { file },
        } => geo_check(&file),
        Command::Geo {
            command: GeoCommand::Nodes { file },
        } => match load_geo(&file) {
            Ok(geo) => {
                for core in &geo.cores {
                    println!("core {} {} {}", core.name, core.region, core.addr);
                }
                for pop in &geo.pops {
                    println!("pop {} {} {}", pop.name, pop.region, pop.wss);
                }
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
    }
}

/// The operator endpoint, if asked for; its address is printed for scripts.
async fn start_ops(addr: Option<SocketAddr>) -> Result<Option<OpsHttp>, String> {
    let Some(addr) = addr else { return Ok(None) };
    let ops = OpsHttp::start(addr)
        .await
        .map_err(|e| format!("cannot serve /metrics on {addr}: {e}"))?;
    println!("metrics and health on http://{}", ops.local_addr);
    Ok(Some(ops))
}

/// Runs a role to completion on a fresh runtime.
fn run(role: impl std::future::Future<Output = Result<(), String>>) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("confab: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(role) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{error}");
            ExitCode::FAILURE
        }
    }
}

/// The backends a `--config` file and the CONFAB_* environment name, printed up front so
/// an operator sees which engines this node writes to before anything is written (URL
/// passwords masked).
fn load_backends(
    config: Option<&std::path::Path>,
    data_dir: &std::path::Path,
    sync: SyncPolicy,
    role: &str,
) -> Result<Backends, ExitCode> {
    let file = match config.map(NodeConfig::load).transpose() {
        Ok(file) => file.unwrap_or_default(),
        Err(error) => {
            eprintln!("confab {role}: {error}");
            return Err(ExitCode::FAILURE);
        }
    };
    match file
        .apply_env(|name| std::env::var(name).ok())
        .and_then(|config| config.backends(data_dir, sync))
    {
        Ok(backends) => {
            println!("confab {role} backends:");
            for line in backends.describe().lines() {
                println!("  {line}");
            }
            Ok(backends)
        }
        Err(error) => {
            eprintln!("confab {role}: {error}");
            Err(ExitCode::FAILURE)
        }
    }
}

fn load_geo(file: &std::path::Path) -> Result<confab_geo_config::GeoConfig, ExitCode> {
    let geo = confab_geo_config::load(file).map_err(|error| {
        eprintln!("{}: {error}", file.display());
        ExitCode::FAILURE
    })?;
    geo.validate().map_err(|issues| {
        for issue in issues {
            eprintln!("{}: {issue}", file.display());
        }
        ExitCode::FAILURE
    })?;
    Ok(geo)
}

async fn run_dev(options: DevOptions) -> Result<(), String> {
    let node = DevNode::start(options)
        .await
        .map_err(|e| format!("confab dev: {e}"))?;
    println!(
        "confab dev listening on https://{0} (WSS wss://{0}/v1/rtm, HTTP/3 udp {0})",
        node.addr
    );
    println!("trust the local CA at {}", node.ca_path.display());
    wait_for_stop_signal().await;
    tracing::info!("stopping: draining connections");
    node.shutdown(Duration::from_secs(10)).await;
    Ok(())
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
