//! `pqmls demo`: a store node and N clients over real libp2p on 127.0.0.1, walking through
//! group creation, invitations, messages, two concurrent commits, and a restart with
//! catch-up; then a table of sizes and timings.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use pqmls::{Ciphersuite, Client, Config, DatabaseKey, Event, GroupId, GroupStatus};
use pqmls_transport::node::Config as NodeConfig;
use pqmls_transport::waku::peer_exchange;
use pqmls_transport::waku::preset::Preset;
use pqmls_transport::{Multiaddr, Node, PeerId, store};
use tokio::task::JoinHandle;

use crate::util::{self, hex_prefix, mean, ms, poll_progress, poll_until, within};

/// Arguments of `pqmls demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Cipher suite of the group: hex code, decimal code or name.
    #[arg(long, default_value = util::DEFAULT_SUITE_ARG, value_parser = util::parse_suite)]
    suite: Ciphersuite,
    /// Number of clients (at least 3: a creator, two concurrent committers, one to restart).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(3..=26))]
    clients: u16,
    /// Where the store and the clients keep their data (default: a temporary directory,
    /// deleted at the end). The clients' databases are keyed with the key in
    /// `PQMLS_KEY_FILE` if it is set (so `pqmls info` can read them), otherwise with a
    /// random key that is never shown.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Longest wait for any one step, in seconds.
    #[arg(long, default_value_t = 20)]
    timeout: u64,
    /// Run on Waku instead of pqmls's own protocols: the store is a Waku node of the
    /// `local` preset (relay, store v3, lightpush, filter, peer exchange, as `pqmls node`),
    /// and the clients use Waku relay for traffic and store v3 for history and key packages.
    #[arg(long)]
    waku: bool,
}

const NAMES: [&str; 26] = [
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory",
    "niaj", "olivia", "peggy", "rupert", "sybil", "trent", "uma", "victor", "walter", "xena",
    "yara", "zoe", "quinn", "kim", "leo",
];

/// How many of the clients started just before it each client dials, besides the store.
///
/// The demo is not a star around the store: gossipsub keeps at most `mesh_n_high` (12)
/// peers in a node's mesh for a topic and prunes it to `mesh_n` (6) beyond that, with a
/// 60 s backoff before a pruned peer may graft again. In a star of more than 12 clients
/// the store prunes most of them from the group's mesh, and a pruned client whose only
/// peer is the store has no mesh for the group at all: the group's messages reach it only
/// by IHAVE gossip or the next catch-up, and `--clients 26` stalled waiting for the
/// mesh. With these links the clients form a chain (client i dials i-1 and i-2), each
/// with up to four client peers to mesh with whatever the store prunes.
const LINKS: usize = 2;

/// The earlier clients (indices) that client `i` dials, see [`LINKS`].
fn links(i: usize) -> std::ops::Range<usize> {
    i.saturating_sub(LINKS)..i
}

/// Connects the clients' nodes as [`links`] says (the first TCP listen address of each).
async fn link_nodes(nodes: &[&Node]) -> Result<()> {
    for i in 0..nodes.len() {
        link_node(nodes, i).await?;
    }
    Ok(())
}

/// Connects `nodes[i]` to the earlier nodes [`links`] names.
async fn link_node(nodes: &[&Node], i: usize) -> Result<()> {
    for j in links(i) {
        let addr = nodes[j]
            .listen_addrs()
            .await?
            .into_iter()
            .find(|a| a.to_string().contains("/tcp/"))
            .ok_or_else(|| anyhow!("client {j}'s node has no TCP listen address"))?;
        nodes[i]
            .dial(addr)
            .await
            .with_context(|| format!("linking client {i} to client {j}"))?;
    }
    Ok(())
}

/// Events a client reported, with when they arrived.
type Log = Arc<Mutex<Vec<(Instant, Event)>>>;

/// One demo client: the handle, its data directory and its event log.
struct Member {
    name: String,
    dir: PathBuf,
    client: Client,
    log: Log,
    collector: JoinHandle<()>,
}

