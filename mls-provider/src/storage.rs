//! SQLite storage for OpenMLS state (DESIGN.md item 7).
//!
//! [`SqliteStorage`] is `openmls_sqlite_storage`'s provider (rusqlite 0.37, bundled
//! SQLite) on a connection it owns, with the schema migrations run on open:
//! [`SqliteStorage::open_file_encrypted`] for real use (the whole file encrypted with
//! SQLCipher, locked to one process, 0600, secure delete; see there), [`SqliteStorage::open_file`]
//! for an unencrypted file (WAL, `synchronous = FULL`, busy timeout, foreign keys; see there
//! why), [`SqliteStorage::open_in_memory`] for tests. The SDK's
//! own tables go in the same file through [`SqliteStorage::connection`].
//!
//! # Codec
//!
//! OpenMLS hands the storage serde values; `openmls_sqlite_storage` encodes each row (keys
//! and values) with a [`Codec`]. JSON, the usual choice, was 25-30 % of OpenMLS's time on
//! post-quantum groups (DESIGN.md): a 1216-byte X-Wing key is a JSON array of 1216
//! decimal numbers. [`BinaryCodec`] is postcard 1 (varints, no field names, a `u8` is one
//! byte), which stores byte strings at their own size.
//!
//! Measured with `benches/benches/storage_codec.rs` (suite 0x004F, a 32-member group,
//! in-memory SQLite, one core of a shared 2-core VM; BENCHMARKS.md has the details):
//!
//! | | postcard ([`BinaryCodec`]) | JSON ([`JsonCodec`]) |
//! |---|---|---|
//! | bytes stored by the group's creator | 58.6 kB | 218.7 kB |
//! | ratchet tree (`TreeSync`, the largest row) | 50.0 kB | 187.6 kB |
//! | encode / decode the tree | 149 µs / 185 µs | 981 µs / 1.82 ms |
//! | `MlsGroup::load` | 0.36 ms | 2.15 ms |
//! | self-update commit + merge (crypto included) | 15.9 ms | 18.2 ms |
//!
//! Postcard is not self-describing, so it cannot decode a type whose `Deserialize` calls
//! `deserialize_any`. Of everything OpenMLS 0.9 stores, one does: `MlsGroupJoinConfig`,
//! through `PastEpochDeletionPolicy`, whose `Deserialize` is an `#[serde(untagged)]` enum
//! accepting an older format (postcard returns `WontImplement`, and `MlsGroup::load`
//! fails). [`SqliteStorage`] therefore stores the join config as JSON whatever the codec
//! (same table, row and key as upstream, so with [`JsonCodec`] nothing changes): it is a
//! few hundred bytes, written when a group is created or joined and read once per load.
//! Every other stored type round-trips with postcard; `tests/storage.rs` checks that every
//! type written during a group lifecycle is decoded again, and that postcard still fails
//! on the join config (so the exception can go when OpenMLS fixes it).
//!
//! Changing the codec of an existing file is not supported: rows are not tagged with
//! their codec.
//!
//! # The message-secrets row is compressed
//!
//! OpenMLS writes its whole `MessageSecretsStore` (`write_message_secrets`) at every merge
//! and after every application message it decrypts. It holds, for each past epoch kept
//! (`max_past_epochs`; the SDK keeps 16), that epoch's secrets and its member list with
//! every member's keys: at 50 members on 0x004F, 1 022 552 bytes with postcard, of which
//! the 17 nearly identical member lists are almost all (BENCHMARKS.md, 2026-12-06). That
//! one value was written, encrypted page by page by SQLCipher, fsynced in the WAL and
//! copied by the SDK's snapshots many times per commit. [`SqliteStorage`] stores it as
//! [`MESSAGE_SECRETS_TAG`] followed by one zstd frame (level 1, RFC 8878) of the
//! codec's encoding: 89 kB for the same value, 0.2 ms to compress, 0.06 ms to decompress.
//! OpenMLS sees the same value; the row is the same row (same table, key and
//! `data_type`), replaced and deleted as before, so deleting it leaves nothing
//! (`secure_delete` as before for encrypted files).
//!
//! - A row written before (the plain encoding) is still read: no encoding of a
//!   `MessageSecretsStore` by [`BinaryCodec`] or [`JsonCodec`] starts with the tag (see
//!   [`MESSAGE_SECRETS_TAG`]), so the format is known from the first bytes. The next write
//!   replaces it by the compressed form; no migration is needed.
//! - Decompression is bounded: the frame must declare its size, which must be at most
//!   [`MAX_MESSAGE_SECRETS_LEN`], and the output is allocated at that size only after the
//!   check; a frame without a declared size, with trailing bytes or of another size is an
//!   error ([`CompressionError`], reported as `rusqlite::Error::FromSqlConversionFailure`).
//!   Larger values are refused on write.
//! - Only this row is compressed: the other large one, the ratchet tree, is one copy of
//!   each member's random keys and does not compress (zstd level 1: 75 806 bytes to
//!   74 611 at 50 members).
//! - A codec other than the two above must not produce a value starting with the tag.

use std::{
    fmt,
    marker::PhantomData,
    path::{Path, PathBuf},
    time::Duration,
};

use openmls_sqlite_storage::SqliteStorageProvider;
use openmls_traits::storage::{CURRENT_VERSION, StorageProvider, traits};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params, types::Type};

pub use openmls_sqlite_storage::Codec;

/// How long a connection waits for another connection's lock on the same file before it
/// gives up with `SQLITE_BUSY`.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Prepared statements a connection keeps (rusqlite's cache, least recently used first
/// out; rusqlite's default is 16). The SDK shares this connection and runs over a hundred
/// distinct cached statements, so with 16 they pushed each other out and most of them
/// were compiled again at each use: `sqlite3_prepare_v3` was 7 % of the CPU of a commit in
/// a 50-member group (the SDK's BENCHMARKS.md, "Requests for missing commits at 50
/// members"). A statement is a few kilobytes.
pub const STATEMENT_CACHE: usize = 256;

/// The compact binary codec: postcard 1.
#[derive(Debug, Default, Clone, Copy)]
pub struct BinaryCodec;

impl Codec for BinaryCodec {
    type Error = postcard::Error;

    fn to_vec<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, Self::Error> {
        postcard::to_stdvec(value)
    }

    fn from_slice<T: serde::de::DeserializeOwned>(slice: &[u8]) -> Result<T, Self::Error> {
        // `postcard::from_bytes` ignores trailing bytes; a stored value is exactly one
        // message, so anything left over means the row is not a `T`.
        match postcard::take_from_bytes(slice)? {
            (value, []) => Ok(value),
            _ => Err(postcard::Error::DeserializeBadEncoding),
        }
    }
}

/// The JSON codec (serde_json), the format of the OpenMLS examples and of
/// `openmls_memory_storage`. Kept for the measurement in this module's docs and for
/// reading state written as JSON.
#[derive(Debug, Default, Clone, Copy)]
pub struct JsonCodec;

