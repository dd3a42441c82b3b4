//! `pqmls`: the command-line tool of pqmls, post-quantum decentralised MLS group chat.
//!
//! - `pqmls demo`: a store node and five clients over real libp2p on 127.0.0.1: a PQ group,
//!   invitations, messages, two concurrent commits resolved, a restart with catch-up, and a
//!   table of sizes and timings.
//! - `pqmls sim`: the ordering scenario on the simulated network, many seeded trials.
//! - `pqmls keygen` / `pqmls info`: create or inspect a data directory, offline.
//! - `pqmls chat`: an interactive terminal chat between processes.
//! - `pqmls node`: a Waku node (relay, store, lightpush, filter, peer exchange) of a
//!   network preset (`--preset local` or `logos.dev`).
//!
//! Logs go to stderr; the level is `warn` (`error` for `sim`, OpenMLS's own logs off)
//! unless `RUST_LOG` says otherwise.

mod chat;
mod dbkey;
mod demo;
mod keys;
mod node;
mod sim;
mod util;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Post-quantum decentralised group chat (MLS over libp2p, no server).
#[derive(Debug, Parser)]
#[command(name = "pqmls", version, about, long_about = None)]
struct Cli {
    /// What to do.
    #[command(subcommand)]
    command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Runs a store node and N clients on 127.0.0.1 and walks through the protocol.
    Demo(demo::DemoArgs),
    /// Runs the ordering scenario on the simulated network for many seeds.
    Sim(sim::SimArgs),
    /// Creates the identity of a data directory (offline) and prints it.
    Keygen(keys::KeygenArgs),
    /// Prints what a data directory holds (offline): identity, suites, groups.
    Info(keys::InfoArgs),
    /// An interactive terminal chat.
    #[command(after_long_help = chat::TWO_TERMINALS)]
    Chat(chat::ChatArgs),
    /// Runs a Waku node (relay, store, lightpush, filter, peer exchange) until Ctrl-C.
    Node(node::NodeArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // OpenMLS logs every message it cannot decrypt (expected for messages of a losing
    // branch, which the SDK counts) at error level: off unless RUST_LOG asks. In `sim`, the
    // simulated clients' warnings are what the trials measure and report: errors only.
    // gossipsub warns when asked to publish again a payload it still remembers (the SDK
    // publishes commits and votes again for members that missed them; the stores have
    // them either way): errors only.
    let default = match cli.command {
        Command::Sim(_) => "error,openmls=off",
        _ => "warn,openmls=off,libp2p_gossipsub=error",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Demo(args) => util::runtime().and_then(|rt| rt.block_on(demo::run(args))),
        Command::Sim(args) => sim::run(args),
        Command::Keygen(args) => keys::keygen(args),
        Command::Info(args) => keys::info(args),
        Command::Node(args) => util::runtime().and_then(|rt| rt.block_on(node::run(args))),
        Command::Chat(args) => util::runtime().and_then(|rt| {
            let r = rt.block_on(chat::run(args));
            // Tokio reads stdin on a blocking thread that stays in read(2) until a line
            // comes; dropping the runtime would wait for it (after Ctrl-C the chat hung until
            // Enter, which it then swallowed). Leave that thread behind, but give the
            // runtime's tasks a moment to finish being dropped first, so that the process
            // does not exit (running the C libraries' exit handlers) while worker threads
            // still drop them. (A chat process once ended unsuccessfully, without a word,
            // after "bye"; the cause was not found, and this was the one place where work
            // still ran at exit.)
            rt.shutdown_timeout(std::time::Duration::from_millis(300));
            r
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
