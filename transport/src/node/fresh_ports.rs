//! TCP dials from a fresh ephemeral port, never from the node's listening port.
//!
//! A swarm dial asks the transport for port reuse unless told otherwise, and libp2p-tcp then
//! binds the dialing socket to the node's own listening address (`SO_REUSEPORT`) before it
//! connects. That is meant for hole punching and for peers that learn our address from the
//! connection; this node needs neither (peers learn listen addresses from identify and
//! peer exchange). It costs liveness: while a socket of that port lingers in `TIME_WAIT`
//! (60 s on Linux) after a connection this node closed, binding a new dial socket to it
//! fails with `EADDRINUSE`, and libp2p-tcp falls back to a new port only for
//! `EADDRNOTAVAIL`. Every redial of a bootstrap peer (a store that restarted, a peer that
//! closed on us) then failed for up to a minute, and on a busy machine a first dial could
//! too; a test waiting 20 s for a line of six nodes to mesh timed out in CI that way.
//!
//! [`FreshPorts`] wraps the TCP transport and turns every dial into [`PortUse::New`]: the
//! kernel picks the source port at `connect`, so no lingering socket can refuse it.
//! Listening is unchanged.

use std::pin::Pin;
use std::task::{Context, Poll};

use libp2p::Multiaddr;
use libp2p::core::transport::{
    DialOpts, ListenerId, PortUse, Transport, TransportError, TransportEvent,
};

/// A transport whose dials never reuse the listening port (see the module doc).
#[derive(Debug)]
pub(super) struct FreshPorts<T>(pub(super) T);

impl<T: Transport + Unpin> Transport for FreshPorts<T> {
    type Output = T::Output;
    type Error = T::Error;
    type ListenerUpgrade = T::ListenerUpgrade;
    type Dial = T::Dial;

    fn listen_on(
        &mut self,
        id: ListenerId,
        addr: Multiaddr,
    ) -> Result<(), TransportError<Self::Error>> {
        self.0.listen_on(id, addr)
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        self.0.remove_listener(id)
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        opts: DialOpts,
    ) -> Result<Self::Dial, TransportError<Self::Error>> {
        self.0.dial(
            addr,
            DialOpts {
                port_use: PortUse::New,
                ..opts
            },
        )
    }

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, Self::Error>> {
        Pin::new(&mut self.0).poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::core::Endpoint;
    use libp2p::tcp;

    /// A TCP transport listening on loopback, and its listen address.
    async fn listening(t: &mut FreshPorts<tcp::tokio::Transport>) -> Multiaddr {
        t.listen_on(ListenerId::next(), "/ip4/127.0.0.1/tcp/0".parse().unwrap())
            .unwrap();
        loop {
            let ev = futures::future::poll_fn(|cx| Pin::new(&mut *t).poll(cx)).await;
            if let TransportEvent::NewAddress { listen_addr, .. } = ev {
                return listen_addr;
            }
        }
    }

    fn port(addr: &Multiaddr) -> Option<u16> {
        addr.iter().find_map(|p| match p {
            libp2p::multiaddr::Protocol::Tcp(port) => Some(port),
            _ => None,
        })
    }

    /// A dial that asks for port reuse leaves from another port than the node listens on,
    /// so a `TIME_WAIT` socket of the listening port cannot refuse it. Without the wrapper
    /// libp2p-tcp binds the dial to the listening port (checked on the plain transport).
    #[tokio::test]
    async fn dials_leave_from_a_fresh_port_even_when_reuse_is_asked() {
        let reuse = DialOpts {
            role: Endpoint::Dialer,
            port_use: PortUse::Reuse,
        };
        let mut server = FreshPorts(tcp::tokio::Transport::new(tcp::Config::default()));
        let server_addr = listening(&mut server).await;

        for wrapped in [false, true] {
            let mut client = FreshPorts(tcp::tokio::Transport::new(tcp::Config::default()));
            let client_addr = listening(&mut client).await;
            let dial = if wrapped {
                client.dial(server_addr.clone(), reuse).unwrap()
            } else {
                client.0.dial(server_addr.clone(), reuse).unwrap()
            };
            let stream = dial.await.unwrap();
            let local = stream.0.local_addr().unwrap().port();
            if wrapped {
                assert_ne!(
                    Some(local),
                    port(&client_addr),
                    "dialled from the listen port"
                );
            } else {
                assert_eq!(
                    Some(local),
                    port(&client_addr),
                    "plain libp2p-tcp reuses the port"
                );
            }
        }
    }
}
