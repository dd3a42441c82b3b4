//! `pqmls node`: a Waku node (relay, store, lightpush, filter, peer exchange) of a network
//! preset, until Ctrl-C.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use pqmls_transport::node::Config;
use pqmls_transport::waku::preset::Preset;
use pqmls_transport::{Multiaddr, Node, store};

/// Arguments of `pqmls node`.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// The network: `local` (127.0.0.1, cluster 0: tests and the demo) or `logos.dev`
    /// (cluster 3, 8 shards, 150 KiB; give its entry nodes with --bootstrap).
    #[arg(long, default_value = "local")]
    pub preset: Preset,
    /// Where the node keeps its identity key and, with the store on, its databases
    /// (folders 0700, files 0600). Without it the node has a new identity each start and
    /// no store.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Do not run a store, even with --data-dir.
    #[arg(long)]
    pub no_store: bool,
    /// Address to listen on, instead of the preset's (repeatable).
    #[arg(long)]
    pub listen: Vec<Multiaddr>,
    /// A peer to dial at start and again when it goes away: the network's entry nodes
    /// (repeatable).
    #[arg(long)]
    pub bootstrap: Vec<Multiaddr>,
    /// An address to announce in the node's record (peer exchange) instead of its listen
    /// addresses, e.g. a public one (repeatable).
    #[arg(long)]
    pub announce: Vec<Multiaddr>,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    pub seconds: Option<u64>,
}

/// The node configuration `args` ask for.
///
/// # Errors
///
/// None today; kept fallible for settings that need checking.
pub fn config(args: &NodeArgs) -> Result<Config> {
    let mut c = args.preset.node_config();
    if !args.listen.is_empty() {
        c.listen = args.listen.clone();
    }
    for b in &args.bootstrap {
        c = c.with_bootstrap(b.clone());
    }
    if let Some(px) = c.peer_exchange.as_mut() {
        px.announce = args.announce.clone();
    }
    match &args.data_dir {
        Some(dir) if !args.no_store => c = c.with_store(dir, store::Config::default()),
        Some(dir) => c.data_dir = Some(dir.clone()),
        None => {}
    }
    Ok(c)
}

/// Runs the node until Ctrl-C (or `--seconds`), printing its addresses, record and a
/// line of counters every minute.
///
/// # Errors
///
/// When the node cannot start (a port in use, an unusable data directory).
pub async fn run(args: NodeArgs) -> Result<()> {
    let config = config(&args)?;
    let store = config.store.is_some();
    let (node, _) = Node::start(config).await.context("cannot start the node")?;
    println!(
        "* pqmls node on {} (cluster {}), peer id {}{}",
        args.preset,
        args.preset.cluster(),
        node.peer_id(),
        if store { ", with a store" } else { "" }
    );
    for a in node.listen_addrs().await? {
        println!("  listening on {a}");
    }
    if let Some(enr) = node.enr() {
        println!("  record {}", enr.to_text());
    }
    let stop = async {
        match args.seconds {
            Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    };
    tokio::pin!(stop);
    let mut every = tokio::time::interval(Duration::from_secs(60));
    every.tick().await;
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = every.tick() => {
                let c = node.counters();
                println!(
                    "  peers {} relayed {} stored {} lightpushed {} filter subscribers {} \
                     peer exchange served {} rate limited {}",
                    c.connected_peers, c.relay_delivered, c.stored, c.lightpush_served,
                    c.filter_subscribers, c.px_served, c.rate_limited
                );
            }
        }
    }
    node.shutdown().await?;
    println!("* stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct T {
        #[command(flatten)]
        args: NodeArgs,
    }

    fn parse(argv: &[&str]) -> NodeArgs {
        T::try_parse_from(std::iter::once("node").chain(argv.iter().copied()))
            .map(|t| t.args)
            .map_err(|e| e.to_string())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn the_preset_option_gives_each_networks_settings() {
        let local = config(&parse(&[])).unwrap();
        assert_eq!(
            local.waku.as_ref().map(|w| (w.cluster, w.shard_count)),
            Some((0, 8))
        );
        assert!(local.store.is_none() && local.data_dir.is_none());
        let dev = config(&parse(&[
            "--preset",
            "logos.dev",
            "--bootstrap",
            "/ip4/192.0.2.1/tcp/30303",
            "--data-dir",
            "/tmp/x",
        ]))
        .unwrap();
        let w = dev.waku.as_ref().unwrap();
        assert_eq!(
            (w.cluster, w.shard_count, w.max_message_size),
            (3, 8, 150 * 1024)
        );
        assert_eq!(dev.bootstrap.len(), 1);
        assert!(dev.store.is_some(), "a data directory turns the store on");
        let no_store = config(&parse(&["--data-dir", "/tmp/x", "--no-store"])).unwrap();
        assert!(no_store.store.is_none() && no_store.data_dir.is_some());
        let listen = config(&parse(&["--listen", "/ip4/127.0.0.1/tcp/7001"])).unwrap();
        assert_eq!(listen.listen.len(), 1);
        assert!(
            T::try_parse_from(["node", "--preset", "mainnet"]).is_err(),
            "unknown presets are refused"
        );
    }
}
