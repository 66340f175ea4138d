//! Stand-alone `scan` command (same as `riposte scan`), used by `bench/sweep.sh`.
//!
//! `cargo run --release -p riposte-scan --example scan -- --ioc x.ioc /some/path`

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "scan",
    about = "Sweep this device for indicators of compromise"
)]
struct Cli {
    #[command(flatten)]
    scan: riposte_scan::cli::ScanArgs,
}

fn main() -> anyhow::Result<()> {
    let code = riposte_scan::cli::run(Cli::parse().scan)?;
    std::process::exit(code);
}