impl Member {
    /// Messages received so far: (sender, body, when).
    fn received(&self) -> Vec<(String, Vec<u8>, Instant)> {
        self.log
            .lock()
            .map(|l| {
                l.iter()
                    .filter_map(|(t, e)| match e {
                        Event::Message(m) => Some((m.sender.name.clone(), m.body.clone(), *t)),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn joined(&self, group: &GroupId) -> bool {
        self.log.lock().is_ok_and(|l| {
            l.iter()
                .any(|(_, e)| matches!(e, Event::Joined { group: g, .. } if g == group))
        })
    }
}

/// The demo's database key. When the data is kept (`--dir`) and `PQMLS_KEY_FILE` is set,
/// that key, so that `pqmls info` (and the at-rest test) can open the directories
/// afterwards; otherwise a random key, one per run, never shown: the data directories are
/// then unreadable once the demo ends.
fn demo_key(kept: Option<&std::path::Path>) -> Result<DatabaseKey> {
    if let Some(dir) = kept
        && let Some(key) = crate::dbkey::key_file(dir)?
    {
        return Ok(key);
    }
    Ok(DatabaseKey::random()?)
}

/// Starts a client on a fresh node bootstrapping to the store, and a task that logs its
/// events. With `waku_store`, a Waku relay node whose history and key packages come from
/// that store node over store v3.
async fn start_member(
    name: &str,
    dir: PathBuf,
    key: &DatabaseKey,
    suite: Ciphersuite,
    bootstrap: &Multiaddr,
    waku_store: Option<PeerId>,
) -> Result<Member> {
    let mut config = Config::new(name)
        .with_data_dir(&dir)
        .with_database_key(key.clone())
        .with_suite(suite);
    config.settle = Duration::from_millis(200);
    config.self_update_interval = None;
    let node = NodeConfig::loopback().with_bootstrap(bootstrap.clone());
    let client = match waku_store {
        Some(store) => {
            let waku = pqmls::net_waku::Config::default().with_store_peer(store);
            // Peer exchange: clients find each other through the store, so the relay
            // mesh does not hang on the store alone (it keeps at most 8 mesh peers).
            let mut px = peer_exchange::Config::default();
            px.interval = Duration::from_secs(2);
            let node = node.with_waku(Preset::Local.relay()).with_peer_exchange(px);
            Client::start_waku(config, node, waku).await
        }
        None => Client::start(config, node).await,
    }
    .with_context(|| format!("starting client {name}"))?;
    let log: Log = Arc::default();
    let mut events = client.events();
    let sink = log.clone();
    let collector = tokio::spawn(async move {
        while let Some(e) = events.recv().await {
            if let Ok(mut l) = sink.lock() {
                l.push((Instant::now(), e));
            }
        }
    });
    Ok(Member {
        name: name.to_owned(),
        dir,
        client,
        log,
        collector,
    })
}

/// Prints numbered progress lines with the time since the start.
struct Progress {
    start: Instant,
    step: u32,
}

impl Progress {
    fn step(&mut self, text: impl std::fmt::Display) {
        self.step += 1;
        println!(
            "[{:>6.2}s] {:>2}. {text}",
            self.start.elapsed().as_secs_f64(),
            self.step
        );
    }
}

/// Waits until every member has the same epoch and authenticator, `members` members and no
/// pending commit, with at least `min_epoch`; returns that status.
async fn converged(
    members: &[&Member],
    group: &GroupId,
    n_members: usize,
    min_epoch: u64,
    limit: Duration,
    what: &str,
) -> Result<GroupStatus> {
    poll_until(limit, what, || async {
        let mut statuses = Vec::with_capacity(members.len());
        for m in members {
            match m.client.status(group).await {
                Ok(s) => statuses.push((m.name.as_str(), s)),
                Err(e) => return Ok(Err(format!("{}: {e}", m.name))),
            }
        }
        let describe = || {
            statuses
                .iter()
                .map(|(n, s)| {
                    format!(
                        "{n}: epoch {} auth {} members {}{}",
                        s.epoch,
                        hex_prefix(&s.epoch_authenticator),
                        s.members.len(),
                        if s.pending_commit { " pending" } else { "" }
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        };
        let first = &statuses[0].1;
        let agreed = statuses.iter().all(|(_, s)| {
            s.epoch == first.epoch
                && s.epoch_authenticator == first.epoch_authenticator
                && !s.pending_commit
                && s.members.len() == n_members
        });
        if agreed && first.epoch >= min_epoch {
            Ok(Ok(first.clone()))
        } else {
            Ok(Err(describe()))
        }
    })
    .await
}

/// Waits until `member` has received every body in `bodies` (as events).
async fn received_all(member: &Member, bodies: &[Vec<u8>], limit: Duration) -> Result<()> {
    poll_until(
        limit,
        format!("{} to receive {} messages", member.name, bodies.len()),
        || async {
            let got = member.received();
            let missing: Vec<String> = bodies
                .iter()
                .filter(|b| !got.iter().any(|(_, body, _)| body == *b))
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .collect();
            Ok(if missing.is_empty() {
                Ok(())
            } else {
                Err(format!("missing {missing:?}"))
            })
        },
    )
    .await
}

/// Waits until every member has a gossip mesh peer for the group (over Waku, in the relay
/// mesh of its shard), for as long as more members get one; shows the count while it
/// waits, and names the members without a mesh if it gives up.
async fn meshes(members: &[Member], group: &GroupId, limit: Duration) -> Result<()> {
    let n = members.len();
    let start = Instant::now();
    let mut shown = start;
    poll_progress(
        limit,
        "every member's gossip mesh for the group",
        || async {
            let mut without = Vec::new();
            for m in members {
                let peers = m.client.mesh_peers(group).await?;
                if peers == Some(0) {
                    let connected = m
                        .client
                        .node()
                        .map_or(0, |nd| nd.counters().connected_peers);
                    without.push(format!("{} ({connected} connected peers)", m.name));
                }
            }
            Ok(if without.is_empty() {
                Ok(())
            } else {
                Err((
                    n - without.len(),
                    format!(
                        "{} of {n} members have mesh peers; none yet: {}",
                        n - without.len(),
                        without.join(", ")
                    ),
                ))
            })
        },
        |done, _| {
            // Quiet while it is quick; then a line per 2 s at most.
            if shown.elapsed() >= Duration::from_secs(2) {
                shown = Instant::now();
                println!(
                    "          gossip mesh: {done} of {n} members after {:.1} s",
                    start.elapsed().as_secs_f64()
                );
            }
        },
    )
    .await
}

/// Runs the demo.
pub async fn run(args: DemoArgs) -> Result<()> {
    let limit = Duration::from_secs(args.timeout);
    let n = usize::from(args.clients);
    let temp;
    let root = match &args.dir {
        Some(d) => d.clone(),
        None => {
            temp = tempfile::Builder::new()
                .prefix("pqmls-demo-")
                .tempdir()
                .context("cannot create a temporary directory")?;
            temp.path().to_path_buf()
        }
    };
    let mut p = Progress {
        start: Instant::now(),
        step: 0,
    };
    println!(
        "pqmls demo: {n} clients and a store node over {} on 127.0.0.1, suite {}",
        if args.waku {
            "Waku (relay, store v3)"
        } else {
            "libp2p"
        },
        util::suite_label(args.suite)
    );
    println!("data in {}", root.display());
    let key = demo_key(args.dir.as_deref())?;

    // The store node: history and the key-package directory. Over Waku: a node of the
    // local preset with the store role, as `pqmls node --preset local` runs it.
    let store_config = if args.waku {
        let mut c = Preset::Local
            .node_config()
            .with_store(root.join("store"), store::Config::default());
        // The demo checks catch-up by calling `sync` every 20 ms, far above the store v3
        // rate a Waku node grants one peer by default (100 queries a minute, answered 429
        // beyond); `pqmls node` keeps the default.
        c.limits.rate_limits.store = None;
        c
    } else {
        pqmls::store_node(
            NodeConfig::loopback(),
            root.join("store"),
            store::Config::default(),
        )?
    };
    let (store_node, _store_inbound) = Node::start(store_config)
        .await
        .context("starting the store node")?;
    let waku_store = args.waku.then(|| store_node.peer_id());
    let bootstrap = store_node
        .listen_addrs()
        .await?
        .into_iter()
        .find(|a| a.to_string().contains("/tcp/"))
        .ok_or_else(|| anyhow!("the store node has no TCP listen address"))?;
    p.step(format!("store node up at {bootstrap}"));

    // The clients.
    let starts = (0..n).map(|i| {
        let name = NAMES[i];
        start_member(
            name,
            root.join(name),
            &key,
            args.suite,
            &bootstrap,
            waku_store,
        )
    });
    let mut members: Vec<Member> = within(limit, "the clients to start", async {
        futures::future::try_join_all(starts).await
    })
    .await?;
    let names: Vec<String> = members.iter().map(|m| m.name.clone()).collect();
    let nodes: Vec<&Node> = members.iter().filter_map(|m| m.client.node()).collect();
    link_nodes(&nodes).await?;
    for m in &members[1..] {
        within(
            limit,
            format!("{}'s key packages in the directory", m.name),
            async { Ok(pqmls::wait_for_key_packages(&members[0].client, &m.client.id()).await?) },
        )
        .await?;
    }
    p.step(format!(
        "{n} clients started, key packages published (signed by each user's key): {}",
        members
            .iter()
            .map(|m| format!("{} [{}]", m.name, m.client.id().short()))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    // Consent: invitations from contacts are joined at once; everyone takes the creator's
    // id (exchanged out of band in real life) as a contact.
    let creator = members[0].client.id();
    for m in &members[1..] {
        m.client.add_contact(&creator, &names[0]).await?;
    }

    // The group.
    let t = Instant::now();
    let group = members[0].client.create_group().await?;
    let t_create = t.elapsed();
    p.step(format!(
        "{} created group {group} ({})",
        names[0],
        ms(t_create)
    ));

    let mut invite_times = Vec::new();
    for i in 1..n {
        let t = Instant::now();
        within(
            limit,
            format!("{} to invite {}", names[0], names[i]),
            async {
                Ok(members[0]
                    .client
                    .invite(&group, &members[i].client.id())
                    .await?)
            },
        )
        .await?;
        poll_until(
            limit,
            format!("{} to join from the Welcome", names[i]),
            || async {
                Ok(if members[i].joined(&group) {
                    Ok(())
                } else {
                    Err("no Joined event".into())
                })
            },
        )
        .await?;
        let d = t.elapsed();
        invite_times.push(d);
        p.step(format!(
            "{} invited {}: joined after {}",
            names[0],
            names[i],
            ms(d)
        ));
    }
    let all: Vec<&Member> = members.iter().collect();
    let status = converged(
        &all,
        &group,
        n,
        0,
        limit,
        "every member to agree on the group",
    )
    .await?;
    meshes(&members, &group, limit).await?;
    p.step(format!(
        "all {n} members agree: epoch {}, authenticator {}…, members [{}]",
        status.epoch,
        hex_prefix(&status.epoch_authenticator),
        status
            .members
            .iter()
            .map(|m| m.name.clone())
            .collect::<Vec<_>>()
            .join(", ")
    ));

    // Every member sends; every other member must receive each message.
    let t = Instant::now();
    let mut sent = Vec::new();
    for m in &members {
        let body = format!("hello from {}", m.name).into_bytes();
        let at = Instant::now();
        m.client
            .send(&group, &body)
            .await
            .with_context(|| format!("{} sending", m.name))?;
        sent.push((m.name.clone(), body, at));
    }
    let mut latencies = Vec::new();
    for m in &members {
        let expected: Vec<Vec<u8>> = sent
            .iter()
            .filter(|(s, _, _)| *s != m.name)
            .map(|(_, b, _)| b.clone())
            .collect();
        received_all(m, &expected, limit).await?;
        let got = m.received();
        for (_, body, at) in &sent {
            if let Some((_, _, t)) = got.iter().find(|(_, b, _)| b == body) {
                latencies.push(t.saturating_duration_since(*at));
            }
        }
    }
    let fanout_mean = mean(&latencies);
    let fanout_max = latencies.iter().max().copied().unwrap_or_default();
    p.step(format!(
        "every member sent one message; all {} deliveries arrived in {} (latency mean {}, max {})",
        latencies.len(),
        ms(t.elapsed()),
        ms(fanout_mean),
        ms(fanout_max)
    ));

    // Two concurrent commits.
    let before = converged(
        &all,
        &group,
        n,
        0,
        limit,
        "agreement before the concurrent commits",
    )
    .await?;
    let (a, b) = (&members[1], &members[2]);
    let t = Instant::now();
    let (ra, rb) = tokio::join!(a.client.update(&group), b.client.update(&group));
    ra.with_context(|| format!("{} committing an update", a.name))?;
    rb.with_context(|| format!("{} committing an update", b.name))?;
    p.step(format!(
        "{} and {} committed updates at the same time in epoch {}",
        a.name, b.name, before.epoch
    ));
    let after = converged(
        &all,
        &group,
        n,
        before.epoch + 2,
        limit,
        "every member to agree after the concurrent commits",
    )
    .await?;
    let t_resolve = t.elapsed();
    let forks: u64 = {
        let mut f = 0;
        for m in &members {
            f += m.client.stats().await.forks_recovered;
        }
        f
    };
    p.step(format!(
        "competing commits resolved in {}: epoch {} -> {} (one won epoch {}, the loser was re-committed in epoch {}), authenticator {}… on all {n}, branch moves {forks}",
        ms(t_resolve),
        before.epoch,
        after.epoch,
        before.epoch + 1,
        before.epoch + 2,
        hex_prefix(&after.epoch_authenticator)
    ));

    // Restart one member from its data directory while the others talk.
    let t = Instant::now();
    let Some(gone) = members.pop() else {
        bail!("no member to restart")
    };
    let Member {
        name: gone_name,
        dir: gone_dir,
        client: gone_client,
        collector: gone_collector,
        ..
    } = gone;
    within(limit, format!("{gone_name} to shut down"), async {
        gone_client.shutdown().await;
        Ok(())
    })
    .await?;
    gone_collector.abort();
    p.step(format!("{gone_name} shut down"));
    let mut offline_bodies = Vec::new();
    for (k, m) in members.iter().take(3).enumerate() {
        let body = format!("while {gone_name} was away #{} from {}", k + 1, m.name).into_bytes();
        m.client.send(&group, &body).await?;
        offline_bodies.push((m.name.clone(), body));
    }
    for m in &members {
        let expected: Vec<Vec<u8>> = offline_bodies
            .iter()
            .filter(|(s, _)| *s != m.name)
            .map(|(_, b)| b.clone())
            .collect();
        received_all(m, &expected, limit).await?;
    }
    p.step(format!(
        "the others sent {} messages while {gone_name} was away",
        offline_bodies.len()
    ));
    let t_restart = Instant::now();
    let back = start_member(
        &gone_name, gone_dir, &key, args.suite, &bootstrap, waku_store,
    )
    .await?;
    let node = back
        .client
        .node()
        .cloned()
        .ok_or_else(|| anyhow!("no node"))?;
    poll_until(
        limit,
        format!("{gone_name}'s node to reach the store"),
        || async {
            let c = node.counters();
            // Over Waku, a peer is connected once the metadata gate admitted it.
            let reached = if args.waku {
                c.metadata_admitted > 0
            } else {
                c.store_peers > 0
            };
            Ok(if reached {
                Ok(())
            } else {
                Err("no store peer".into())
            })
        },
    )
    .await?;
    poll_until(
        limit,
        format!("{gone_name} to catch up from the store"),
        || async {
            if let Err(e) = back.client.sync().await {
                return Ok(Err(format!("sync: {e}")));
            }
            let history = back.client.history(&group, 100).await?;
            let missing: Vec<String> = offline_bodies
                .iter()
                .filter(|(_, b)| !history.iter().any(|h| h.body == *b))
                .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
                .collect();
            Ok(if missing.is_empty() {
                Ok(())
            } else {
                Err(format!("missing {missing:?}"))
            })
        },
    )
    .await?;
    members.push(back);
    // Back in the chain of links, like at the start.
    let nodes: Vec<&Node> = members.iter().filter_map(|m| m.client.node()).collect();
    if let Some(last) = nodes.len().checked_sub(1) {
        link_node(&nodes, last).await?;
    }
    let all: Vec<&Member> = members.iter().collect();
    let caught_up = converged(
        &all,
        &group,
        n,
        after.epoch,
        limit,
        "the restarted member to agree with the others",
    )
    .await?;
    let t_catchup = t_restart.elapsed();
    let restart_total = t.elapsed();
    p.step(format!(
        "{gone_name} restarted from {} and caught up in {}: history has the {} messages, epoch {} authenticator {}… like the others",
        members[n - 1].dir.display(),
        ms(t_catchup),
        offline_bodies.len(),
        caught_up.epoch,
        hex_prefix(&caught_up.epoch_authenticator)
    ));

    // The table.
    let s0 = members[0].client.stats().await;
    let s1 = members[1].client.stats().await;
    let total = p.start.elapsed();
    let invite_max = invite_times.iter().max().copied().unwrap_or_default();
    let rows: Vec<(&str, String)> = vec![
        ("suite", util::suite_label(args.suite)),
        ("clients", n.to_string()),
        ("key package", format!("{} B", s0.key_package_bytes)),
        (
            "Welcome (last invite)",
            format!("{} B", s0.last_welcome_bytes),
        ),
        (
            "commit (add, last invite)",
            format!("{} B", s0.last_commit_bytes),
        ),
        ("commit (update)", format!("{} B", s1.last_commit_bytes)),
        (
            "application message",
            format!("{} B", s0.last_message_bytes),
        ),
        ("group creation", ms(t_create)),
        (
            "invite until joined (mean / max)",
            format!("{} / {}", ms(mean(&invite_times)), ms(invite_max)),
        ),
        (
            "message fan-out latency (mean / max)",
            format!("{} / {}", ms(fanout_mean), ms(fanout_max)),
        ),
        ("concurrent-commit resolution", ms(t_resolve)),
        (
            "restart + catch-up",
            format!(
                "{} (whole restart step {})",
                ms(t_catchup),
                ms(restart_total)
            ),
        ),
        ("total", ms(total)),
    ];
    let w = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let v = rows
        .iter()
        .map(|(_, v)| v.chars().count())
        .max()
        .unwrap_or(0);
    println!();
    println!("+-{}-+-{}-+", "-".repeat(w), "-".repeat(v));
    for (k, val) in &rows {
        println!("| {k:<w$} | {val:<v$} |");
    }
    println!("+-{}-+-{}-+", "-".repeat(w), "-".repeat(v));

    for m in members {
        m.client.shutdown().await;
        m.collector.abort();
    }
    let _ = store_node.shutdown().await;
    println!("demo OK");
    Ok(())
}

#[cfg(test)]
mod tests {
    use pqmls_transport::Topic;

    use super::*;

    /// The demo's topology at a scaled-down size: a hub (the store's place) and 16 clients
    /// that bootstrap to it and are linked as [`link_nodes`] links them, all on one topic,
    /// with a 100 ms heartbeat. 16 subscribers are more than the hub's mesh keeps (12), so
    /// the hub prunes clients from its mesh; every client must still have a mesh peer
    /// once it has, and keep one. In a pure star (no links) the pruned clients have none
    /// for the 60 s backoff, which is how `pqmls demo --clients 26` stalled.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_client_keeps_a_mesh_peer_when_the_hub_prunes() {
        const CLIENTS: usize = 16;
        let topic = Topic::from_group_id(b"demo topology");
        let config = || {
            let mut c = NodeConfig::loopback();
            c.gossip_heartbeat = Duration::from_millis(100);
            c
        };
        let (hub, _hub_inbound) = Node::start(config()).await.unwrap();
        let hub_addr = hub.listen_addrs().await.unwrap().remove(0);
        hub.subscribe(&topic).await.unwrap();
        let mut clients = Vec::new();
        for _ in 0..CLIENTS {
            clients.push(
                Node::start(config().with_bootstrap(hub_addr.clone()))
                    .await
                    .unwrap(),
            );
        }
        let nodes: Vec<&Node> = clients.iter().map(|(n, _)| n).collect();
        link_nodes(&nodes).await.unwrap();
        for node in &nodes {
            node.subscribe(&topic).await.unwrap();
        }

        // The hub's mesh is at most 12, and every client has a mesh peer.
        let state = async || {
            let mut without = Vec::new();
            for (i, node) in nodes.iter().enumerate() {
                if node.mesh_peers(&topic).await.unwrap() == 0 {
                    without.push(i);
                }
            }
            (hub.mesh_peers(&topic).await.unwrap(), without)
        };
        let settled = |(hub_mesh, without): &(usize, Vec<usize>)| {
            *hub_mesh > 0 && *hub_mesh <= 12 && without.is_empty()
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut last = state().await;
        while !settled(&last) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            last = state().await;
        }
        assert!(settled(&last), "hub mesh, clients without a mesh: {last:?}");
        // Still so ten heartbeats later (a graft the hub refuses is undone by its PRUNE).
        tokio::time::sleep(Duration::from_secs(1)).await;
        let later = state().await;
        assert!(
            settled(&later),
            "hub mesh, clients without a mesh: {later:?}"
        );
    }
}
