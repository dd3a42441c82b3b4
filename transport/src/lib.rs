//! pqmls-transport (docs to come).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod error;
mod message;
pub mod node;
mod rpc;
pub mod store;

pub use error::{Error, Result};
pub use libp2p::{Multiaddr, PeerId, multiaddr};
pub use message::{Message, MessageId, Topic, Validator, Verdict};
pub use node::{Inbound, Node};
pub use rpc::PROTOCOL as STORE_PROTOCOL;
