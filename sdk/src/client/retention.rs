//! Retention: deleting history and wiping a client (data at rest, `crate::at_rest`).
//!
//! Every deletion runs with `secure_delete` on (the rows' bytes are overwritten in the file)
//! and ends with a WAL checkpoint that truncates the log, so deleted messages do not linger
//! in old log frames; the database is encrypted in any case.
//!
//! [`crate::Config::history_retention`] is applied when the database is opened, then by the
//! client's timer every [`retention_period`]. Its clock is the fork horizon's
//! (`State::horizon_ms`): the wall clock, never behind the time elapsed on the tokio clock
//! since the client opened, so a wall clock set back does not stretch the retention (and
//! in paused tokio time it follows virtual time).

use std::time::Duration;

use openmls_traits::OpenMlsProvider as _;
use tokio::time::Instant;

use super::{Client, Inner};
use crate::GroupId;
use crate::error::Result;

/// How often the timer applies a history retention of `keep`: a tenth of it, at least one
/// `tick` and at most a minute. A message is kept at most `keep` plus this long.
pub(super) fn retention_period(keep: Duration, tick: Duration) -> Duration {
    (keep / 10).min(Duration::from_secs(60)).max(tick)
}

impl Inner {
    /// Applies the history retention if it is set and its period has passed since the
    /// last time (the first tick applies it at once). Called by the timer.
    pub(super) async fn retention_due(&self, now: Instant) {
        let (keep, tick) = {
            let s = self.state.lock().await;
            (s.config.history_retention, s.config.tick)
        };
        let Some(keep) = keep else { return };
        match self.retention_next.lock() {
            Ok(mut next) if next.is_none_or(|t| now >= t) => {
                *next = Some(now + retention_period(keep, tick));
            }
            _ => return,
        }
        let r = self
            .locked(|s| crate::at_rest::expire_history(s.provider.storage(), keep, s.horizon_ms()))
            .await;
        match r {
            Ok(0) => {}
            Ok(n) => tracing::debug!("{}: retention deleted {n} messages", self.name),
            Err(e) => tracing::warn!("{}: applying the history retention failed: {e}", self.name),
        }
    }
}

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
    /// opens and by its timer): deletes the messages sent longer ago than that. Returns how
    /// many.
    ///
    /// # Errors
    /// [`crate::Error::Database`].
    pub async fn expire_history(&self) -> Result<u64> {
        self.inner
            .locked(|s| match s.config.history_retention {
                Some(keep) => {
                    crate::at_rest::expire_history(s.provider.storage(), keep, s.horizon_ms())
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_period_is_a_tenth_between_a_tick_and_a_minute() {
        let tick = Duration::from_millis(20);
        assert_eq!(
            retention_period(Duration::from_secs(100), tick),
            Duration::from_secs(10)
        );
        assert_eq!(retention_period(Duration::from_millis(1), tick), tick);
        assert_eq!(
            retention_period(Duration::from_secs(30 * 24 * 3600), tick),
            Duration::from_secs(60)
        );
        // A tick longer than a minute wins.
        let slow = Duration::from_secs(120);
        assert_eq!(retention_period(Duration::from_secs(3600), slow), slow);
    }
}
