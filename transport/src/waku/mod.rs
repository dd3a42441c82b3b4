//! Waku, the wire protocols of the Logos Messaging network, in pure Rust.
//!
//! Specs: logos-co/logos-lips, `docs/messaging/`. Each module cites the sections it
//! implements. Built piece by piece beside the crate's own protocols, which stay as they
//! are until the SDK moves onto Waku.
//!
//! Dependencies, and why:
//! - `prost` for the protobuf messages (`WakuMessage`, the segment message, store,
//!   lightpush, filter, metadata): proto3 with optional fields and zigzag `sint64`, which a
//!   hand-written codec would have to reproduce exactly; prost is already in the tree
//!   through libp2p, so it costs no build time.
//! - `sha3` for the Keccak-256 of segmentation (not SHA3-256: the original Keccak padding),
//!   already in the tree through ml-kem.
//! - `leopard-codec` for segmentation parity: Reed-Solomon in GF(2^8) by the Leopard
//!   algorithm with Leopard's field polynomial (0x11D) and Cantor basis, the algorithm the
//!   reference implementation uses through nim-leopard (up to 256 shards). Pure Rust, two
//!   small dependencies already in the tree.
//! - `k256` for the secp256k1 signatures of node records ([`enr`], the EIP-778 "v4"
//!   scheme: ECDSA over a Keccak-256 prehash, `r || s`, low S). libp2p's secp256k1 keys
//!   (which Waku nodes use as node keys, and which a record must be signed with so that
//!   its peer id is the node's) are this same crate, but libp2p signs SHA-256 digests in
//!   DER, so the prehash signer is used directly. The `enr` crate was not taken: it
//!   brings its own RLP and key traits and a second copy of `k256`'s dependencies for
//!   about 300 lines of code here that decode under our bounds.

pub mod enr;
pub mod filter;
pub mod framing;
pub mod lightpush;
pub mod message;
pub mod metadata;
pub mod peer_exchange;
pub mod preset;
pub mod relay;
pub mod segmentation;
pub mod sharding;
pub mod store;

pub use message::{MessageError, MessageHash, WakuMessage, message_hash, message_hash_js};
pub use sharding::{ContentTopic, PubsubTopic};
