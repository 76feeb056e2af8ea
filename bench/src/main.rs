//! `confab-bench`: runs one scenario and prints a Markdown row for bench/RESULTS.md.

use clap::{Parser, Subcommand};
use confab_bench::store::StoreBench;
use confab_store::SyncPolicy;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "confab-bench", about = "confab load generator and benchmarks")]
struct Cli {
    /// Tiny sizes and durations: a smoke run for CI, not a measurement.
    #[arg(long, global = true)]
    quick: bool,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
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
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let report = match cli.scenario {
        Scenario::Store {
            channels,
            batch,
            seconds,
            no_fsync,
        } => {
            let duration = if cli.quick {
                Duration::from_millis(300)
            } else {
                Duration::from_secs(seconds)
            };
            let channels = if cli.quick { channels.min(4) } else { channels };
            let sync = if no_fsync {
                SyncPolicy::Os
            } else {
                SyncPolicy::Fsync
            };
            confab_bench::store::run(StoreBench {
                channels,
                batch,
                duration,
                sync,
            })
            .await
        }
    };
    println!("| scenario | messages | msg/s | p50 ms | p99 ms | p999 ms | notes |");
    println!("|---|---|---|---|---|---|---|");
    println!("{}", report.markdown_row());
}
