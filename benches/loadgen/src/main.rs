//! `locus-loadgen`: drives a Locus server, or a peer it is compared with, with real clients
//! and prints a JSON summary on stdout (progress on stderr).
//!
//! Scenarios for any target (`--target locus|socketio|nats|bare`):
//! - `fanout`: subscribers spread over rooms, publishers at one or a ladder of rates.
//! - `idle`: connections each joined to one room, held; the server's memory per connection.
//!
//! Locus-only scenarios: `durable` (acknowledged publications on durable topics) and `geo`
//! (nearby subscribers and moving members sending beacons). `table` turns a directory of
//! summaries into the comparison table and chart (benches/compare.sh).

mod common;
mod conn;
mod durable;
mod fanout;
mod geo;
mod idle;
mod metrics_probe;
mod plot;
mod recorder;
mod report;
mod table;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Room fan-out: subscribers in rooms, publishers at a target rate (or a ladder of rates).
    Fanout(fanout::FanoutArgs),
    /// Idle connections, each joined to one room, held for a duration.
    Idle(idle::IdleArgs),
    /// Acknowledged publications on durable topics, a window in flight per connection.
    Durable(durable::DurableArgs),
    /// Nearby subscribers and moving members sending location beacons.
    Geo(geo::GeoArgs),
    /// The comparison table and chart from a directory of summaries.
    Table(table::TableArgs),
    /// Prints one top-level field of a JSON summary (for scripts).
    Field {
        file: std::path::PathBuf,
        field: String,
    },
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let summary = match cli.scenario {
        Scenario::Fanout(args) => fanout::run(args).await,
        Scenario::Idle(args) => idle::run(args).await,
        Scenario::Durable(args) => durable::run(args).await,
        Scenario::Geo(args) => geo::run(args).await,
        Scenario::Table(args) => return table::run(args),
        Scenario::Field { file, field } => {
            let text = std::fs::read_to_string(&file).expect("summary file readable");
            let v: serde_json::Value = serde_json::from_str(&text).expect("summary is JSON");
            println!("{}", v[&field]);
            return;
        }
    };
    println!(
        "{}",
        serde_json::to_string_pretty(&summary).expect("summary serializes")
    );
}
