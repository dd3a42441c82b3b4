//! The node's side of Waku lightpush v3 ([`crate::waku::lightpush`]): the client call
//! [`Node::lightpush`] and the service that answers it.

use libp2p::PeerId;
use libp2p::request_response;

use super::{Command, Error, Node, Reply, Result, Service, Task, bump};
use crate::waku::framing::Framed;
use crate::waku::lightpush::{
    self, LightPushRequest, LightPushResponse, Refused, Status, UNKNOWN_REQUEST_ID,
};
use crate::waku::{PubsubTopic, WakuMessage};

impl Node {
    /// Pushes `message` through the lightpush service `peer` (`/vac/waku/lightpush/3.0.0`),
    /// which publishes it on relay: on `shard` if given, otherwise on the shard of its
    /// content topic, which the service derives by autosharding. Returns the number of relay
    /// peers the service sent it to (at least 1).
    ///
    /// The message is not checked here beyond what the spec forbids (`meta` over 64 bytes):
    /// the service decides, and its refusal comes back typed.
    ///
    /// # Errors
    ///
    /// [`Error::LightPush`] with the service's [`Status`] when it refuses (also for a
    /// success naming no relay peers), [`Error::Request`] if the request failed (timeout,
    /// closed connection, a peer without the protocol, an unreadable answer),
    /// [`Error::WakuMessage`] for a message the spec forbids, [`Error::Config`] if Waku is
    /// off, [`Error::Busy`] with too many requests outstanding, [`Error::Shutdown`].
    pub async fn lightpush(
        &self,
        peer: PeerId,
        shard: Option<PubsubTopic>,
        message: WakuMessage,
    ) -> Result<u32> {
        self.relay_config()?;
        message.check()?;
        self.call(|r| Command::LightPush(peer, shard, message, r))
            .await
    }
}

impl Task {
    /// Sends a lightpush request as a client.
    pub(super) fn lightpush(
        &mut self,
        peer: PeerId,
        shard: Option<PubsubTopic>,
        message: WakuMessage,
        reply: Reply<u32>,
    ) {
        if !self.has_room(1 + self.waku_requests()) {
            let _ = reply.send(Err(Error::Busy));
            return;
        }
        let request = LightPushRequest {
            request_id: self.request_id(),
            pubsub_topic: shard.map(|s| s.to_string()),
            message: Some(message),
        };
        let Some(b) = self.swarm.behaviour_mut().lightpush.as_mut() else {
            let _ = reply.send(Err(Error::Config("Waku is off".into())));
            return;
        };
        let id = b.send_request(&peer, Framed::Message(request));
        self.lightpushes.insert(id, reply);
    }

    /// The service's answer to one request: checks, publishes, and builds the response.
    fn serve_lightpush(&mut self, request: Framed<LightPushRequest>) -> LightPushResponse {
        let request = match request {
            Framed::Message(r) => r,
            Framed::Malformed => {
                return LightPushResponse::error(
                    UNKNOWN_REQUEST_ID,
                    Status::BadRequest,
                    "not a LightPushRequest",
                );
            }
            Framed::Busy => {
                return LightPushResponse::error(
                    UNKNOWN_REQUEST_ID,
                    Status::TooManyRequests,
                    "too many lightpush requests at once",
                );
            }
            Framed::TooLarge(len) => {
                return LightPushResponse::error(
                    UNKNOWN_REQUEST_ID,
                    Status::PayloadTooLarge,
                    &format!("request of {len} bytes is too large"),
                );
            }
        };
        let id = request.request_id.clone();
        let (Some(_), Some(waku)) = (&self.lightpush_service, &self.waku) else {
            return LightPushResponse::error(id, Status::InternalServerError, "no service");
        };
        let (shard, message) = match lightpush::check(&waku.config, &request) {
            Ok(v) => v,
            Err((status, desc)) => return LightPushResponse::error(id, status, &desc),
        };
        match self.relay_publish_counted(shard, &message) {
            Ok((_, peers)) => {
                LightPushResponse::success(id, u32::try_from(peers).unwrap_or(u32::MAX))
            }
            Err(Error::NoPeers) => LightPushResponse::error(
                id,
                Status::NoPeersToRelay,
                &format!("no relay peers on {shard}"),
            ),
            Err(Error::Duplicate) => LightPushResponse::error(
                id,
                Status::BadRequest,
                "the same message was relayed recently",
            ),
            Err(Error::MessageTooLarge { len, max }) => LightPushResponse::error(
                id,
                Status::PayloadTooLarge,
                &format!("message of {len} bytes exceeds the limit of {max} bytes"),
            ),
            Err(e) => LightPushResponse::error(id, Status::InternalServerError, &e.to_string()),
        }
    }

    pub(super) fn on_lightpush(
        &mut self,
        event: request_response::Event<Framed<LightPushRequest>, LightPushResponse>,
    ) {
        match event {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                let response = if self.rate_allows(Service::Lightpush, peer) {
                    self.serve_lightpush(request)
                } else {
                    let id = match &request {
                        Framed::Message(r) => r.request_id.as_str(),
                        _ => UNKNOWN_REQUEST_ID,
                    };
                    LightPushResponse::error(id, Status::TooManyRequests, "too many requests")
                };
                if response.status() == Status::Success {
                    bump(&self.stats.lightpush_served);
                } else {
                    bump(&self.stats.lightpush_refused);
                }
                if let Some(b) = self.swarm.behaviour_mut().lightpush.as_mut() {
                    // An error means the stream is already gone; nothing to do.
                    let _ = b.send_response(channel, response);
                }
            }
            request_response::Event::Message {
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                if let Some(reply) = self.lightpushes.remove(&request_id) {
                    let outcome = match Refused::of(&response) {
                        None => Ok(response.relay_peer_count.unwrap_or(0)),
                        Some(refused) => Err(Error::LightPush(refused)),
                    };
                    let _ = reply.send(outcome);
                }
            }
            request_response::Event::OutboundFailure {
                request_id, error, ..
            } => {
                if let Some(reply) = self.lightpushes.remove(&request_id) {
                    let _ = reply.send(Err(Error::Request(error.to_string())));
                }
            }
            // Requests that could not be read are counted by the codec.
            request_response::Event::InboundFailure { .. }
            | request_response::Event::ResponseSent { .. } => {}
        }
    }
}