impl Codec for JsonCodec {
    type Error = serde_json::Error;

    fn to_vec<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, Self::Error> {
        serde_json::to_vec(value)
    }

    fn from_slice<T: serde::de::DeserializeOwned>(slice: &[u8]) -> Result<T, Self::Error> {
        serde_json::from_slice(slice)
    }
}

/// Why the storage could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// SQLite could not open (or create) the database.
    #[error("cannot open the SQLite database")]
    Open(#[source] rusqlite::Error),
    /// A connection setting (pragma or busy timeout) could not be applied.
    #[error("cannot configure the SQLite connection: {setting}")]
    Configure {
        /// The setting that failed.
        setting: &'static str,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// SQLite did not switch the file to write-ahead logging (it reported another mode).
    #[error("SQLite kept journal mode {0:?} instead of WAL")]
    JournalMode(String),
    /// The OpenMLS schema migrations failed.
    #[error("cannot set up the OpenMLS storage schema")]
    Migration(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The key does not open the encrypted database: a wrong key, or a file that is not a
    /// database of ours. Nothing was written.
    #[error("the database key is wrong, or {0} is not an encrypted pqmls database")]
    WrongKey(PathBuf),
    /// The database file exists but is empty (0 bytes): refused, so that a damaged or
    /// half-restored file never turns silently into a fresh database.
    #[error("the database file {0} is empty")]
    EmptyFile(PathBuf),
    /// The database file is a plain (unencrypted) SQLite file where an encrypted one is
    /// expected.
    #[error("the database file {0} is not encrypted")]
    NotEncrypted(PathBuf),
    /// The database opened but is damaged (truncated or altered): `PRAGMA quick_check` or a
    /// page authentication failed.
    #[error("the database file {path} is damaged: {detail}")]
    Damaged {
        /// The database file.
        path: PathBuf,
        /// What SQLite reported.
        detail: String,
    },
    /// Another process (or another handle in this one) holds the database.
    #[error("the database {0} is in use by another process")]
    Locked(PathBuf),
    /// A file operation around the database (lock file, permissions) failed.
    #[error("cannot prepare the database file {path}")]
    File {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
}

/// A 256-bit key for an encrypted database (SQLCipher 4: AES-256-CBC per page with an
/// HMAC-SHA512 per page, keys derived from this one with PBKDF2 skipped because it is a raw
/// key). Zeroized on drop, redacted in `Debug`, compared in constant time.
#[derive(Clone, zeroize::Zeroize, zeroize::ZeroizeOnDrop)]
pub struct CipherKey([u8; 32]);

impl CipherKey {
    /// Wraps 32 key bytes (from a KDF or a key file; the caller zeroizes its copy).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        CipherKey(bytes)
    }

    /// The key bytes. Handle with care.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl subtle::ConstantTimeEq for CipherKey {
    fn ct_eq(&self, other: &Self) -> subtle::Choice {
        self.0.ct_eq(&other.0)
    }
}

impl fmt::Debug for CipherKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CipherKey(<redacted>)")
    }
}

/// The first 16 bytes of every plain SQLite 3 file (an encrypted file has random bytes there).
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// Creates `path` with mode 0600 if missing; makes an existing one 0600.
fn private_file(path: &Path) -> Result<(std::fs::File, bool), StorageError> {
    let err = |source| StorageError::File {
        path: path.to_path_buf(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let existed = path.exists();
    let file = options.open(path).map_err(err)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(err)?;
    }
    Ok((file, existed))
}

/// OpenMLS storage in SQLite: `openmls_sqlite_storage`'s provider with codec `C`
/// (default [`BinaryCodec`]), owning its connection.
///
/// It is a newtype rather than an alias of `SqliteStorageProvider<C, Connection>` so that
/// the connection stays reachable ([`Self::connection`]): the SDK keeps its own tables in
/// the same file and can wrap an OpenMLS operation and its own writes in one transaction.
/// Every [`StorageProvider`] call is forwarded to `SqliteStorageProvider<C, &Connection>`,
/// which is just a borrowed connection and costs nothing to make.
///
/// `SqliteStorage` is `Send` (not `Sync`, like [`Connection`]).
///
/// The default codec applies in type position, so `<SqliteStorage>::open_file(path)` or
/// `let s: SqliteStorage = SqliteStorage::open_file(path)?` opens with [`BinaryCodec`].
pub struct SqliteStorage<C: Codec = BinaryCodec> {
    connection: Connection,
    codec: PhantomData<C>,
    /// The exclusive lock on `<database>.lock` of [`Self::open_file_encrypted`], held as long
    /// as the storage lives.
    _lock: Option<std::fs::File>,
}

impl<C: Codec> fmt::Debug for SqliteStorage<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStorage")
            .field("connection", &self.connection)
            .field("codec", &std::any::type_name::<C>())
            .finish()
    }
}

