//! Network presets: the settings a Waku node needs to join one network, by name, as the Nim
//! node's `--preset` (logos-delivery `waku/factory/networks_config.nim`).
//!
//! | preset | cluster | shards (autosharding) | max message | listens on | entry nodes |
//! |---|---|---|---|---|---|
//! | `local` | 0 | 8 | 150 KiB | 127.0.0.1, random ports | none (tests, the demo) |
//! | `logos.dev` | 3 | 8 | 150 KiB | 0.0.0.0, TCP 60000 | given by the user |
//!
//! `local` uses cluster 0, the Nim node's default cluster, which no public network uses, so
//! a local node that is pointed at a public node by mistake is refused by the metadata gate
//! on both sides. logos.dev's numbers are those of the Nim node's `LogosDevConf`; its entry
//! nodes are deliberately not built in (none is reachable from the machines this is tested
//! on, and a test must never need one): pass them as bootstrap addresses. What the Nim
//! node's logos.dev preset also turns on and this crate does not have: mix, Kademlia
//! discovery on Waku's own protocol id, discv5, and p2p reliability; peer exchange stands
//! in for discovery.

use std::time::Duration;

use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;

use super::{filter, lightpush, peer_exchange, relay};
use crate::node::Config;

/// A named network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Preset {
    /// A private network on this machine: tests and the demo.
    Local,
    /// The Logos Dev Network (cluster 3).
    LogosDev,
}

impl Preset {
    /// Every preset.
    pub const ALL: [Preset; 2] = [Preset::Local, Preset::LogosDev];

    /// The name given on the command line (`local`, `logos.dev`).
    pub fn name(self) -> &'static str {
        match self {
            Preset::Local => "local",
            Preset::LogosDev => "logos.dev",
        }
    }

    /// The preset of `name`, if one has it.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    /// The cluster id.
    pub fn cluster(self) -> u16 {
        match self {
            Preset::Local => 0,
            Preset::LogosDev => 3,
        }
    }

    /// Relay settings: the cluster, 8 shards for autosharding (all subscribed), 150 KiB.
    pub fn relay(self) -> relay::Config {
        let mut r = relay::Config::new(self.cluster());
        r.shard_count = relay::DEFAULT_SHARD_COUNT;
        r.max_message_size = relay::DEFAULT_MAX_MESSAGE_SIZE;
        r
    }

    /// The addresses a node of this preset listens on by default.
    pub fn listen(self) -> Vec<Multiaddr> {
        match self {
            Preset::Local => Config::loopback().listen,
            Preset::LogosDev => vec![
                Multiaddr::empty()
                    .with(Protocol::Ip4([0, 0, 0, 0].into()))
                    .with(Protocol::Tcp(60000)),
            ],
        }
    }

    /// A full node of this preset: relay on every shard, lightpush and filter services,
    /// peer exchange; no mDNS and no pqmls Kademlia (neither is Waku's). Add a store with
    /// [`Config::with_store`] and entry nodes with [`Config::with_bootstrap`].
    pub fn node_config(self) -> Config {
        let base = match self {
            Preset::Local => Config::loopback(),
            Preset::LogosDev => Config {
                mdns: false,
                kademlia: false,
                ..Config::default()
            },
        };
        let mut px = peer_exchange::Config::default();
        if self == Preset::Local {
            // Local networks are small and quick: look for peers sooner.
            px.interval = Duration::from_secs(5);
        }
        Config {
            listen: self.listen(),
            ..base
        }
        .with_waku(self.relay())
        .with_lightpush_service(lightpush::Config::default())
        .with_filter_service(filter::Config::default())
        .with_peer_exchange(px)
    }
}

impl std::fmt::Display for Preset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Preset {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::parse(s).ok_or_else(|| {
            let names: Vec<&str> = Self::ALL.iter().map(|p| p.name()).collect();
            format!("unknown preset {s:?} (known: {})", names.join(", "))
        })
    }
}
