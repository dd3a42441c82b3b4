//! Offline access to a data directory: create the identity without starting a client, and
//! read what a data directory holds (identity, groups, epochs, members) without a network.
//!
//! These functions open the (encrypted) database directly, with the application's key;
//! they are meant for tools such as `pqmls keygen` and `pqmls info`. The database is locked
//! to one opener at a time, so they fail with [`pqmls_provider::StorageError::Locked`]
//! while a client has the directory open.

use std::path::{Path, PathBuf};

use openmls::prelude::*;
use pqmls_provider::SignatureKeyPair;
use rusqlite::OptionalExtension;
use sha2::{Digest, Sha256};

use crate::config::{Config, DATABASE_FILE};
use crate::error::{Error, Result};
use crate::{GroupId, db};

/// The identity kept in a data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct IdentityInfo {
    /// The user's name (the identity in the MLS credential).
    pub name: String,
    /// The cipher suite of the identity.
    pub suite: Ciphersuite,
    /// The signature public key.
    pub public_key: Vec<u8>,
    /// Whether this call created the identity (`false`: it was already there).
    pub created: bool,
}

impl IdentityInfo {
    /// The user's id (what others invite them by).
    pub fn id(&self) -> crate::UserId {
        crate::UserId::of_key(self.suite.signature_algorithm(), &self.public_key)
    }

    /// A short fingerprint of the public key: the first 16 bytes of its SHA-256, in hex
    /// groups of four digits (`a1b2:c3d4:…`).
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.public_key)
    }
}

/// The fingerprint of a signature public key, as [`IdentityInfo::fingerprint`] shows it.
pub fn fingerprint(public_key: &[u8]) -> String {
    let digest = Sha256::digest(public_key);
    digest
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .chunks(2)
        .map(|c| c.concat())
        .collect::<Vec<_>>()
        .join(":")
}

/// One group as stored in a data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupInfo {
    /// The group's id.
    pub id: GroupId,
    /// Whether this user is still a member (`false` after leaving or being removed).
    pub active: bool,
    /// The epoch of the stored MLS state (`None` when there is none, e.g. after leaving).
    pub epoch: Option<u64>,
    /// The cipher suite of the group, when its MLS state is stored.
    pub suite: Option<Ciphersuite>,
    /// Member names in leaf order (empty when no MLS state is stored).
    pub members: Vec<String>,
    /// Application messages kept in the history.
    pub messages: u64,
}

/// What a data directory holds.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DataDirInfo {
    /// The database file that was read.
    pub database: PathBuf,
    /// The identity, if one was created.
    pub identity: Option<IdentityInfo>,
    /// Every group the user is or was in, ordered by id.
    pub groups: Vec<GroupInfo>,
}

/// The name rule: names are used in directory keys and topics, so they stay plain.
pub(crate) fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || "-_.@+".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "invalid name {name:?}: 1 to 64 bytes of letters, digits and -_.@+"
        )))
    }
}

fn suite_from_code(code: u16) -> Result<Ciphersuite> {
    pqmls_provider::SUPPORTED_CIPHERSUITES
        .iter()
        .copied()
        .find(|s| u16::from(*s) == code)
        .ok_or(Error::UnsupportedSuite(code))
}