impl<C: Codec> SqliteStorage<C> {
    /// Opens the database file at `path`, creating it if it does not exist, configures the
    /// connection and sets up the OpenMLS schema.
    ///
    /// Connection settings:
    /// - `journal_mode = WAL`: readers (the SDK's other connections) do not block the
    ///   writer, and a commit appends to the log instead of rewriting pages twice.
    /// - `synchronous = FULL`: every committed transaction is fsynced before the commit
    ///   returns. With WAL, `NORMAL` would only risk losing the last transactions on power
    ///   loss or an OS crash, never corrupting the file, but for MLS state a lost write is
    ///   not harmless: the rolled-back state holds key material that was already deleted
    ///   (forward secrecy), sender-ratchet generations that were already used, and an
    ///   epoch the rest of the group has left. One fsync per transaction is the price;
    ///   wrap each MLS operation in one transaction (see [`Self::connection`]) to pay it
    ///   once per operation rather than once per row.
    /// - `busy_timeout` = [`BUSY_TIMEOUT`]: wait for other connections' locks instead of
    ///   failing at once with `SQLITE_BUSY`.
    /// - `foreign_keys = ON`: enforced for the SDK's tables in the same file (the OpenMLS
    ///   tables declare none).
    ///
    /// # Errors
    /// [`StorageError`] if the file cannot be opened or created, a setting is refused, or
    /// the migrations fail (for example a file written by a newer schema).
    pub fn open_file(path: impl AsRef<Path>) -> Result<Self, StorageError> {
        let connection = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_URI,
        )
        .map_err(StorageError::Open)?;
        let mode: String = connection
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(|source| StorageError::Configure {
                setting: "journal_mode",
                source,
            })?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StorageError::JournalMode(mode));
        }
        connection
            .pragma_update(None, "synchronous", "FULL")
            .map_err(|source| StorageError::Configure {
                setting: "synchronous",
                source,
            })?;
        Self::from_connection(connection)
    }

    /// Opens the encrypted database at `path` (SQLCipher, through rusqlite's
    /// `bundled-sqlcipher`), creating it if it does not exist, keyed with `key`; configured
    /// as [`Self::open_file`] plus:
    ///
    /// - the whole file is encrypted (every page, the schema and the WAL), so keys,
    ///   message bodies and metadata are unreadable without `key`;
    /// - an exclusive lock on `<path>.lock` (created 0600) for as long as the storage lives:
    ///   a second opener gets [`StorageError::Locked`] at once;
    /// - the database file is created 0600 (SQLite gives the WAL and shared-memory files the
    ///   same mode), and an existing one is set to 0600;
    /// - `secure_delete = ON`: deleted rows are overwritten in the file;
    /// - an existing file must open with `key` ([`StorageError::WrongKey`] otherwise, with
    ///   nothing written), must not be empty ([`StorageError::EmptyFile`]) or plain SQLite
    ///   ([`StorageError::NotEncrypted`]), and must pass `PRAGMA quick_check`
    ///   ([`StorageError::Damaged`]; it reads every page, so a truncated file is caught here).
    ///
    /// # Errors
    /// Those above, and as [`Self::open_file`].
    pub fn open_file_encrypted(
        path: impl AsRef<Path>,
        key: &CipherKey,
    ) -> Result<Self, StorageError> {
        let path = path.as_ref();
        let mut lock_path = path.as_os_str().to_owned();
        lock_path.push(".lock");
        let lock_path = PathBuf::from(lock_path);
        let (lock, _) = private_file(&lock_path)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StorageError::Locked(path.to_path_buf()));
            }
            Err(std::fs::TryLockError::Error(source)) => {
                return Err(StorageError::File {
                    path: lock_path,
                    source,
                });
            }
        }
        let (file, existed) = private_file(path)?;
        if existed {
            let mut head = [0u8; 16];
            let len = file
                .metadata()
                .map_err(|source| StorageError::File {
                    path: path.to_path_buf(),
                    source,
                })?
                .len();
            if len == 0 {
                return Err(StorageError::EmptyFile(path.to_path_buf()));
            }
            use std::io::Read as _;
            let n = (&file)
                .read(&mut head)
                .map_err(|source| StorageError::File {
                    path: path.to_path_buf(),
                    source,
                })?;
            if n == 16 && &head == SQLITE_MAGIC {
                return Err(StorageError::NotEncrypted(path.to_path_buf()));
            }
        }
        drop(file);
        let connection = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_URI,
        )
        .map_err(StorageError::Open)?;
        // SQLCipher logs decryption failures to stderr by default; a wrong key is reported
        // as an error value instead (older SQLCipher builds without the pragma ignore it).
        let _ = connection.execute_batch("PRAGMA cipher_log_level = NONE;");
        // The raw-key form `x'..'` (64 hex digits): SQLCipher uses it as the key itself.
        let mut statement = zeroize::Zeroizing::new(String::with_capacity(80));
        statement.push_str("PRAGMA key = \"x'");
        for b in key.as_bytes() {
            use std::fmt::Write as _;
            let _ = write!(statement, "{b:02x}");
        }
        statement.push_str("'\";");
        connection
            .execute_batch(&statement)
            .map_err(|source| StorageError::Configure {
                setting: "key",
                source,
            })?;
        drop(statement);
        // The first read decrypts page 1: a wrong key (or a foreign file) fails here.
        let first: Result<i64, _> =
            connection.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0));
        match first {
            Ok(_) => {}
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::NotADatabase =>
            {
                return Err(StorageError::WrongKey(path.to_path_buf()));
            }
            Err(e) => {
                return Err(StorageError::Damaged {
                    path: path.to_path_buf(),
                    detail: e.to_string(),
                });
            }
        }
        if existed {
            let check: Result<String, _> =
                connection.query_row("PRAGMA quick_check", [], |r| r.get(0));
            match check {
                Ok(ok) if ok == "ok" => {}
                Ok(detail) => {
                    return Err(StorageError::Damaged {
                        path: path.to_path_buf(),
                        detail,
                    });
                }
                Err(e) => {
                    return Err(StorageError::Damaged {
                        path: path.to_path_buf(),
                        detail: e.to_string(),
                    });
                }
            }
        }
        connection
            .pragma_update(None, "secure_delete", true)
            .map_err(|source| StorageError::Configure {
                setting: "secure_delete",
                source,
            })?;
        let mode: String = connection
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(|source| StorageError::Configure {
                setting: "journal_mode",
                source,
            })?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StorageError::JournalMode(mode));
        }
        connection
            .pragma_update(None, "synchronous", "FULL")
            .map_err(|source| StorageError::Configure {
                setting: "synchronous",
                source,
            })?;
        let mut storage = Self::from_connection(connection)?;
        storage._lock = Some(lock);
        Ok(storage)
    }

    /// Moves everything in the write-ahead log into the database file and truncates the log
    /// to zero bytes (`PRAGMA wal_checkpoint(TRUNCATE)`), so that deleted rows do not linger
    /// in old log frames. Call it after deletions that matter (message retention, wiping a
    /// group). Needs no other connection reading at the time.
    ///
    /// # Errors
    /// SQLite's error.
    pub fn checkpoint_truncate(&self) -> Result<(), rusqlite::Error> {
        self.connection
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
    }

    /// Opens a private in-memory database (for tests), configured like [`Self::open_file`]
    /// where that applies (no WAL or fsync in memory), with the OpenMLS schema set up.
    ///
    /// # Errors
    /// [`StorageError`] if SQLite cannot allocate the database or the migrations fail.
    pub fn open_in_memory() -> Result<Self, StorageError> {
        Self::from_connection(Connection::open_in_memory().map_err(StorageError::Open)?)
    }

    /// Takes over a connection the caller opened and configured, sets `busy_timeout` and
    /// `foreign_keys` as [`Self::open_file`] does and runs the OpenMLS schema migrations
    /// (idempotent: already applied ones are skipped).
    ///
    /// # Errors
    /// [`StorageError::Configure`] or [`StorageError::Migration`].
    pub fn from_connection(mut connection: Connection) -> Result<Self, StorageError> {
        connection.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        connection
            .busy_timeout(BUSY_TIMEOUT)
            .map_err(|source| StorageError::Configure {
                setting: "busy_timeout",
                source,
            })?;
        connection
            .pragma_update(None, "foreign_keys", true)
            .map_err(|source| StorageError::Configure {
                setting: "foreign_keys",
                source,
            })?;
        SqliteStorageProvider::<C, &mut Connection>::new(&mut connection)
            .run_migrations()
            .map_err(|e| StorageError::Migration(Box::new(e)))?;
        Ok(Self {
            connection,
            codec: PhantomData,
            _lock: None,
        })
    }

    /// The connection, for the SDK's own tables in the same database and for
    /// transactions around OpenMLS operations
    /// ([`Connection::unchecked_transaction`] works through this shared reference).
    ///
    /// Do not write to the `openmls_*` tables directly; their rows are encoded with `C`.
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    /// The connection, mutably (for [`Connection::transaction`]).
    pub fn connection_mut(&mut self) -> &mut Connection {
        &mut self.connection
    }

    /// Gives the connection back, closing nothing.
    pub fn into_connection(self) -> Connection {
        self.connection
    }

    /// Writes one row of `openmls_group_data` exactly as `openmls_sqlite_storage` does (same
    /// key and value encoding, same `data_type` names), through a cached prepared statement:
    /// these rows are written on every message and commit, and preparing the statement each
    /// time (as upstream does) is a measurable part of a message's cost.
    fn write_group_data<K: serde::Serialize, V: serde::Serialize>(
        &self,
        group_id: &K,
        data_type: &str,
        value: &V,
    ) -> Result<(), rusqlite::Error> {
        let key = C::to_vec(group_id).map_err(to_sql_error)?;
        let value = C::to_vec(value).map_err(to_sql_error)?;
        self.write_group_row(&key, data_type, &value)
    }

    /// Writes (inserts or replaces) the row `(key, data_type)` of `openmls_group_data`
    /// with the stored bytes `value`.
    fn write_group_row(
        &self,
        key: &[u8],
        data_type: &str,
        value: &[u8],
    ) -> Result<(), rusqlite::Error> {
        self.connection
            .prepare_cached(
                "INSERT OR REPLACE INTO openmls_group_data
                 (group_id, data_type, group_data, provider_version) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![key, data_type, value, CURRENT_VERSION])?;
        Ok(())
    }

    /// Reads a row written by [`Self::write_group_data`] (or by upstream).
    fn read_group_data<K: serde::Serialize, V: serde::de::DeserializeOwned>(
        &self,
        group_id: &K,
        data_type: &str,
    ) -> Result<Option<V>, rusqlite::Error> {
        let key = C::to_vec(group_id).map_err(to_sql_error)?;
        self.read_group_row(&key, data_type)?
            .map(|b| C::from_slice(&b).map_err(from_sql_error))
            .transpose()
    }

    /// The stored bytes of the row `(key, data_type)` of `openmls_group_data`, if any.
    fn read_group_row(
        &self,
        key: &[u8],
        data_type: &str,
    ) -> Result<Option<Vec<u8>>, rusqlite::Error> {
        self.connection
            .prepare_cached(
                "SELECT group_data FROM openmls_group_data
                 WHERE group_id = ?1 AND data_type = ?2 AND provider_version = ?3",
            )?
            .query_row(params![key, data_type, CURRENT_VERSION], |row| row.get(0))
            .optional()
    }

    /// The upstream provider over a borrowed connection, which does the work.
    fn sqlite(&self) -> SqliteStorageProvider<C, &Connection> {
        SqliteStorageProvider::new(&self.connection)
    }
}

