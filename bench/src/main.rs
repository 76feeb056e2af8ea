//! `confab-bench`: runs one scenario and prints a Markdown row for bench/RESULTS.md.

use clap::{Parser, Subcommand};
use confab_bench::Report;
use confab_bench::boot::BootBench;
use confab_bench::fanout::{FanoutBench, FanoutTarget};
use confab_bench::history::HistoryBench;
use confab_bench::idle::IdleBench;
use confab_bench::many_channels::ManyChannelsBench;
use confab_bench::net;
use confab_bench::presence::PresenceBench;
use confab_bench::presence_centrifuge::CentrifugePresenceBench;
use confab_bench::search::SearchBench;
use confab_bench::store::StoreBench;
use confab_store::SyncPolicy;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "confab-bench", about = "confab load generator and benchmarks")]
struct Cli {
    /// Tiny sizes and durations: a smoke run for CI, not a measurement.
    #[arg(long, global = true)]
    quick: bool,
    /// Run the server as this `confab` binary (`confab dev`) in a separate process
    /// instead of in-process, so client and server do not share one runtime.
    #[arg(long, global = true)]
    server_bin: Option<PathBuf>,
    /// Also append the run as one JSON line to this file (bench/results.jsonl is what
    /// `confab-bench chart` draws bench/charts/ from).
    #[arg(long, global = true)]
    record: Option<PathBuf>,
    /// The setting this run is at, as charts label it (default: the report's first note).
    #[arg(long, global = true)]
    label: Option<String>,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Draws bench/charts/<scenario>.svg from the runs recorded with --record.
    Chart {
        #[arg(long, default_value = "bench/results.jsonl")]
        from: PathBuf,
        #[arg(long, default_value = "bench/charts")]
        out: PathBuf,
    },
    /// Durable messages/s into the embedded store with group commit and fsync on.
    Store {
        #[arg(long, default_value_t = 64)]
        channels: usize,
        #[arg(long, default_value_t = 1)]
        batch: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Skip fsync (shows what durability costs; never a deployment setting).
        #[arg(long)]
        no_fsync: bool,
    },
    /// One channel, every member on WSS: send → receive latency and losses.
    /// Documented sizes: --members 100, 1000, 5000.
    Fanout {
        #[arg(long, default_value_t = 100)]
        members: usize,
        #[arg(long, default_value_t = 1)]
        senders: usize,
        /// Messages per second over all senders (at most 100 per sender: the edge's
        /// per-connection RTM rate limit).
        #[arg(long, default_value_t = 20.0)]
        rate: f64,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Seconds members may still receive after the last send.
        #[arg(long, default_value_t = 10)]
        drain_seconds: u64,
        /// `confab`; `ceiling`: a bare WSS broadcast server on the same stack with none
        /// of confab's work, the most this box can do; or a peer started by
        /// `bench/peers/peers.sh`: `centrifuge`, `nchan`, `nats`, `mosquitto`.
        #[arg(long, default_value = "confab")]
        target: String,
        /// The peers' state directory (their CA), default $CONFAB_PEERS_DIR or
        /// bench/.peers.
        #[arg(long)]
        peers_dir: Option<PathBuf>,
        /// Search for the highest rate that keeps p99 under --p99-limit-ms with nothing
        /// lost, starting at --rate and adding senders as needed; reports the run at half.
        #[arg(long)]
        search: bool,
        #[arg(long, default_value_t = 200)]
        p99_limit_ms: u64,
        /// Where the search stops doubling.
        #[arg(long, default_value_t = 100_000.0)]
        max_rate: f64,
    },
    /// Fill one channel, then read random 50-message history pages concurrently.
    History {
        #[arg(long, default_value_t = 100_000)]
        messages: u64,
        #[arg(long, default_value_t = 64)]
        writers: usize,
        #[arg(long, default_value_t = 16)]
        readers: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// K idle RTM connections: server memory per connection and time to open one.
    /// Documented sizes: 10k (50k needs a raised open-files limit on both sides).
    Idle {
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        #[arg(long, default_value_t = 100)]
        users: usize,
        #[arg(long, default_value_t = 3)]
        settle_seconds: u64,
        /// A peer started by bench/peers/peers.sh (`centrifuge`, `nchan`, `nats`,
        /// `mosquitto`) instead of confab.
        #[arg(long)]
        target: Option<String>,
    },
    /// Presence entries pushed per status change in one big channel whose members each
    /// subscribe to the users on their screen, against naive fan-out to every member.
    /// Documented size: --members 10000 (needs --server-bin: in-process, both ends of 10k
    /// connections exceed a 20k open-files limit).
    Presence {
        #[arg(long, default_value_t = 10_000)]
        members: usize,
        /// Users each connection subscribes to (`presence_sub`): what a client has on
        /// screen, drawn at random from the members.
        #[arg(long, default_value_t = 20)]
        visible: usize,
        /// Users who go away and come back 1 s later: two status changes each.
        #[arg(long, default_value_t = 100)]
        changes: usize,
        /// Users going away per second.
        #[arg(long, default_value_t = 10.0)]
        rate: f64,
        /// Seconds connections may still receive after the last scheduled change.
        #[arg(long, default_value_t = 3)]
        drain_seconds: u64,
        /// `confab`, or `centrifuge` (started by `bench/peers/peers.sh`): the one peer
        /// with presence events, announced to every subscriber of the channel (changers
        /// come online and go offline; --visible does not apply).
        #[arg(long, default_value = "confab")]
        target: String,
        /// The peers' state directory (their CA), default $CONFAB_PEERS_DIR or
        /// bench/.peers.
        #[arg(long)]
        peers_dir: Option<PathBuf>,
    },
    /// Many small channels, one connection per user, sends to random channels of the
    /// sender: send → reply latency (confab: durable), and every member's delivery.
    ManyChannels {
        #[arg(long, default_value_t = 1000)]
        channels: usize,
        /// Members per channel, drawn from --users.
        #[arg(long, default_value_t = 5)]
        members: usize,
        #[arg(long, default_value_t = 500)]
        users: usize,
        /// Messages per second over all users in a channel (at most 100 per user: the
        /// edge's per-connection RTM rate limit).
        #[arg(long, default_value_t = 2000.0)]
        rate: f64,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Seconds members may still receive after the last send.
        #[arg(long, default_value_t = 10)]
        drain_seconds: u64,
        /// `confab`, or a peer started by `bench/peers/peers.sh`: `centrifuge`, `nchan`
        /// (one connection per user and channel), `nats`, `mosquitto`. Peers other than
        /// centrifuge send no replies: operations are then sends, with no ack latency.
        #[arg(long, default_value = "confab")]
        target: String,
        /// The peers' state directory (their CA), default $CONFAB_PEERS_DIR or
        /// bench/.peers.
        #[arg(long)]
        peers_dir: Option<PathBuf>,
    },
    /// GET /v1/boot size and latency in a big team, against a full snapshot.
    Boot {
        #[arg(long, default_value_t = 1500)]
        users: usize,
        #[arg(long, default_value_t = 20)]
        channels: usize,
        #[arg(long, default_value_t = 10)]
        dms: usize,
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let quick = cli.quick;
    // `--quick` shrinks sizes so CI runs each scenario in seconds; it measures nothing.
    let seconds = |s: u64| {
        if quick {
            Duration::from_millis(500)
        } else {
            Duration::from_secs(s)
        }
    };
    let server_bin = cli.server_bin;
    // Thousands of connections need more than a default soft limit of open files.
    net::raise_open_files_limit();
    let report = match cli.scenario {
        Scenario::Chart { from, out } => {
            let written = confab_bench::chart::load(&from)
                .and_then(|records| confab_bench::chart::write_all(&records, &out));
            return match written {
                Ok(files) => {
                    for file in files {
                        println!("{}", file.display());
                    }
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("confab-bench: chart: {error}");
                    ExitCode::FAILURE
                }
            };
        }
        Scenario::Store {
            channels,
            batch,
            seconds: s,
            no_fsync,
        } => {
            let duration = if quick {
                Duration::from_millis(300)
            } else {
                Duration::from_secs(s)
            };
            let channels = if quick { channels.min(4) } else { channels };
            let sync = if no_fsync {
                SyncPolicy::Os
            } else {
                SyncPolicy::Fsync
            };
            Ok(confab_bench::store::run(StoreBench {
                channels,
                batch,
                duration,
                sync,
            })
            .await)
        }
        Scenario::Fanout {
            members,
            senders,
            rate,
            seconds: s,
            drain_seconds,
            target,
            peers_dir,
            search,
            p99_limit_ms,
            max_rate,
        } => {
            let Some(target) = FanoutTarget::from_name(&target) else {
                eprintln!(
                    "confab-bench: unknown --target {target:?} \
                     (confab, ceiling, centrifuge, nchan, nats, mosquitto)"
                );
                return ExitCode::FAILURE;
            };
            let fanout = FanoutBench {
                members: if quick { members.min(5) } else { members },
                senders: if quick { senders.min(2) } else { senders },
                rate: if quick { rate.min(20.0) } else { rate },
                duration: seconds(s),
                drain: Duration::from_secs(drain_seconds),
                server_bin,
                target,
                peers_dir: peers_dir.unwrap_or_else(confab_bench::peers::default_dir),
            };
            if search {
                confab_bench::search::run(SearchBench {
                    fanout,
                    p99_limit: Duration::from_millis(p99_limit_ms),
                    refine_steps: if quick { 1 } else { 3 },
                    max_rate: if quick { max_rate.min(80.0) } else { max_rate },
                })
                .await
            } else {
                confab_bench::fanout::run(fanout).await
            }
        }
        Scenario::History {
            messages,
            writers,
            readers,
            seconds: s,
        } => {
            confab_bench::history::run(HistoryBench {
                messages: if quick { messages.min(2_000) } else { messages },
                writers: if quick { writers.min(16) } else { writers },
                readers: if quick { readers.min(4) } else { readers },
                duration: seconds(s),
                server_bin,
            })
            .await
        }
        Scenario::Idle {
            connections,
            users,
            settle_seconds,
            target,
        } => {
            let peer = match target.as_deref() {
                None | Some("confab") => None,
                Some(name) => match confab_bench::peers::Peer::from_name(name) {
                    Some(peer) => Some((peer, confab_bench::peers::default_dir())),
                    None => {
                        eprintln!("confab-bench: unknown --target {name:?}");
                        return ExitCode::FAILURE;
                    }
                },
            };
            confab_bench::idle::run(IdleBench {
                peer,
                connections: if quick {
                    connections.min(20)
                } else {
                    connections
                },
                users: if quick { users.min(4) } else { users },
                settle: Duration::from_secs(if quick { 0 } else { settle_seconds }),
                server_bin,
            })
            .await
        }
        Scenario::Boot {
            users,
            channels,
            dms,
            concurrency,
            seconds: s,
        } => {
            confab_bench::boot::run(BootBench {
                users: if quick { users.min(20) } else { users },
                channels: if quick { channels.min(3) } else { channels },
                dms: if quick { dms.min(3) } else { dms },
                concurrency: if quick {
                    concurrency.min(2)
                } else {
                    concurrency
                },
                duration: seconds(s),
                server_bin,
            })
            .await
        }
        Scenario::Presence {
            members,
            visible,
            changes,
            rate,
            drain_seconds,
            target,
            peers_dir,
        } => match target.as_str() {
            "confab" => {
                confab_bench::presence::run(PresenceBench {
                    members: if quick { members.min(30) } else { members },
                    visible: if quick { visible.min(5) } else { visible },
                    changes: if quick { changes.min(5) } else { changes },
                    rate,
                    drain: Duration::from_secs(drain_seconds),
                    server_bin,
                })
                .await
            }
            "centrifuge" => {
                confab_bench::presence_centrifuge::run(CentrifugePresenceBench {
                    members: if quick { members.min(30) } else { members },
                    changes: if quick { changes.min(5) } else { changes },
                    rate,
                    drain: Duration::from_secs(drain_seconds),
                    peers_dir: peers_dir.unwrap_or_else(confab_bench::peers::default_dir),
                })
                .await
            }
            name => {
                eprintln!(
                    "confab-bench: presence --target {name:?}: only confab and centrifuge have \
                     presence (nchan, NATS and Mosquitto have no presence events)"
                );
                return ExitCode::FAILURE;
            }
        },
        Scenario::ManyChannels {
            channels,
            members,
            users,
            rate,
            seconds: s,
            drain_seconds,
            target,
            peers_dir,
        } => {
            let peer = match target.as_str() {
                "confab" => None,
                name => match confab_bench::peers::Peer::from_name(name) {
                    Some(peer) => Some(peer),
                    None => {
                        eprintln!(
                            "confab-bench: unknown --target {name:?} \
                             (confab, centrifuge, nchan, nats, mosquitto)"
                        );
                        return ExitCode::FAILURE;
                    }
                },
            };
            confab_bench::many_channels::run(ManyChannelsBench {
                channels: if quick { channels.min(20) } else { channels },
                members: if quick { members.min(3) } else { members },
                users: if quick { users.min(12) } else { users },
                rate: if quick { rate.min(100.0) } else { rate },
                duration: seconds(s),
                drain: Duration::from_secs(drain_seconds),
                server_bin,
                peer,
                peers_dir: peers_dir.unwrap_or_else(confab_bench::peers::default_dir),
            })
            .await
        }
    };
    let report = match report {
        Ok(report) => report,
        Err(error) => {
            eprintln!("confab-bench: {error}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(path) = &cli.record
        && let Err(error) = record(path, &report, cli.label.as_deref())
    {
        eprintln!("confab-bench: recording to {}: {error}", path.display());
        return ExitCode::FAILURE;
    }
    println!("| scenario | operations | ops/s | p50 ms | p99 ms | p999 ms | notes |");
    println!("|---|---|---|---|---|---|---|");
    println!("{}", report.markdown_row());
    ExitCode::SUCCESS
}

/// Appends the run to the JSON Lines file at `path`.
fn record(path: &std::path::Path, report: &Report, label: Option<&str>) -> std::io::Result<()> {
    use std::io::Write;
    let label = label
        .map(str::to_owned)
        .or_else(|| report.notes.first().cloned())
        .unwrap_or_default();
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let line = report.record(&label, &command, now).to_string();
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    writeln!(file, "{line}")
}