fn read_identity(db: &rusqlite::Connection) -> Result<Option<(String, u16, Vec<u8>)>> {
    Ok(db
        .query_row(
            "SELECT name, suite, signer FROM pqmls_identity WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?)
}

/// Creates the identity of `config` in its data directory if there is none yet, and
/// returns it. Needs no network; a client started later on the directory uses it.
///
/// `Client::open` does the same on first start, so either may create the identity.
///
/// # Errors
/// [`Error::Config`] without a data directory or for an invalid name,
/// [`Error::UnsupportedSuite`], [`Error::IdentityMismatch`] if the directory holds another
/// identity, [`Error::Crypto`], [`Error::Io`], [`Error::Storage`], [`Error::Database`].
pub fn init_identity(config: &Config) -> Result<IdentityInfo> {
    let dir = config
        .data_dir
        .as_deref()
        .ok_or_else(|| Error::Config("init_identity needs a data directory".into()))?;
    check_name(&config.name)?;
    let suite_code = u16::from(config.suite);
    suite_from_code(suite_code)?;
    let storage = crate::at_rest::open(dir, config.database_key.as_ref(), None)?;
    let crypto = pqmls_provider::PqCrypto::new().map_err(|e| Error::Crypto(format!("{e:?}")))?;
    let (signer, created) = load_or_create_signer(storage.connection(), config, &mut crypto.rng())?;
    Ok(IdentityInfo {
        name: config.name.clone(),
        suite: config.suite,
        public_key: signer.public().to_vec(),
        created,
    })
}

/// The signing key of the identity in `db`, created (and stored) for `config` if there is
/// none (drawn from `rng`, the provider's); `true` if it was created. Shared by
/// [`init_identity`] and `Client::open`.
pub(crate) fn load_or_create_signer(
    db: &rusqlite::Connection,
    config: &Config,
    rng: &mut pqmls_provider::ProviderRng<'_>,
) -> Result<(SignatureKeyPair, bool)> {
    let suite_code = u16::from(config.suite);
    if let Some((name, suite, signer)) = read_identity(db)? {
        if name != config.name || suite != suite_code {
            return Err(Error::IdentityMismatch {
                found: name,
                found_suite: suite,
                wanted: config.name.clone(),
                wanted_suite: suite_code,
            });
        }
        let signer =
            SignatureKeyPair::from_bytes(&signer).map_err(|e| Error::Crypto(format!("{e:?}")))?;
        return Ok((signer, false));
    }
    let signer = SignatureKeyPair::generate_with_rng(config.suite.signature_algorithm(), rng)
        .map_err(|e| Error::Crypto(format!("{e:?}")))?;
    db.execute(
        "INSERT INTO pqmls_identity (id, name, suite, signer) VALUES (1, ?1, ?2, ?3)",
        rusqlite::params![config.name, suite_code, &signer.to_bytes()[..]],
    )?;
    Ok((signer, true))
}

/// Reads what a data directory holds: its identity and every group with its epoch and
/// members, with the database's key. Needs no network and changes nothing: a directory
/// without a database is an error, nothing is created or migrated (the lock file beside the
/// database is made if missing).
///
/// # Errors
/// [`Error::UnsupportedSuite`] if the stored identity names an unknown suite,
/// [`Error::Mls`] if a group's stored state cannot be loaded, [`Error::Crypto`],
/// [`Error::Io`], [`Error::Storage`], [`Error::Database`].
pub fn inspect(data_dir: &Path, key: &crate::DatabaseKey) -> Result<DataDirInfo> {
    let storage = crate::at_rest::open_existing(data_dir, key)?;
    let identity = match read_identity(storage.connection())? {
        Some((name, suite, signer)) => {
            let signer = SignatureKeyPair::from_bytes(&signer)
                .map_err(|e| Error::Crypto(format!("{e:?}")))?;
            Some(IdentityInfo {
                name,
                suite: suite_from_code(suite)?,
                public_key: signer.public().to_vec(),
                created: false,
            })
        }
        None => None,
    };
    let rows: Vec<(Vec<u8>, bool)> = storage
        .connection()
        .prepare("SELECT group_id, active FROM pqmls_groups ORDER BY group_id")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut groups = Vec::with_capacity(rows.len());
    for (id, active) in rows {
        let messages: i64 = storage.connection().query_row(
            "SELECT COUNT(*) FROM pqmls_messages WHERE group_id = ?1",
            [&id],
            |r| r.get(0),
        )?;
        let mls = MlsGroup::load(&storage, &openmls::group::GroupId::from_slice(&id))
            .map_err(crate::error::mls)?;
        let (epoch, suite, members) = match mls {
            Some(g) => (
                Some(g.epoch().as_u64()),
                Some(g.ciphersuite()),
                g.members()
                    .map(|m| {
                        String::from_utf8_lossy(m.credential.serialized_content()).into_owned()
                    })
                    .collect(),
            ),
            None => (None, None, Vec::new()),
        };
        groups.push(GroupInfo {
            id: GroupId(id),
            active,
            epoch,
            suite,
            members,
            messages: db::to_u64(messages),
        });
    }
    Ok(DataDirInfo {
        database: data_dir.join(DATABASE_FILE),
        identity,
        groups,
    })
}