/// `data_type` of the join config row in `openmls_group_data` (upstream's name).
const JOIN_CONFIG: &str = "join_group_config";

/// An encoding error as `openmls_sqlite_storage` reports it.
fn to_sql_error(e: impl std::error::Error + Send + Sync + 'static) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(e))
}

/// A decoding error as `openmls_sqlite_storage` reports it.
fn from_sql_error(e: impl std::error::Error + Send + Sync + 'static) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(0, Type::Blob, Box::new(e))
}

/// `data_type` of the message-secrets row (upstream's name; its CHECK constraint allows
/// no other).
const MESSAGE_SECRETS: &str = "message_secrets";

/// The first bytes of a compressed message-secrets row; a zstd frame follows. No row
/// written before compression starts so (see the module docs): with [`BinaryCodec`] the
/// value starts with a postcard varint (`MessageSecretsStore::max_epochs`, a `usize`),
/// which ends within its first 10 bytes, and a byte with the top bit clear ends it,
/// so 10 bytes `0xFF` are no varint; with [`JsonCodec`] it starts with `{`, and `0xFF`
/// is not even UTF-8. The last byte is the format's version (1: one zstd frame).
pub const MESSAGE_SECRETS_TAG: [u8; 11] = [
    0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01,
];

/// The largest message-secrets value stored or read, uncompressed: 256 MiB. A larger
/// value is refused when written, and a row whose frame declares more (or declares
/// nothing) is an error when read, before anything is allocated for it. At 0x004F with
/// 16 past epochs the value grows by about 20 kB per member (1.02 MB at 50 members,
/// BENCHMARKS.md), so the bound is about 13 000 members; with ML-DSA-87 and
/// ML-KEM-1024 leaves (about 4.2 kB a member and epoch) about 3 700.
pub const MAX_MESSAGE_SECRETS_LEN: usize = 256 << 20;

/// zstd level for the message-secrets row. Level 1 uses a 512 KiB window at this size
/// (zstd's `clevels.h`), which spans one epoch's member list up to about 400 members of
/// 0x004F, so each past epoch's copy of the list is stored as matches against the one
/// before it.
const ZSTD_LEVEL: i32 = 1;

/// Why a message-secrets value could not be compressed or decompressed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CompressionError {
    /// The value (or the size a stored frame declares) is above the bound.
    #[error("message secrets of {len} bytes, above the bound of {max}")]
    TooLarge {
        /// The size, in bytes.
        len: u64,
        /// The bound, in bytes.
        max: usize,
    },
    /// The stored frame does not declare its decompressed size.
    #[error("compressed message secrets without a declared size")]
    UnknownSize,
    /// The stored bytes are not one whole zstd frame, or do not decompress to the size the
    /// frame declares.
    #[error("corrupt compressed message secrets")]
    Corrupt,
    /// zstd failed.
    #[error("zstd")]
    Zstd(#[source] std::io::Error),
}

/// The stored form of an encoded message-secrets value: [`MESSAGE_SECRETS_TAG`] and a zstd
/// frame that declares its decompressed size.
/// Values above `max` bytes are refused, so that nothing is stored that could not be read.
fn compress_message_secrets(value: &[u8], max: usize) -> Result<Vec<u8>, CompressionError> {
    if value.len() > max {
        return Err(CompressionError::TooLarge {
            len: value.len() as u64,
            max,
        });
    }
    // One-shot compression writes the content size into the frame header.
    let frame = zstd::bulk::compress(value, ZSTD_LEVEL).map_err(CompressionError::Zstd)?;
    let mut out = Vec::with_capacity(MESSAGE_SECRETS_TAG.len() + frame.len());
    out.extend_from_slice(&MESSAGE_SECRETS_TAG);
    out.extend_from_slice(&frame);
    Ok(out)
}

