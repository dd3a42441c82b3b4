//! Retention: deleting history and wiping a client (data at rest, `crate::at_rest`).
//!
//! Every deletion runs with `secure_delete` on (the rows' bytes are overwritten in the file)
//! and ends with a WAL checkpoint that truncates the log, so deleted messages do not linger
//! in old log frames; the database is encrypted in any case.

use openmls_traits::OpenMlsProvider as _;

use super::Client;
use crate::GroupId;
use crate::error::Result;

impl Client {
    /// Deletes one message (by its [`crate::ReceivedMessage::seq`]) from this client's history
    /// of `group`. Returns whether there was such a message. Only this client's copy goes:
    /// the other members keep theirs.
    ///
    /// # Errors
    /// [`crate::Error::Database`].
    pub async fn delete_message(&self, group: &GroupId, seq: i64) -> Result<bool> {
        self.inner
            .locked(|s| {
                let n = s.db().execute(
                    "DELETE FROM pqmls_messages WHERE group_id = ?1 AND seq = ?2",
                    rusqlite::params![group.0, seq],
                )?;
                s.provider.storage().checkpoint_truncate()?;
                Ok(n > 0)
            })
            .await
    }

    /// Deletes this client's whole history of `group` (the group itself stays). Returns how
    /// many messages were deleted.
    ///
    /// # Errors
    /// [`crate::Error::Database`].
    pub async fn delete_history(&self, group: &GroupId) -> Result<u64> {
        self.inner
            .locked(|s| {
                let n = s
                    .db()
                    .execute("DELETE FROM pqmls_messages WHERE group_id = ?1", [&group.0])?;
                s.provider.storage().checkpoint_truncate()?;
                Ok(n as u64)
            })
            .await
    }

    /// Applies [`crate::Config::history_retention`] now (it is also applied when the client
    /// opens): deletes the messages sent longer ago than that. Returns how many.
    ///
    /// # Errors
    /// [`crate::Error::Database`].
    pub async fn expire_history(&self) -> Result<u64> {
        self.inner
            .locked(|s| match s.config.history_retention {
                Some(keep) => crate::at_rest::expire_history(s.provider.storage(), keep),
                None => Ok(0),
            })
            .await
    }

    /// Wipes this client: stops it and deletes its database (identity, groups, keys,
    /// history) from the data directory, and the directory if nothing else is in it. The
    /// identity is gone for good; a client opened on the directory again starts afresh. An
    /// in-memory client is just stopped.
    ///
    /// # Errors
    /// [`crate::Error::Storage`] if a file cannot be removed.
    pub async fn wipe(self) -> Result<()> {
        let dir = self.inner.state.lock().await.config.data_dir.clone();
        // Stops the task and drops the last handle: the connection closes and the lock goes.
        self.shutdown().await;
        match dir {
            Some(dir) => crate::at_rest::remove_files(&dir),
            None => Ok(()),
        }
    }
}
