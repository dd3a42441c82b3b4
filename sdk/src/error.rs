//! The SDK's error type.

use crate::GroupId;

/// Everything a [`crate::Client`] call can fail with.
///
/// Errors about the caller's input (unknown group, oversized message, unknown user) leave
/// the client fully usable. Storage and transport errors are reported as they come; the
/// operation's state change is rolled back, so the call can be retried.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is unusable (empty or over-long name, bad limits).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The data directory holds another identity than the configuration asks for.
    #[error(
        "the data directory belongs to {found:?} (suite {found_suite:#06x}), not {wanted:?} (suite {wanted_suite:#06x})"
    )]
    IdentityMismatch {
        /// The name stored in the data directory.
        found: String,
        /// Its cipher suite.
        found_suite: u16,
        /// The name in the configuration.
        wanted: String,
        /// The suite in the configuration.
        wanted_suite: u16,
    },
    /// The cipher suite is not supported by the provider.
    #[error("cipher suite {0:#06x} is not supported")]
    UnsupportedSuite(u16),
    /// No group with this id is known to this client.
    #[error("unknown group {0}")]
    UnknownGroup(GroupId),
    /// The client is no longer a member of this group (it left or was removed).
    #[error("not a member of group {0} any more")]
    NotMember(GroupId),
    /// The user is not a member of the group (for `remove`).
    #[error("{user} is not a member of group {group}")]
    UnknownMember {
        /// The group.
        group: GroupId,
        /// The user's id.
        user: crate::UserId,
    },
    /// `remove` was given the client's own name: MLS members cannot commit their own
    /// removal; [`crate::Client::leave`] asks the others to.
    #[error("cannot remove yourself from group {0}: use leave")]
    RemoveSelf(GroupId),
    /// The user is already a member of the group (for `invite`).
    #[error("{user} is already a member of group {group}")]
    AlreadyMember {
        /// The group.
        group: GroupId,
        /// The user's id.
        user: crate::UserId,
    },
    /// The user is listed more than once (for `invite_many`).
    #[error("{user} is listed twice in one invitation of group {group}")]
    DuplicateInvitee {
        /// The group.
        group: GroupId,
        /// The user's id.
        user: crate::UserId,
    },
    /// The directory holds no usable key package for this user.
    #[error("no key package found for {0}")]
    NoKeyPackage(crate::UserId),
    /// A key package from the directory was invalid (not signed by the user's key, wrong
    /// suite, expired).
    #[error("invalid key package for {user}: {reason}")]
    InvalidKeyPackage {
        /// The id (hex) of the user it was fetched for.
        user: String,
        /// Why it was refused.
        reason: String,
    },
    /// The message is larger than [`crate::Config::max_message_size`].
    #[error("message of {len} bytes exceeds the limit of {max} bytes")]
    MessageTooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// OpenMLS refused an operation.
    #[error("MLS error: {0}")]
    Mls(String),
    /// The SQLite database failed.
    #[error("database error: {0}")]
    Database(#[from] rusqlite::Error),
    /// The provider's storage could not be opened.
    #[error("storage error: {0}")]
    Storage(#[from] pqmls_provider::StorageError),
    /// Creating the data directory failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The transport failed.
    #[error("transport error: {0}")]
    Transport(#[from] pqmls_transport::Error),
    /// Randomness or key generation failed.
    #[error("crypto error: {0}")]
    Crypto(String),
    /// No pending invitation has this number.
    #[error("no pending invitation {0}")]
    UnknownInvitation(u64),
    /// A pending invitation's Welcome can no longer be used (its key package was used or
    /// replaced meanwhile); the inviter can invite again.
    #[error("invitation {0} can no longer be used")]
    InvitationUnusable(u64),
    /// The client has shut down (or stopped at a test fail point).
    #[error("the client has shut down")]
    Shutdown,
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Turns any OpenMLS error into [`Error::Mls`] with its debug text.
pub(crate) fn mls<E: std::fmt::Debug>(e: E) -> Error {
    Error::Mls(format!("{e:?}"))
}
