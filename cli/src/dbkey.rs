//! Where the CLI gets the key of a data directory's (encrypted) database, and says so.
//!
//! In this order:
//! 1. `PQMLS_KEY_FILE`: a file holding the 32-byte key, raw or as 64 hex digits (a key
//!    kept in a platform keystore or on removable media);
//! 2. `PQMLS_PASSPHRASE`: a passphrase, stretched with Argon2id (the SDK's
//!    `DatabaseKey::Passphrase`);
//! 3. on a terminal, a passphrase asked for without echo.
//!
//! Otherwise it stops with an error naming these three. The source is printed to stderr.

use std::io::IsTerminal as _;
use std::path::Path;

use anyhow::{Context as _, Result, bail};
use pqmls::DatabaseKey;
use zeroize::Zeroizing;

/// Environment variable naming a key file.
pub const KEY_FILE_VAR: &str = "PQMLS_KEY_FILE";
/// Environment variable holding a passphrase.
pub const PASSPHRASE_VAR: &str = "PQMLS_PASSPHRASE";

/// Parses a key file: 32 raw bytes, or 64 hex digits with optional surrounding whitespace.
fn parse_key_file(bytes: &[u8]) -> Option<[u8; 32]> {
    if let Ok(raw) = <[u8; 32]>::try_from(bytes) {
        return Some(raw);
    }
    let text = std::str::from_utf8(bytes).ok()?.trim();
    if text.len() != 64 {
        return None;
    }
    let mut key = [0u8; 32];
    for (i, b) in key.iter_mut().enumerate() {
        *b = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(key)
}

/// The key in the file `PQMLS_KEY_FILE` names, if that variable is set; tells on stderr
/// that the key for `data_dir` came from there.
///
/// # Errors
/// The file cannot be read or holds no key.
pub fn key_file(data_dir: &Path) -> Result<Option<DatabaseKey>> {
    let Some(path) = std::env::var_os(KEY_FILE_VAR) else {
        return Ok(None);
    };
    let bytes =
        Zeroizing::new(std::fs::read(&path).with_context(|| {
            format!("cannot read {KEY_FILE_VAR}={}", Path::new(&path).display())
        })?);
    let Some(key) = parse_key_file(&bytes) else {
        bail!(
            "{KEY_FILE_VAR}={}: expected 32 bytes or 64 hex digits",
            Path::new(&path).display()
        );
    };
    let key = Zeroizing::new(key);
    eprintln!(
        "database key for {}: from the key file {} ({KEY_FILE_VAR})",
        data_dir.display(),
        Path::new(&path).display()
    );
    Ok(Some(DatabaseKey::from_bytes(*key)))
}

/// The database key for `data_dir`, from the first source that has one; tells on stderr
/// which source it was.
pub fn database_key(data_dir: &Path) -> Result<DatabaseKey> {
    if let Some(key) = key_file(data_dir)? {
        return Ok(key);
    }
    if let Ok(passphrase) = std::env::var(PASSPHRASE_VAR) {
        let passphrase = Zeroizing::new(passphrase);
        if passphrase.is_empty() {
            bail!("{PASSPHRASE_VAR} is empty");
        }
        eprintln!(
            "database key for {}: from the passphrase in {PASSPHRASE_VAR}",
            data_dir.display()
        );
        return Ok(DatabaseKey::passphrase(passphrase.as_str()));
    }
    if std::io::stdin().is_terminal() {
        let prompt = format!("passphrase for the database in {}: ", data_dir.display());
        let passphrase = Zeroizing::new(
            rpassword::prompt_password(prompt).context("cannot read the passphrase")?,
        );
        if passphrase.is_empty() {
            bail!("empty passphrase");
        }
        eprintln!(
            "database key for {}: from the passphrase typed",
            data_dir.display()
        );
        return Ok(DatabaseKey::passphrase(passphrase.as_str()));
    }
    bail!(
        "no key for the encrypted database in {}: set {KEY_FILE_VAR} (a file with 32 bytes or \
         64 hex digits) or {PASSPHRASE_VAR}, or run on a terminal to be asked for a passphrase",
        data_dir.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files() {
        assert_eq!(parse_key_file(&[7u8; 32]), Some([7u8; 32]));
        let hex = "0b".repeat(32) + "\n";
        assert_eq!(parse_key_file(hex.as_bytes()), Some([0x0b; 32]));
        assert_eq!(parse_key_file(b"short"), None);
        assert_eq!(parse_key_file("zz".repeat(32).as_bytes()), None);
    }
}