/// Decompresses one zstd frame (`frame`, without the tag) of at most `max` bytes. The
/// output is allocated at the size the frame declares, after that size is checked against
/// `max`; a frame that declares none, has bytes after it, or decompresses to another size
/// is an error.
fn decompress_message_secrets(frame: &[u8], max: usize) -> Result<Vec<u8>, CompressionError> {
    let len = match zstd::zstd_safe::get_frame_content_size(frame) {
        Ok(Some(len)) => len,
        Ok(None) => return Err(CompressionError::UnknownSize),
        Err(_) => return Err(CompressionError::Corrupt),
    };
    if len > max as u64 {
        return Err(CompressionError::TooLarge { len, max });
    }
    match zstd::zstd_safe::find_frame_compressed_size(frame) {
        Ok(n) if n == frame.len() => {}
        _ => return Err(CompressionError::Corrupt),
    }
    let len = usize::try_from(len).map_err(|_| CompressionError::Corrupt)?;
    let mut out = Vec::with_capacity(len);
    let written = zstd::bulk::Decompressor::new()
        .map_err(CompressionError::Zstd)?
        .decompress_to_buffer(frame, &mut out)
        .map_err(|_| CompressionError::Corrupt)?;
    if written != len || out.len() != len {
        return Err(CompressionError::Corrupt);
    }
    Ok(out)
}

// Every method but the join config's two forwards to `SqliteStorageProvider`; the generic parameters are passed
// explicitly because some (e.g. `clear_proposal_queue`'s `ProposalRef`) appear in no
// argument.
impl<C: Codec> StorageProvider<CURRENT_VERSION> for SqliteStorage<C> {
    type Error = rusqlite::Error;

