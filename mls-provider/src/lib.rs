//! pqmls-provider: an OpenMLS provider (crypto, randomness, SQLite storage) for every
//! OpenMLS cipher suite. Work in progress (issue 3).

pub mod storage;
pub use storage::{BinaryCodec, JsonCodec, SqliteStorage, StorageError};
