//! `locus-loadgen`: drives a Locus (or any Phoenix-protocol) server with real WebSocket clients
//! and prints a JSON summary on stdout.
//!
//! Scenario `fanout`: `--clients` subscribers spread over `--rooms` rooms, `--publishers`
//! extra connections each publishing `--rate` messages/s of `--payload-bytes` into the rooms
//! for `--duration-s`. Each payload carries its send time, so every delivery yields a latency.
//!
//! Scenario `durable`: connections publishing with `ack` on durable topics, `--window` in
//! flight each; reports acknowledged publications per second and publish → ack latency.

mod durable;
mod fanout;
mod geo;
mod metrics_probe;
mod report;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Room fan-out: subscribers in rooms, publishers at a target rate.
    Fanout(fanout::FanoutArgs),
    /// Acknowledged publications on durable topics, a window in flight per connection.
    Durable(durable::DurableArgs),
    /// Nearby subscribers and moving members sending location beacons.
    Geo(geo::GeoArgs),
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let summary = match cli.scenario {
        Scenario::Fanout(args) => fanout::run(args).await,
        Scenario::Durable(args) => durable::run(args).await,
        Scenario::Geo(args) => geo::run(args).await,
    };
    println!(
        "{}",
        serde_json::to_string_pretty(&summary).expect("summary serializes")
    );
}
