//! `pqmls chat`: an interactive terminal chat. Lines typed are sent to the current group;
//! lines starting with `/` are commands (`/help`). Events are printed as they come.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use pqmls::{Ciphersuite, Client, Config, Event, GroupId, InvitePolicy, UserId};
use pqmls_transport::multiaddr::Protocol;
use pqmls_transport::node::Config as NodeConfig;
use pqmls_transport::waku::peer_exchange;
use pqmls_transport::waku::preset::Preset;
use pqmls_transport::{Multiaddr, PeerId};
use pqmls_transport::{Node, store};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::util;

/// The two-terminal recipe shown by `pqmls chat --help`.
pub const TWO_TERMINALS: &str = "\
Two terminals on one machine (alice's node is also the store, so nothing else is needed;
start alice first). Each asks for its database passphrase, or reads PQMLS_PASSPHRASE, or
PQMLS_KEY_FILE (a file with a 32-byte key), and says which:

  terminal 1:
    cargo run --release -p pqmls-cli -- chat --name alice --data-dir /tmp/pqmls-alice --listen /ip4/127.0.0.1/tcp/7001 --store
  terminal 2:
    cargo run --release -p pqmls-cli -- chat --name bob --data-dir /tmp/pqmls-bob --bootstrap /ip4/127.0.0.1/tcp/7001

