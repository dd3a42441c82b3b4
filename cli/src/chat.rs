//! `pqmls chat`: an interactive terminal chat (not yet implemented).

use anyhow::{Result, bail};
use clap::Args;

/// The two-terminal recipe shown by `pqmls chat --help`.
pub const TWO_TERMINALS: &str = "";

/// Arguments of `pqmls chat`.
#[derive(Debug, Args)]
pub struct ChatArgs {}

/// Runs the chat.
pub async fn run(_args: ChatArgs) -> Result<()> {
    bail!("chat is not implemented yet")
}
