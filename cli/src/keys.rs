//! `pqmls keygen` and `pqmls info`: a data directory's identity and groups, offline.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use pqmls::{Ciphersuite, Config};

use crate::util;

/// Arguments of `pqmls keygen`.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// The user's name (1 to 64 letters, digits and -_.@+).
    #[arg(long)]
    name: String,
    /// The data directory (created if missing).
    #[arg(long)]
    data_dir: PathBuf,
    /// Cipher suite of the identity: hex code, decimal code or name.
    #[arg(long, default_value = util::DEFAULT_SUITE_ARG, value_parser = util::parse_suite)]
    suite: Ciphersuite,
}

/// Arguments of `pqmls info`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// The data directory to read.
    #[arg(long)]
    data_dir: PathBuf,
}

/// `writeln!` into the output buffer (writing to a `String` cannot fail).
macro_rules! outln {
    ($out:expr, $($arg:tt)*) => {{
        use std::fmt::Write as _;
        let _ = writeln!($out, $($arg)*);
    }};
}

/// Creates the identity if missing and prints it.
pub fn keygen(args: KeygenArgs) -> Result<()> {
    let mut out = String::new();
    let config = Config::new(args.name)
        .with_data_dir(&args.data_dir)
        .with_database_key(crate::dbkey::database_key(&args.data_dir)?)
        .with_suite(args.suite);
    let id = pqmls::init_identity(&config)?;
    outln!(
        out,
        "{} identity in {}",
        if id.created { "created" } else { "existing" },
        args.data_dir.display()
    );
    outln!(out, "name:        {}", id.name);
    outln!(out, "suite:       {}", util::suite_label(id.suite));
    outln!(out, "user id:     {}", id.id());
    outln!(out, "fingerprint: {}", id.fingerprint());
    util::print_stdout(&out)
}

/// Prints the identity, the supported suites and every group of a data directory.
pub fn info(args: InfoArgs) -> Result<()> {
    let mut out = String::new();
    if !args.data_dir.join(pqmls::DATABASE_FILE).is_file() {
        bail!(
            "{} holds no pqmls database ({}); create one with `pqmls keygen`",
            args.data_dir.display(),
            pqmls::DATABASE_FILE
        );
    }
    let info = pqmls::inspect(&args.data_dir, &crate::dbkey::database_key(&args.data_dir)?)?;
    outln!(out, "database: {}", info.database.display());
    match &info.identity {
        Some(id) => {
            outln!(out, "name:        {}", id.name);
            outln!(out, "suite:       {}", util::suite_label(id.suite));
            outln!(out, "user id:     {}", id.id());
            outln!(out, "fingerprint: {}", id.fingerprint());
        }
        None => outln!(out, "identity: none yet"),
    }
    outln!(out, "supported suites:");
    for cs in pqmls_provider::SUPPORTED_CIPHERSUITES {
        let default = if cs == pqmls::DEFAULT_SUITE {
            " (default)"
        } else {
            ""
        };
        outln!(
            out,
            "  {:#06x} {}{default}",
            u16::from(cs),
            util::suite_name(cs)
        );
    }
    outln!(out, "groups: {}", info.groups.len());
    for g in &info.groups {
        let epoch = g.epoch.map(|e| e.to_string()).unwrap_or_else(|| "-".into());
        outln!(
            out,
            "  {} {} epoch {epoch}, {} messages, members [{}]",
            g.id,
            if g.active { "active" } else { "left" },
            g.messages,
            g.members
                .iter()
                .map(|m| util::clean(m, false))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    util::print_stdout(&out)
}
