//! Data at rest: the database of a data directory is encrypted as a whole (SQLCipher, see
//! [`pqmls_provider::SqliteStorage::open_file_encrypted`]), keyed by the application.
//!
//! - **Key.** [`DatabaseKey::Key`] is a 32-byte key the application keeps (a platform
//!   keystore, a key file); [`DatabaseKey::Passphrase`] is turned into one with Argon2id
//!   (RFC 9106; 64 MiB, 3 passes, 1 lane: the "second recommended option" of RFC 9106
//!   section 4), with a random 16-byte salt kept in `pqmls.salt` beside the database. A
//!   data directory is opened with the kind of key it was created with.
//! - **Files.** The directory is made 0700, the database, its WAL, the salt and the lock
//!   file 0600.
//! - **One process.** The database is locked for as long as a client (or an offline tool)
//!   has it open; a second opener gets [`pqmls_provider::StorageError::Locked`].
//! - **Never a silent new identity.** A wrong key, an empty, truncated or plain file, or an
//!   existing database without an identity is an error; a fresh identity is made only in a
//!   database this call created.
//! - **Deletion.** `secure_delete` is on; after retention deletions the WAL is checkpointed
//!   and truncated ([`crate::Client::delete_message`], [`crate::Client::delete_history`],
//!   [`crate::Config::history_retention`], applied at open and by the client's timer).

use std::path::Path;
use std::time::Duration;

use pqmls_provider::{CipherKey, SqliteStorage, StorageError};
use zeroize::Zeroizing;

use crate::config::DATABASE_FILE;
use crate::db;
use crate::error::{Error, Result};

/// File of the Argon2id salt of a passphrase-keyed data directory.
pub const SALT_FILE: &str = "pqmls.salt";

/// Argon2id memory cost in KiB (64 MiB).
const ARGON2_MEMORY_KIB: u32 = 64 * 1024;
/// Argon2id passes.
const ARGON2_PASSES: u32 = 3;

/// How the application keys its database.
#[derive(Clone)]
#[non_exhaustive]
pub enum DatabaseKey {
    /// A 256-bit key, used as it is.
    Key(CipherKey),
    /// A passphrase, stretched with Argon2id and the directory's salt.
    Passphrase(Zeroizing<String>),
    /// **Insecure: no encryption at all.** The database is plain SQLite, configured as the
    /// encrypted one otherwise (WAL, `synchronous = FULL`, `secure_delete`), so that the
    /// cost of encryption at rest can be measured end to end (`benches/benches/
    /// sdk_at_rest.rs`). It exists only with the `insecure-plain-database` feature, which
    /// no shipped binary enables; never use it in an application.
    #[cfg(feature = "insecure-plain-database")]
    InsecurePlaintext,
}

impl DatabaseKey {
    /// A 256-bit key (the caller zeroizes its own copy).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        DatabaseKey::Key(CipherKey::from_bytes(bytes))
    }

    /// A passphrase.
    pub fn passphrase(passphrase: impl Into<String>) -> Self {
        DatabaseKey::Passphrase(Zeroizing::new(passphrase.into()))
    }

    /// A fresh random key from the operating system (for throwaway data directories).
    ///
    /// # Errors
    /// [`Error::Crypto`] if the operating system's generator fails.
    pub fn random() -> Result<Self> {
        use openmls_traits::random::OpenMlsRand as _;
        let crypto =
            pqmls_provider::PqCrypto::new().map_err(|e| Error::Crypto(format!("{e:?}")))?;
        let bytes: Zeroizing<[u8; 32]> = Zeroizing::new(
            crypto
                .random_array()
                .map_err(|e| Error::Crypto(format!("{e:?}")))?,
        );
        Ok(Self::from_bytes(*bytes))
    }
}

impl std::fmt::Debug for DatabaseKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DatabaseKey::Key(_) => f.write_str("DatabaseKey::Key(<redacted>)"),
            DatabaseKey::Passphrase(_) => f.write_str("DatabaseKey::Passphrase(<redacted>)"),
            #[cfg(feature = "insecure-plain-database")]
            DatabaseKey::InsecurePlaintext => f.write_str("DatabaseKey::InsecurePlaintext"),
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| {
        Error::Storage(StorageError::File {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// Creates `dir` (and its parents) if missing and makes it 0700.
fn private_dir(dir: &Path) -> Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(io(dir))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io(dir))?;
    }
    Ok(())
}