    // The join config is stored as JSON whatever `C` is: see the module docs.
    fn write_mls_join_config<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        MlsGroupJoinConfig: traits::MlsGroupJoinConfig<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        config: &MlsGroupJoinConfig,
    ) -> Result<(), Self::Error> {
        let key = C::to_vec(group_id).map_err(to_sql_error)?;
        let value = serde_json::to_vec(config).map_err(to_sql_error)?;
        self.connection
            .prepare_cached(
                "INSERT OR REPLACE INTO openmls_group_data
                 (group_id, data_type, group_data, provider_version) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![key, JOIN_CONFIG, value, CURRENT_VERSION])?;
        Ok(())
    }

    fn append_own_leaf_node<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        LeafNode: traits::LeafNode<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        leaf_node: &LeafNode,
    ) -> Result<(), Self::Error> {
        self.sqlite()
            .append_own_leaf_node::<GroupId, LeafNode>(group_id, leaf_node)
    }

    fn queue_proposal<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        ProposalRef: traits::ProposalRef<CURRENT_VERSION>,
        QueuedProposal: traits::QueuedProposal<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        proposal_ref: &ProposalRef,
        proposal: &QueuedProposal,
    ) -> Result<(), Self::Error> {
        self.sqlite()
            .queue_proposal::<GroupId, ProposalRef, QueuedProposal>(
                group_id,
                proposal_ref,
                proposal,
            )
    }

    fn write_tree<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        TreeSync: traits::TreeSync<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        tree: &TreeSync,
    ) -> Result<(), Self::Error> {
        self.write_group_data(group_id, "tree", tree)
    }

    fn write_interim_transcript_hash<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        InterimTranscriptHash: traits::InterimTranscriptHash<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        interim_transcript_hash: &InterimTranscriptHash,
    ) -> Result<(), Self::Error> {
        self.write_group_data(group_id, "interim_transcript_hash", interim_transcript_hash)
    }

    fn write_context<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        GroupContext: traits::GroupContext<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        group_context: &GroupContext,
    ) -> Result<(), Self::Error> {
        self.write_group_data(group_id, "context", group_context)
    }

    fn write_confirmation_tag<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        ConfirmationTag: traits::ConfirmationTag<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        confirmation_tag: &ConfirmationTag,
    ) -> Result<(), Self::Error> {
        self.write_group_data(group_id, "confirmation_tag", confirmation_tag)
    }

    fn write_group_state<
        GroupState: traits::GroupState<CURRENT_VERSION>,
        GroupId: traits::GroupId<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        group_state: &GroupState,
    ) -> Result<(), Self::Error> {
        self.write_group_data(group_id, "group_state", group_state)
    }

    fn write_message_secrets<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        MessageSecrets: traits::MessageSecrets<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        message_secrets: &MessageSecrets,
    ) -> Result<(), Self::Error> {
        // Compressed (see the module docs): the one row, replaced as before.
        let key = C::to_vec(group_id).map_err(to_sql_error)?;
        // The encoded secrets are wiped from the heap once written (both buffers; zstd's
        // own working memory is not ours to wipe).
        let value = zeroize::Zeroizing::new(C::to_vec(message_secrets).map_err(to_sql_error)?);
        let packed = zeroize::Zeroizing::new(
            compress_message_secrets(&value, MAX_MESSAGE_SECRETS_LEN).map_err(to_sql_error)?,
        );
        self.write_group_row(&key, MESSAGE_SECRETS, &packed)
    }

    fn write_resumption_psk_store<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        ResumptionPskStore: traits::ResumptionPskStore<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        resumption_psk_store: &ResumptionPskStore,
    ) -> Result<(), Self::Error> {
        self.write_group_data(group_id, "resumption_psk_store", resumption_psk_store)
    }

    fn write_own_leaf_index<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        LeafNodeIndex: traits::LeafNodeIndex<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        own_leaf_index: &LeafNodeIndex,
    ) -> Result<(), Self::Error> {
        self.write_group_data(group_id, "own_leaf_index", own_leaf_index)
    }

    fn write_group_epoch_secrets<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        GroupEpochSecrets: traits::GroupEpochSecrets<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        group_epoch_secrets: &GroupEpochSecrets,
    ) -> Result<(), Self::Error> {
        self.write_group_data(group_id, "group_epoch_secrets", group_epoch_secrets)
    }

    fn write_signature_key_pair<
        SignaturePublicKey: traits::SignaturePublicKey<CURRENT_VERSION>,
        SignatureKeyPair: traits::SignatureKeyPair<CURRENT_VERSION>,
    >(
        &self,
        public_key: &SignaturePublicKey,
        signature_key_pair: &SignatureKeyPair,
    ) -> Result<(), Self::Error> {
        self.sqlite()
            .write_signature_key_pair::<SignaturePublicKey, SignatureKeyPair>(
                public_key,
                signature_key_pair,
            )
    }

    fn write_encryption_key_pair<
        EncryptionKey: traits::EncryptionKey<CURRENT_VERSION>,
        HpkeKeyPair: traits::HpkeKeyPair<CURRENT_VERSION>,
    >(
        &self,
        public_key: &EncryptionKey,
        key_pair: &HpkeKeyPair,
    ) -> Result<(), Self::Error> {
        // Upstream's row (openmls_encryption_keys), through a cached statement.
        let key = C::to_vec(public_key).map_err(to_sql_error)?;
        let value = C::to_vec(key_pair).map_err(to_sql_error)?;
        self.connection
            .prepare_cached(
                "INSERT OR REPLACE INTO openmls_encryption_keys (public_key, key_pair, provider_version)
                 VALUES (?1, ?2, ?3)",
            )?
            .execute(params![key, value, CURRENT_VERSION])?;
        Ok(())
    }

    fn write_encryption_epoch_key_pairs<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        EpochKey: traits::EpochKey<CURRENT_VERSION>,
        HpkeKeyPair: traits::HpkeKeyPair<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        epoch: &EpochKey,
        leaf_index: u32,
        key_pairs: &[HpkeKeyPair],
    ) -> Result<(), Self::Error> {
        self.sqlite()
            .write_encryption_epoch_key_pairs::<GroupId, EpochKey, HpkeKeyPair>(
                group_id, epoch, leaf_index, key_pairs,
            )
    }

    fn write_key_package<
        HashReference: traits::HashReference<CURRENT_VERSION>,
        KeyPackage: traits::KeyPackage<CURRENT_VERSION>,
    >(
        &self,
        hash_ref: &HashReference,
        key_package: &KeyPackage,
    ) -> Result<(), Self::Error> {
        self.sqlite()
            .write_key_package::<HashReference, KeyPackage>(hash_ref, key_package)
    }

    fn write_psk<
        PskId: traits::PskId<CURRENT_VERSION>,
        PskBundle: traits::PskBundle<CURRENT_VERSION>,
    >(
        &self,
        psk_id: &PskId,
        psk: &PskBundle,
    ) -> Result<(), Self::Error> {
        self.sqlite().write_psk::<PskId, PskBundle>(psk_id, psk)
    }

    fn mls_group_join_config<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        MlsGroupJoinConfig: traits::MlsGroupJoinConfig<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> Result<Option<MlsGroupJoinConfig>, Self::Error> {
        let key = C::to_vec(group_id).map_err(to_sql_error)?;
        let value: Option<Vec<u8>> = self
            .connection
            .prepare_cached(
                "SELECT group_data FROM openmls_group_data
                 WHERE group_id = ?1 AND data_type = ?2 AND provider_version = ?3",
            )?
            .query_row(params![key, JOIN_CONFIG, CURRENT_VERSION], |row| row.get(0))
            .optional()?;
        value
            .map(|bytes| {
                serde_json::from_slice(&bytes).map_err(|e| {
                    rusqlite::Error::FromSqlConversionFailure(0, Type::Blob, Box::new(e))
                })
            })
            .transpose()
    }

    fn own_leaf_nodes<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        LeafNode: traits::LeafNode<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> Result<Vec<LeafNode>, Self::Error> {
        self.sqlite().own_leaf_nodes::<GroupId, LeafNode>(group_id)
    }

    fn queued_proposal_refs<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        ProposalRef: traits::ProposalRef<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> Result<Vec<ProposalRef>, Self::Error> {
        self.sqlite()
            .queued_proposal_refs::<GroupId, ProposalRef>(group_id)
    }

    fn queued_proposals<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        ProposalRef: traits::ProposalRef<CURRENT_VERSION>,
        QueuedProposal: traits::QueuedProposal<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> Result<Vec<(ProposalRef, QueuedProposal)>, Self::Error> {
        self.sqlite()
            .queued_proposals::<GroupId, ProposalRef, QueuedProposal>(group_id)
    }

    fn tree<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        TreeSync: traits::TreeSync<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> Result<Option<TreeSync>, Self::Error> {
        self.read_group_data(group_id, "tree")
    }

    fn group_context<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        GroupContext: traits::GroupContext<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> Result<Option<GroupContext>, Self::Error> {
        self.read_group_data(group_id, "context")
    }

    fn interim_transcript_hash<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        InterimTranscriptHash: traits::InterimTranscriptHash<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> Result<Option<InterimTranscriptHash>, Self::Error> {
        self.read_group_data(group_id, "interim_transcript_hash")
    }

    fn confirmation_tag<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        ConfirmationTag: traits::ConfirmationTag<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> Result<Option<ConfirmationTag>, Self::Error> {
        self.read_group_data(group_id, "confirmation_tag")
    }

    fn group_state<
        GroupState: traits::GroupState<CURRENT_VERSION>,
        GroupId: traits::GroupId<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> Result<Option<GroupState>, Self::Error> {
        self.read_group_data(group_id, "group_state")
    }

    fn message_secrets<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        MessageSecrets: traits::MessageSecrets<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> Result<Option<MessageSecrets>, Self::Error> {
        let key = C::to_vec(group_id).map_err(to_sql_error)?;
        let Some(bytes) = self.read_group_row(&key, MESSAGE_SECRETS)? else {
            return Ok(None);
        };
        // The encoded secrets are wiped from the heap once decoded (both buffers).
        let bytes = zeroize::Zeroizing::new(bytes);
        // Rows written before compression are the plain encoding (see the module docs).
        let plain = match bytes.strip_prefix(&MESSAGE_SECRETS_TAG[..]) {
            Some(frame) => zeroize::Zeroizing::new(
                decompress_message_secrets(frame, MAX_MESSAGE_SECRETS_LEN)
                    .map_err(from_sql_error)?,
            ),
            None => zeroize::Zeroizing::new(bytes.to_vec()),
        };
        C::from_slice(&plain).map(Some).map_err(from_sql_error)
    }

    fn resumption_psk_store<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        ResumptionPskStore: traits::ResumptionPskStore<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> Result<Option<ResumptionPskStore>, Self::Error> {
        self.read_group_data(group_id, "resumption_psk_store")
    }

    fn own_leaf_index<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        LeafNodeIndex: traits::LeafNodeIndex<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> Result<Option<LeafNodeIndex>, Self::Error> {
        self.read_group_data(group_id, "own_leaf_index")
    }

    fn group_epoch_secrets<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        GroupEpochSecrets: traits::GroupEpochSecrets<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> Result<Option<GroupEpochSecrets>, Self::Error> {
        self.read_group_data(group_id, "group_epoch_secrets")
    }

    fn signature_key_pair<
        SignaturePublicKey: traits::SignaturePublicKey<CURRENT_VERSION>,
        SignatureKeyPair: traits::SignatureKeyPair<CURRENT_VERSION>,
    >(
        &self,
        public_key: &SignaturePublicKey,
    ) -> Result<Option<SignatureKeyPair>, Self::Error> {
        self.sqlite()
            .signature_key_pair::<SignaturePublicKey, SignatureKeyPair>(public_key)
    }

    fn encryption_key_pair<
        HpkeKeyPair: traits::HpkeKeyPair<CURRENT_VERSION>,
        EncryptionKey: traits::EncryptionKey<CURRENT_VERSION>,
    >(
        &self,
        public_key: &EncryptionKey,
    ) -> Result<Option<HpkeKeyPair>, Self::Error> {
        let key = C::to_vec(public_key).map_err(to_sql_error)?;
        let bytes: Option<Vec<u8>> = self
            .connection
            .prepare_cached(
                "SELECT key_pair FROM openmls_encryption_keys WHERE public_key = ?1 AND provider_version = ?2",
            )?
            .query_row(params![key, CURRENT_VERSION], |row| row.get(0))
            .optional()?;
        bytes
            .map(|b| {
                C::from_slice(&b).map_err(|e| {
                    rusqlite::Error::FromSqlConversionFailure(0, Type::Blob, Box::new(e))
                })
            })
            .transpose()
    }

    fn encryption_epoch_key_pairs<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        EpochKey: traits::EpochKey<CURRENT_VERSION>,
        HpkeKeyPair: traits::HpkeKeyPair<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        epoch: &EpochKey,
        leaf_index: u32,
    ) -> Result<Vec<HpkeKeyPair>, Self::Error> {
        self.sqlite()
            .encryption_epoch_key_pairs::<GroupId, EpochKey, HpkeKeyPair>(
                group_id, epoch, leaf_index,
            )
    }

    fn key_package<
        KeyPackageRef: traits::HashReference<CURRENT_VERSION>,
        KeyPackage: traits::KeyPackage<CURRENT_VERSION>,
    >(
        &self,
        hash_ref: &KeyPackageRef,
    ) -> Result<Option<KeyPackage>, Self::Error> {
        self.sqlite()
            .key_package::<KeyPackageRef, KeyPackage>(hash_ref)
    }

    fn psk<PskBundle: traits::PskBundle<CURRENT_VERSION>, PskId: traits::PskId<CURRENT_VERSION>>(
        &self,
        psk_id: &PskId,
    ) -> Result<Option<PskBundle>, Self::Error> {
        self.sqlite().psk::<PskBundle, PskId>(psk_id)
    }

    fn remove_proposal<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        ProposalRef: traits::ProposalRef<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        proposal_ref: &ProposalRef,
    ) -> Result<(), Self::Error> {
        self.sqlite()
            .remove_proposal::<GroupId, ProposalRef>(group_id, proposal_ref)
    }

    fn delete_own_leaf_nodes<GroupId: traits::GroupId<CURRENT_VERSION>>(
        &self,
        group_id: &GroupId,
    ) -> Result<(), Self::Error> {
        self.sqlite().delete_own_leaf_nodes::<GroupId>(group_id)
    }

    fn delete_group_config<GroupId: traits::GroupId<CURRENT_VERSION>>(
        &self,
        group_id: &GroupId,
    ) -> Result<(), Self::Error> {
        self.sqlite().delete_group_config::<GroupId>(group_id)
    }

    fn delete_tree<GroupId: traits::GroupId<CURRENT_VERSION>>(
        &self,
        group_id: &GroupId,
    ) -> Result<(), Self::Error> {
        self.sqlite().delete_tree::<GroupId>(group_id)
    }

    fn delete_confirmation_tag<GroupId: traits::GroupId<CURRENT_VERSION>>(
        &self,
        group_id: &GroupId,
    ) -> Result<(), Self::Error> {
        self.sqlite().delete_confirmation_tag::<GroupId>(group_id)
    }

    fn delete_group_state<GroupId: traits::GroupId<CURRENT_VERSION>>(
        &self,
        group_id: &GroupId,
    ) -> Result<(), Self::Error> {
        self.sqlite().delete_group_state::<GroupId>(group_id)
    }

    fn delete_context<GroupId: traits::GroupId<CURRENT_VERSION>>(
        &self,
        group_id: &GroupId,
    ) -> Result<(), Self::Error> {
        self.sqlite().delete_context::<GroupId>(group_id)
    }

    fn delete_interim_transcript_hash<GroupId: traits::GroupId<CURRENT_VERSION>>(
        &self,
        group_id: &GroupId,
    ) -> Result<(), Self::Error> {
        self.sqlite()
            .delete_interim_transcript_hash::<GroupId>(group_id)
    }

    fn delete_message_secrets<GroupId: traits::GroupId<CURRENT_VERSION>>(
        &self,
        group_id: &GroupId,
    ) -> Result<(), Self::Error> {
        // One row in either format, deleted as upstream deletes it.
        self.sqlite().delete_message_secrets::<GroupId>(group_id)
    }

    fn delete_all_resumption_psk_secrets<GroupId: traits::GroupId<CURRENT_VERSION>>(
        &self,
        group_id: &GroupId,
    ) -> Result<(), Self::Error> {
        self.sqlite()
            .delete_all_resumption_psk_secrets::<GroupId>(group_id)
    }

    fn delete_own_leaf_index<GroupId: traits::GroupId<CURRENT_VERSION>>(
        &self,
        group_id: &GroupId,
    ) -> Result<(), Self::Error> {
        self.sqlite().delete_own_leaf_index::<GroupId>(group_id)
    }

    fn delete_group_epoch_secrets<GroupId: traits::GroupId<CURRENT_VERSION>>(
        &self,
        group_id: &GroupId,
    ) -> Result<(), Self::Error> {
        self.sqlite()
            .delete_group_epoch_secrets::<GroupId>(group_id)
    }

    fn clear_proposal_queue<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        ProposalRef: traits::ProposalRef<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
    ) -> Result<(), Self::Error> {
        self.sqlite()
            .clear_proposal_queue::<GroupId, ProposalRef>(group_id)
    }

    fn delete_signature_key_pair<
        SignaturePublicKey: traits::SignaturePublicKey<CURRENT_VERSION>,
    >(
        &self,
        public_key: &SignaturePublicKey,
    ) -> Result<(), Self::Error> {
        self.sqlite()
            .delete_signature_key_pair::<SignaturePublicKey>(public_key)
    }

    fn delete_encryption_key_pair<EncryptionKey: traits::EncryptionKey<CURRENT_VERSION>>(
        &self,
        public_key: &EncryptionKey,
    ) -> Result<(), Self::Error> {
        let key = C::to_vec(public_key).map_err(to_sql_error)?;
        self.connection
            .prepare_cached("DELETE FROM openmls_encryption_keys WHERE public_key = ?1 AND provider_version = ?2")?
            .execute(params![key, CURRENT_VERSION])?;
        Ok(())
    }

    fn delete_encryption_epoch_key_pairs<
        GroupId: traits::GroupId<CURRENT_VERSION>,
        EpochKey: traits::EpochKey<CURRENT_VERSION>,
    >(
        &self,
        group_id: &GroupId,
        epoch: &EpochKey,
        leaf_index: u32,
    ) -> Result<(), Self::Error> {
        self.sqlite()
            .delete_encryption_epoch_key_pairs::<GroupId, EpochKey>(group_id, epoch, leaf_index)
    }

    fn delete_key_package<KeyPackageRef: traits::HashReference<CURRENT_VERSION>>(
        &self,
        hash_ref: &KeyPackageRef,
    ) -> Result<(), Self::Error> {
        self.sqlite().delete_key_package::<KeyPackageRef>(hash_ref)
    }

    fn delete_psk<PskKey: traits::PskId<CURRENT_VERSION>>(
        &self,
        psk_id: &PskKey,
    ) -> Result<(), Self::Error> {
        self.sqlite().delete_psk::<PskKey>(psk_id)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// A zstd frame written out by hand (RFC 8878 section 3.1.1): single segment,
    /// `declared` as an 8-byte Frame_Content_Size, then one last RLE block of `rle` zero
    /// bytes.
    fn rle_frame(declared: u64, rle: u32) -> Vec<u8> {
        let mut f = vec![0x28, 0xB5, 0x2F, 0xFD, 0b1110_0000];
        f.extend_from_slice(&declared.to_le_bytes());
        let header = 1 | (1 << 1) | (rle << 3);
        f.extend_from_slice(&header.to_le_bytes()[..3]);
        f.push(0);
        f
    }

    /// Redundant data like the stored value: the same 40 kB of random-looking bytes four
    /// times, with a small change in each copy.
    fn redundant() -> Vec<u8> {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let block: Vec<u8> = (0..40_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let mut v = Vec::new();
        for i in 0..4u8 {
            v.extend_from_slice(&block);
            v.push(i);
        }
        v
    }

    #[test]
    fn round_trip_and_size() {
        let value = redundant();
        let stored = compress_message_secrets(&value, MAX_MESSAGE_SECRETS_LEN).unwrap();
        assert!(stored.starts_with(&MESSAGE_SECRETS_TAG));
        // One copy of the block and matches for the other three.
        assert!(stored.len() < 45_000, "{} bytes", stored.len());
        let frame = &stored[MESSAGE_SECRETS_TAG.len()..];
        assert_eq!(
            decompress_message_secrets(frame, value.len()).unwrap(),
            value
        );
        assert_eq!(
            decompress_message_secrets(frame, MAX_MESSAGE_SECRETS_LEN).unwrap(),
            value
        );
        // The empty value too.
        let stored = compress_message_secrets(&[], 0).unwrap();
        let frame = &stored[MESSAGE_SECRETS_TAG.len()..];
        assert_eq!(
            decompress_message_secrets(frame, 0).unwrap(),
            Vec::<u8>::new()
        );
    }

    #[test]
    fn bound_on_write() {
        let value = redundant();
        assert!(matches!(
            compress_message_secrets(&value, value.len() - 1),
            Err(CompressionError::TooLarge { len, max }) if len == value.len() as u64 && max == value.len() - 1
        ));
        assert!(compress_message_secrets(&value, value.len()).is_ok());
    }

    #[test]
    fn bound_on_read() {
        let value = redundant();
        let stored = compress_message_secrets(&value, MAX_MESSAGE_SECRETS_LEN).unwrap();
        let frame = &stored[MESSAGE_SECRETS_TAG.len()..];
        assert!(matches!(
            decompress_message_secrets(frame, value.len() - 1),
            Err(CompressionError::TooLarge { .. })
        ));
        // The hand-made frame is valid: 16 zero bytes.
        assert_eq!(
            decompress_message_secrets(&rle_frame(16, 16), 16).unwrap(),
            vec![0; 16]
        );
        // A 16-byte frame that declares a terabyte is refused before any allocation
        // (a `Vec` of 2^40 bytes would abort the test).
        assert!(matches!(
            decompress_message_secrets(&rle_frame(1 << 40, 16), MAX_MESSAGE_SECRETS_LEN),
            Err(CompressionError::TooLarge { len, .. }) if len == 1 << 40
        ));
        // zstd reads an all-ones size as "unknown" (`ZSTD_CONTENTSIZE_UNKNOWN`).
        assert!(matches!(
            decompress_message_secrets(&rle_frame(u64::MAX, 16), MAX_MESSAGE_SECRETS_LEN),
            Err(CompressionError::UnknownSize)
        ));
    }

    #[test]
    fn corrupt_frames_are_errors() {
        // More content than declared, and less.
        assert!(matches!(
            decompress_message_secrets(&rle_frame(8, 16), 1 << 20),
            Err(CompressionError::Corrupt)
        ));
        assert!(matches!(
            decompress_message_secrets(&rle_frame(32, 16), 1 << 20),
            Err(CompressionError::Corrupt)
        ));
        // No declared size: Frame_Header_Descriptor 0 and a Window_Descriptor.
        let no_size = [0x28, 0xB5, 0x2F, 0xFD, 0x00, 0x00, 0x83, 0x00, 0x00, 0x00];
        assert!(matches!(
            decompress_message_secrets(&no_size, 1 << 20),
            Err(CompressionError::UnknownSize)
        ));
        let value = redundant();
        let stored = compress_message_secrets(&value, MAX_MESSAGE_SECRETS_LEN).unwrap();
        let frame = &stored[MESSAGE_SECRETS_TAG.len()..];
        // Truncated, followed by other bytes, altered, not a frame at all.
        assert!(decompress_message_secrets(&frame[..frame.len() - 1], 1 << 20).is_err());
        let mut longer = frame.to_vec();
        longer.push(0);
        assert!(matches!(
            decompress_message_secrets(&longer, 1 << 20),
            Err(CompressionError::Corrupt)
        ));
        let mut altered = frame.to_vec();
        let middle = altered.len() / 2;
        altered[middle] ^= 0x55;
        match decompress_message_secrets(&altered, 1 << 20) {
            Err(_) => {}
            // zstd frames carry no checksum by default: an altered literal may still
            // decompress, but never to the original value.
            Ok(out) => assert_ne!(out, value),
        }
        assert!(decompress_message_secrets(b"not a zstd frame", 1 << 20).is_err());
        assert!(decompress_message_secrets(&[], 1 << 20).is_err());
    }

    /// Why the tag cannot be mistaken for a row written before compression.
    #[test]
    fn tag_starts_no_old_row() {
        // Postcard: no varint (of any width up to `u64`) starts with ten 0xFF bytes.
        assert!(BinaryCodec::from_slice::<(u64, u8)>(&MESSAGE_SECRETS_TAG).is_err());
        assert!(postcard::take_from_bytes::<u64>(&MESSAGE_SECRETS_TAG).is_err());
        assert!(postcard::take_from_bytes::<usize>(&MESSAGE_SECRETS_TAG).is_err());
        // A valid varint ends at its first byte below 0x80.
        assert_eq!(
            postcard::take_from_bytes::<u64>(&[0xFF, 0x01]).unwrap().0,
            255
        );
        // JSON: not even UTF-8.
        assert!(JsonCodec::from_slice::<serde_json::Value>(&MESSAGE_SECRETS_TAG).is_err());
    }
}