Each prints its user id at start (`/whoami` shows it again). A user is their key: invite
by id, never by name. In terminal 1 type `/contact bob <bob's id>`, `/create` and
`/invite bob`; bob sees the invitation with alice's id and types `/accept 1` (or first
`/contact alice <alice's id>`, and invitations from alice join at once). `/verify bob`
shows the safety number to compare over a channel you trust. Type lines to chat; `/help`
lists the commands.
A bootstrap address may omit the /p2p/<peer id> suffix; each process prints its full
listen addresses at start. Data directories keep identity and groups across restarts.
Over Waku, add --waku to both (alice's --store is then a Waku node), and give bob the
address alice prints, with its /p2p/<peer id>: that is how bob knows whom to ask as a
Waku store.";

/// Arguments of `pqmls chat`.
#[derive(Debug, Args)]
pub struct ChatArgs {
    /// Your display name (1 to 64 letters, digits and -_.@+): a label others see. Others
    /// invite you by your user id, printed at start.
    #[arg(long)]
    name: String,
    /// Which invitations are joined without asking: everyone, contacts (the default), or
    /// nobody; the others wait for /accept.
    #[arg(long, default_value = "contacts", value_parser = parse_policy)]
    accept_invitations: InvitePolicy,
    /// Your data directory: identity, groups and history (created if missing).
    #[arg(long)]
    data_dir: PathBuf,
    /// Address to listen on, e.g. /ip4/127.0.0.1/tcp/7001 (repeatable; default a random
    /// TCP and QUIC port on 127.0.0.1).
    #[arg(long)]
    listen: Vec<Multiaddr>,
    /// A peer to dial at start, e.g. /ip4/127.0.0.1/tcp/7001 (repeatable).
    #[arg(long)]
    bootstrap: Vec<Multiaddr>,
    /// Also run a store node in this process (history and key-package directory, kept in
    /// DATA_DIR/store) on the --listen addresses, so that no separate store is needed;
    /// the chat's own node connects to it.
    #[arg(long)]
    store: bool,
    /// Discover peers on the local network with mDNS.
    #[arg(long)]
    mdns: bool,
    /// Cipher suite of your identity and the groups you create: hex code, decimal code or name.
    #[arg(long, default_value = util::DEFAULT_SUITE_ARG, value_parser = util::parse_suite)]
    suite: Ciphersuite,
    /// Run on Waku (cluster of the `local` preset) instead of pqmls's own protocols: relay
    /// for traffic, store v3 for history and key packages. With --store the store is a Waku
    /// node in this process (as `pqmls node --preset local` runs one); otherwise every
    /// --bootstrap address with a /p2p/<peer id> suffix is asked as a Waku store, and
    /// after them peers that announce store v3 (found through peer exchange too).
    #[arg(long)]
    waku: bool,
}

const HELP: &str = "\
commands (<user> is a user id, or the label of one of your contacts):
  /whoami              your user id
  /contact <label> <id>  store a contact (a user id under a label of your choosing)
  /contacts            your contacts
  /verify <user>       the safety number of you and that user: compare it with them
  /create              create a group and make it the current one
  /invite <user>       invite a user to the current group
  /invitations         invitations waiting for your consent
  /accept <n>          join the group of invitation n
  /decline <n>         forget invitation n
  /join <group-hex>    make a group you are in the current one (a unique prefix will do)
  /groups              list your groups
  /members             members of the current group, with their ids
  /history [n]         the last n (default 20) messages of the current group
  /update              commit a fresh key for yourself in the current group
  /remove <user>       remove a user from the current group
  /leave               leave the current group
  /help                this text
  /quit                exit (also Ctrl-D or Ctrl-C)
anything else is sent to the current group";

fn parse_policy(s: &str) -> Result<InvitePolicy, String> {
    match s {
        "everyone" => Ok(InvitePolicy::Everyone),
        "contacts" => Ok(InvitePolicy::Contacts),
        "nobody" => Ok(InvitePolicy::Nobody),
        other => Err(format!("{other:?}: expected everyone, contacts or nobody")),
    }
}

/// A short form of a group id for message lines.
fn short(g: &GroupId) -> String {
    g.to_string().chars().take(8).collect()
}

/// The chat session: the client and the current group.
struct Chat {
    client: Client,
    current: Option<GroupId>,
}

impl Chat {
    fn current(&self) -> Result<GroupId> {
        self.current.clone().ok_or_else(|| {
            anyhow!("no current group: /create one, /join one, or wait for an invitation")
        })
    }

    /// Handles one input line; `Ok(true)` means quit.
    async fn line(&mut self, line: &str) -> Result<bool> {
        let line = line.trim();
        if line.is_empty() {
            return Ok(false);
        }
        let Some(command) = line.strip_prefix('/') else {
            let g = self.current()?;
            let m = self.client.send(&g, line.as_bytes()).await?;
            // Delivery mark: `send` hands the message to the transport; whatever it could
            // not take yet stays in the outbox and goes out when a peer is reachable. A
            // third mark follows once a store returns it (`Event::Stored`).
            let mark = match self.client.outbox_len().await? {
                0 => "sent",
                _ => "queued: no peer took it yet, it goes out when one does",
            };
            println!("{} [{}] (#{} {mark})", clock(m.sent_ms), short(&g), m.seq);
            return Ok(false);
        };
        let mut words = command.split_whitespace();
        let verb = words.next().unwrap_or("");
        let arg = words.next();
        let arg2 = words.next();
        if words.next().is_some() || (arg2.is_some() && verb != "contact") {
            bail!("too many arguments; see /help");
        }
        let need = |what: &str| arg.ok_or_else(|| anyhow!("/{verb} needs {what}; see /help"));
        match verb {
            "quit" | "exit" => return Ok(true),
            "help" => println!("{HELP}"),
            "create" => {
                let g = self.client.create_group().await?;
                println!("* created group {g}; it is now the current group");
                self.current = Some(g);
            }
            "whoami" => println!(
                "* you are {} with user id {}",
                util::clean(self.client.name(), false),
                self.client.id()
            ),
            "contact" => {
                let label = need("a label and a user id")?;
                let id: UserId = arg2
                    .ok_or_else(|| anyhow!("/contact needs a label and a user id"))?
                    .parse()?;
                self.client.add_contact(&id, label).await?;
                println!("* {label} is {id}");
            }
            "contacts" => {
                let contacts = self.client.contacts().await?;
                if contacts.is_empty() {
                    println!("* no contacts yet: /contact <label> <user id>");
                }
                for c in contacts {
                    println!("  {} {}", util::clean(&c.name, false), c.id);
                }
            }
            "verify" => {
                let user = self.user(need("a user")?).await?;
                println!(
                    "* safety number with {}:\n  {}\n  it must read the same on their side",
                    user.short(),
                    self.client.safety_number(&user)
                );
            }
            "invitations" => {
                let pending = self.client.invitations().await?;
                if pending.is_empty() {
                    println!("* no invitations waiting");
                }
                for i in pending {
                    println!(
                        "  {}: group {} from {}",
                        i.id,
                        short(&i.group),
                        util::member(&i.inviter)
                    );
                }
            }
            "accept" => {
                let n: u64 = need("an invitation number")?
                    .parse()
                    .map_err(|_| anyhow!("/accept takes an invitation number; see /invitations"))?;
                self.client.accept(n).await?;
            }
            "decline" => {
                let n: u64 = need("an invitation number")?.parse().map_err(|_| {
                    anyhow!("/decline takes an invitation number; see /invitations")
                })?;
                self.client.decline(n).await?;
                println!("* declined invitation {n}");
            }
            "invite" => {
                let user = self.user(need("a user id or contact")?).await?;
                let g = self.current()?;
                let client = self.client.clone();
                // Inviting may wait for the user's key packages to reach a store: in the
                // background, so the chat stays responsive.
                tokio::spawn(async move {
                    let mut r = client.invite(&g, &user).await;
                    if matches!(r, Err(pqmls::Error::NoKeyPackage(_))) {
                        println!(
                            "* no key package for {} yet; waiting up to 20 s for one",
                            user.short()
                        );
                        r = match pqmls::wait_for_key_packages(&client, &user).await {
                            Ok(()) => client.invite(&g, &user).await,
                            Err(e) => Err(e),
                        };
                    }
                    match r {
                        Ok(()) => println!(
                            "* invited {} to {}: they join from the Welcome once the commit is merged",
                            user.short(),
                            short(&g)
                        ),
                        Err(e) => println!("error: inviting {}: {e}", user.short()),
                    }
                });
            }
            "join" => {
                let want = need("a group id (hex, or a unique prefix of it)")?;
                let g = group_by_prefix(&self.client.groups().await?, want)?;
                println!("* current group is now {g}");
                self.current = Some(g);
            }
            "groups" => {
                let groups = self.client.groups().await?;
                if groups.is_empty() {
                    println!("* no groups yet");
                }
                for g in groups {
                    let mark = if self.current.as_ref() == Some(&g) {
                        "*"
                    } else {
                        " "
                    };
                    match self.client.status(&g).await {
                        Ok(s) => println!(
                            "{mark} {g} epoch {} members [{}]",
                            s.epoch,
                            s.members
                                .iter()
                                .map(util::member)
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                        Err(e) => println!("{mark} {g} ({e})"),
                    }
                }
            }
            "members" => {
                let g = self.current()?;
                println!("* members of {}:", short(&g));
                for m in self.client.members(&g).await? {
                    let me = if m.id == self.client.id() {
                        " (you)"
                    } else {
                        ""
                    };
                    println!("  {}{me}  {}", util::clean(&m.name, false), m.id);
                }
            }
            "history" => {
                let n = match arg {
                    Some(a) => a
                        .parse::<usize>()
                        .map_err(|_| anyhow!("/history takes a number, not {a:?}"))?,
                    None => 20,
                };
                if n == 0 {
                    bail!("/history takes a positive number of messages");
                }
                let g = self.current()?;
                let history = self.client.history(&g, n).await?;
                if history.is_empty() {
                    println!("* no messages in {} yet", short(&g));
                }
                for m in history {
                    let who = if m.own {
                        "me".to_owned()
                    } else {
                        util::member(&m.sender)
                    };
                    println!(
                        "  {} [epoch {}] <{who}> {}",
                        clock(m.sent_ms),
                        m.epoch,
                        util::clean_bytes(&m.body, true)
                    );
                }
            }
            "update" => {
                let g = self.current()?;
                self.client.update(&g).await?;
                println!("* update committed in {}", short(&g));
            }
            "remove" => {
                let g = self.current()?;
                let user = self
                    .member(&g, need("a user id, contact or member name")?)
                    .await?;
                self.client.remove(&g, &user).await?;
                println!("* removal of {} committed in {}", user.short(), short(&g));
            }
            "leave" => {
                let g = self.current()?;
                self.client.leave(&g).await?;
                println!("* asked the members of {} to remove you", short(&g));
            }
            other => bail!("unknown command /{other}; see /help"),
        }
        Ok(false)
    }

    /// A user named on the command line: a user id, or the label of a contact.
    async fn user(&self, text: &str) -> Result<UserId> {
        if let Ok(id) = text.parse::<UserId>() {
            return Ok(id);
        }
        let found: Vec<UserId> = self
            .client
            .contacts()
            .await?
            .into_iter()
            .filter(|c| c.name == text)
            .map(|c| c.id)
            .collect();
        match found.as_slice() {
            [id] => Ok(*id),
            [] => bail!(
                "{text:?} is neither a user id (64 hex digits) nor a contact; /contact <label> <id> first"
            ),
            _ => bail!("several contacts are labelled {text:?}; use the user id"),
        }
    }

    /// A member of `g` named on the command line: a user id, a contact's label, or a display
    /// name that exactly one member has.
    async fn member(&self, g: &GroupId, text: &str) -> Result<UserId> {
        if let Ok(id) = self.user(text).await {
            return Ok(id);
        }
        let found: Vec<UserId> = self
            .client
            .members(g)
            .await?
            .into_iter()
            .filter(|m| m.name == text)
            .map(|m| m.id)
            .collect();
        match found.as_slice() {
            [id] => Ok(*id),
            [] => bail!("no member, contact or user id {text:?}"),
            _ => bail!("several members call themselves {text:?}; use the user id (/members)"),
        }
    }

    /// Prints an event (and follows the current group on joins and removals).
    fn event(&mut self, e: Event) {
        match e {
            Event::Message(m) => println!(
                "{} [{}] <{}> {}",
                clock(m.sent_ms),
                short(&m.group),
                util::member(&m.sender),
                util::clean_bytes(&m.body, true)
            ),
            Event::Joined { group, inviter } => {
                println!(
                    "* joined group {group} (invited by {}); it is now the current group",
                    util::member(&inviter)
                );
                self.current = Some(group);
            }
            Event::Invited(i) => println!(
                "* invitation {} to group {} from {} (user id {}): /accept {} or /decline {}",
                i.id,
                short(&i.group),
                util::clean(&i.inviter.name, false),
                i.inviter.id,
                i.id,
                i.id
            ),
            Event::ContactKeyChanged { label, known, seen } => println!(
                "* WARNING: someone shows your contact's name {:?} with another key: {} \
                 instead of {}. It may be a new device of theirs, or someone posing as them: \
                 compare safety numbers (/verify {}) before you trust it.",
                util::clean(&label, false),
                seen,
                known,
                seen
            ),
            Event::MemberJoined { group, member } => {
                println!("* {} joined {}", util::member(&member), short(&group));
            }
            Event::MemberLeft { group, member } => {
                println!("* {} left {}", util::member(&member), short(&group))
            }
            Event::EpochChanged { group, epoch } => {
                println!("* {} is at epoch {epoch}", short(&group))
            }
            Event::Removed { group } => {
                println!("* you are no longer a member of {group}");
                if self.current.as_ref() == Some(&group) {
                    self.current = None;
                }
            }
            Event::ForkDetected { group, epoch } => {
                println!(
                    "* fork detected in {} at epoch {epoch}; repairing",
                    short(&group)
                );
            }
            Event::ForkRecovered {
                group,
                from_epoch,
                epoch,
            } => println!(
                "* moved {} to the winning branch (from epoch {from_epoch} to {epoch})",
                short(&group)
            ),
            Event::Unrecoverable { group, epoch } => println!(
                "* {} went on without you at epoch {epoch}: asking the members to add you again",
                short(&group)
            ),
            Event::Rejoined {
                group,
                lost_epoch,
                epoch,
            } => println!(
                "* back in {} at epoch {epoch} (messages since epoch {lost_epoch} are not readable here)",
                short(&group)
            ),
            Event::Stored { group, seq } => {
                println!("* [{}] #{seq} seen by a store", short(&group))
            }
            other => println!("* {other:?}"),
        }
    }
}

/// Runs the chat until `/quit`, end of input or Ctrl-C.
pub async fn run(args: ChatArgs) -> Result<()> {
    // With --store, the store is a second libp2p node in this process, on the --listen
    // addresses, and the client's node connects to it. (Making the client's own node the
    // store deadlocks in the SDK: while the user is alone in a new group no remote peer
    // subscribes to its topic, publishing the first commit fails with NoPeers, and the
    // in-order outbox then never publishes the Welcome queued behind it.)
    let mut store_node = None;
    let mut public_addrs = Vec::new();
    let mut node = NodeConfig::loopback();
    node.mdns = args.mdns;
    let mut waku_stores: Vec<PeerId> = args.bootstrap.iter().filter_map(peer_of).collect();
    if args.store {
        let mut sc = if args.waku {
            Preset::Local
                .node_config()
                .with_store(args.data_dir.join("store"), store::Config::default())
        } else {
            pqmls::store_node(
                NodeConfig::loopback(),
                args.data_dir.join("store"),
                store::Config::default(),
            )?
        };
        if !args.listen.is_empty() {
            sc.listen = args.listen.clone();
        }
        sc.mdns = args.mdns;
        for b in &args.bootstrap {
            sc = sc.with_bootstrap(b.clone());
        }
        let (s, _inbound) = Node::start(sc)
            .await
            .context("cannot start the store node")?;
        public_addrs = s.listen_addrs().await?;
        for a in &public_addrs {
            node = node.with_bootstrap(a.clone());
        }
        waku_stores.insert(0, s.peer_id());
        store_node = Some(s);
    } else {
        if !args.listen.is_empty() {
            node.listen = args.listen.clone();
        }
        for b in &args.bootstrap {
            node = node.with_bootstrap(b.clone());
        }
    }
    // A stable peer id across restarts.
    node.data_dir = Some(args.data_dir.join("node"));
    let mut config = Config::new(args.name.clone())
        .with_data_dir(&args.data_dir)
        .with_database_key(crate::dbkey::database_key(&args.data_dir)?)
        .with_suite(args.suite);
    config.invitations = args.accept_invitations;
    let client = if args.waku {
        if waku_stores.is_empty() {
            println!(
                "* no store named (--store, or a --bootstrap address ending in /p2p/<peer id>): \
                 history and key packages come from stores found among peers, unvouched for"
            );
        }
        let mut waku = pqmls::net_waku::Config::default();
        waku.store_peers = waku_stores;
        let node = node
            .with_waku(Preset::Local.relay())
            .with_peer_exchange(peer_exchange::Config::default());
        Client::start_waku(config, node, waku).await
    } else {
        Client::start(config, node).await
    };
    let client = client.with_context(|| {
        format!(
            "cannot start the chat client in {}",
            args.data_dir.display()
        )
    })?;
    let mut events = client.events();
    println!(
        "pqmls chat: {}, suite {}{}{}",
        client.name(),
        util::suite_label(client.suite()),
        if args.store { ", store node" } else { "" },
        if args.waku { ", over Waku" } else { "" }
    );
    println!("user id: {}", client.id());
    let n = client
        .node()
        .cloned()
        .ok_or_else(|| anyhow!("the client has no libp2p node"))?;
    if store_node.is_none() {
        public_addrs = n.listen_addrs().await?;
    }
    for a in &public_addrs {
        println!("listening on {a}");
    }
    if !args.store && args.bootstrap.is_empty() && !args.mdns {
        println!("* warning: no store and no peer to dial; use --store, --bootstrap or --mdns");
    }
    // Report connectivity changes.
    let watcher = {
        let n = n.clone();
        tokio::spawn(async move {
            let mut last = (u64::MAX, u64::MAX);
            loop {
                let c = n.counters();
                let now = (c.connected_peers, c.store_peers);
                if now != last {
                    println!("* connected peers: {}, store peers: {}", now.0, now.1);
                    last = now;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };
    let mut chat = Chat {
        client: client.clone(),
        current: most_recent_group(&client).await?,
    };
    if let Some(g) = &chat.current {
        println!("* current group: {g} (/groups lists all)");
    }
    println!("type /help for commands");

    // Lines are read as bytes (read_until is cancel safe: a partial line stays in `buf`), so
    // that a line that is not UTF-8 is reported and skipped instead of ending the chat.
    let mut input = BufReader::new(tokio::io::stdin());
    let mut buf = Vec::new();
    loop {
        tokio::select! {
            read = input.read_until(b'\n', &mut buf) => match read {
                Ok(0) if buf.is_empty() => break,
                Ok(_) => {
                    let bytes = std::mem::take(&mut buf);
                    let Ok(line) = String::from_utf8(bytes) else {
                        println!("error: that line is not valid UTF-8; nothing was sent");
                        continue;
                    };
                    match chat.line(line.trim_end_matches(['\n', '\r'])).await {
                        Ok(true) => break,
                        Ok(false) => {}
                        Err(e) => println!("error: {e:#}"),
                    }
                }
                Err(e) => {
                    println!("error: reading input: {e}");
                    break;
                }
            },
            e = events.recv() => match e {
                Some(e) => chat.event(e),
                None => break,
            },
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    watcher.abort();
    println!("* bye");
    client.shutdown().await;
    if let Some(s) = store_node {
        let _ = s.shutdown().await;
    }
    Ok(())
}

/// The peer id at the end of an address (`/p2p/<peer id>`), if it has one.
fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().find_map(|p| match p {
        Protocol::P2p(id) => Some(id),
        _ => None,
    })
}

/// `HH:MM` (UTC) of a time in milliseconds since the Unix epoch, for the chat's lines.
fn clock(ms: u64) -> String {
    let minutes = ms / 60_000;
    format!("{:02}:{:02}Z", (minutes / 60) % 24, minutes % 60)
}

/// The group of `groups` whose id (hex) starts with `prefix`, if exactly one does.
fn group_by_prefix(groups: &[GroupId], prefix: &str) -> Result<GroupId> {
    let prefix = prefix.trim().to_ascii_lowercase();
    if prefix.is_empty() || !prefix.chars().all(|c| c.is_ascii_hexdigit()) {
        bail!("{prefix:?} is not a group id (hex)");
    }
    let found: Vec<&GroupId> = groups
        .iter()
        .filter(|g| g.to_string().starts_with(&prefix))
        .collect();
    match found.as_slice() {
        [g] => Ok((*g).clone()),
        [] => bail!(
            "you are in no group {prefix}...; you join automatically when a member invites you"
        ),
        many => bail!(
            "{prefix} matches {} of your groups; type more of the id",
            many.len()
        ),
    }
}

/// The group with the latest message (sent or received), else the last one listed: the
/// current group after a restart.
async fn most_recent_group(client: &Client) -> Result<Option<GroupId>> {
    let mut best: Option<(u64, GroupId)> = None;
    let groups = client.groups().await?;
    for g in &groups {
        let last = client
            .history(g, 1)
            .await?
            .first()
            .map(|m| m.sent_ms)
            .unwrap_or(0);
        if best.as_ref().is_none_or(|(t, _)| last >= *t) {
            best = Some((last, g.clone()));
        }
    }
    Ok(best.map(|(_, g)| g))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_is_utc_hours_and_minutes() {
        assert_eq!(clock(0), "00:00Z");
        assert_eq!(clock((13 * 60 + 7) * 60_000 + 59_999), "13:07Z");
        assert_eq!(clock(86_400_000 + 60_000), "00:01Z");
    }

    #[test]
    fn join_by_prefix() {
        let a: GroupId = "a1b2c3d4e5f60718293a4b5c6d7e8f90".parse().unwrap();
        let b: GroupId = "a1ff0000000000000000000000000000".parse().unwrap();
        let groups = vec![a.clone(), b.clone()];
        assert_eq!(group_by_prefix(&groups, "a1b2c3d4").unwrap(), a);
        assert_eq!(group_by_prefix(&groups, "A1FF").unwrap(), b);
        assert!(group_by_prefix(&groups, "a1").is_err(), "ambiguous");
        assert!(group_by_prefix(&groups, "ffff").is_err(), "none");
        assert!(group_by_prefix(&groups, "xyz").is_err(), "not hex");
    }
}