/// The salt of a passphrase-keyed directory: read it, or make it when the database is new.
fn salt(dir: &Path, database_is_new: bool) -> Result<[u8; 16]> {
    let path = dir.join(SALT_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => <[u8; 16]>::try_from(bytes.as_slice()).map_err(|_| {
            Error::Storage(StorageError::Damaged {
                path: path.clone(),
                detail: format!("the salt file has {} bytes, not 16", bytes.len()),
            })
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && database_is_new => {
            use openmls_traits::random::OpenMlsRand as _;
            let crypto =
                pqmls_provider::PqCrypto::new().map_err(|e| Error::Crypto(format!("{e:?}")))?;
            let salt: [u8; 16] = crypto
                .random_array()
                .map_err(|e| Error::Crypto(format!("{e:?}")))?;
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            let mut file = options.open(&path).map_err(io(&path))?;
            std::io::Write::write_all(&mut file, &salt).map_err(io(&path))?;
            file.sync_all().map_err(io(&path))?;
            Ok(salt)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // An existing database without its salt: the key cannot be derived. Refuse
            // rather than make a new salt (the database would never open again).
            Err(Error::Storage(StorageError::Damaged {
                path,
                detail: "the passphrase salt file is missing".into(),
            }))
        }
        Err(e) => Err(io(&path)(e)),
    }
}

/// Argon2id(passphrase, salt) -> 32 bytes.
fn stretch(passphrase: &str, salt: &[u8; 16]) -> Result<CipherKey> {
    let params = argon2::Params::new(ARGON2_MEMORY_KIB, ARGON2_PASSES, 1, Some(32))
        .map_err(|e| Error::Crypto(format!("argon2 parameters: {e}")))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(passphrase.as_bytes(), salt, out.as_mut_slice())
        .map_err(|e| Error::Crypto(format!("argon2: {e}")))?;
    Ok(CipherKey::from_bytes(*out))
}

/// Opens the encrypted database of `dir` (creating the directory and the database if they do
/// not exist), sets up the SDK's schema, and applies the history retention.
pub(crate) fn open(
    dir: &Path,
    key: Option<&DatabaseKey>,
    history_retention: Option<Duration>,
) -> Result<SqliteStorage> {
    open_with(dir, key, history_retention, true)
}

/// Opens the existing encrypted database of `dir` to read it (`pqmls info`): nothing is
/// created, no schema is migrated, no retention runs. (The lock file beside the database
/// is made if missing, and the database is locked while it is open.)
pub(crate) fn open_existing(dir: &Path, key: &DatabaseKey) -> Result<SqliteStorage> {
    open_with(dir, Some(key), None, false)
}

fn open_with(
    dir: &Path,
    key: Option<&DatabaseKey>,
    history_retention: Option<Duration>,
    create: bool,
) -> Result<SqliteStorage> {
    let key = key.ok_or_else(|| {
        Error::Config(
            "a data directory needs a database key (Config::database_key): its database is \
             encrypted"
                .into(),
        )
    })?;
    let path = dir.join(DATABASE_FILE);
    if !create && !path.is_file() {
        return Err(Error::Storage(StorageError::File {
            path,
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no pqmls database here (pqmls keygen or a client creates one)",
            ),
        }));
    }
    if create {
        private_dir(dir)?;
    }
    let database_is_new = !path.exists();
    let cipher_key = match key {
        DatabaseKey::Key(k) => k.clone(),
        DatabaseKey::Passphrase(p) => stretch(p, &salt(dir, database_is_new)?)?,
        #[cfg(feature = "insecure-plain-database")]
        DatabaseKey::InsecurePlaintext => return open_plain(&path, history_retention, create),
    };
    let storage = SqliteStorage::open_file_encrypted(&path, &cipher_key)?;
    finish_open(storage, path, database_is_new, history_retention, create)
}

/// The steps of an open after the file is open: schema, the refusal to make an identity in
/// an existing database, retention.
fn finish_open(
    storage: SqliteStorage,
    path: std::path::PathBuf,
    database_is_new: bool,
    history_retention: Option<Duration>,
    create: bool,
) -> Result<SqliteStorage> {
    if create {
        db::migrate(storage.connection())?;
    }
    if !database_is_new {
        let identities: i64 =
            storage
                .connection()
                .query_row("SELECT count(*) FROM pqmls_identity", [], |r| r.get(0))?;
        if identities == 0 {
            return Err(Error::Storage(StorageError::Damaged {
                path,
                detail: "the database holds no identity; refusing to make a new one in an \
                         existing database (move the file away to start afresh)"
                    .into(),
            }));
        }
    }
    if let Some(keep) = history_retention {
        expire_history(&storage, keep, now_ms())?;
    }
    Ok(storage)
}

/// [`DatabaseKey::InsecurePlaintext`]: the same database in plain SQLite, with the same
/// settings ([`SqliteStorage::open_file`] sets WAL and `synchronous = FULL`; `secure_delete`
/// is set here as the encrypted open sets it).
#[cfg(feature = "insecure-plain-database")]
fn open_plain(
    path: &Path,
    history_retention: Option<Duration>,
    create: bool,
) -> Result<SqliteStorage> {
    let database_is_new = !path.exists();
    let storage = SqliteStorage::open_file(path)?;
    storage
        .connection()
        .pragma_update(None, "secure_delete", true)?;
    finish_open(
        storage,
        path.to_path_buf(),
        database_is_new,
        history_retention,
        create,
    )
}

/// Milliseconds since the Unix epoch, now.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Deletes the application messages sent more than `keep` before `now_ms` (milliseconds
/// since the Unix epoch; sent by the sender's clock, the time the history shows), then
/// checkpoints and truncates the WAL. Returns how many.
pub(crate) fn expire_history(storage: &SqliteStorage, keep: Duration, now_ms: u64) -> Result<u64> {
    let keep_ms = u64::try_from(keep.as_millis()).unwrap_or(u64::MAX);
    let cutoff = now_ms.saturating_sub(keep_ms);
    let n = storage.connection().execute(
        "DELETE FROM pqmls_messages WHERE sent_ms < ?1",
        [db::to_i64(cutoff)],
    )?;
    if n > 0 {
        storage.checkpoint_truncate()?;
    }
    Ok(n as u64)
}

/// Removes the files of a data directory's database (database, WAL, shared memory, lock,
/// salt), and the directory itself if nothing else is left in it.
pub(crate) fn remove_files(dir: &Path) -> Result<()> {
    for name in [
        DATABASE_FILE.to_string(),
        format!("{DATABASE_FILE}-wal"),
        format!("{DATABASE_FILE}-shm"),
        format!("{DATABASE_FILE}.lock"),
        SALT_FILE.to_string(),
    ] {
        let path = dir.join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&path)(e)),
        }
    }
    let _ = std::fs::remove_dir(dir);
    Ok(())
}
