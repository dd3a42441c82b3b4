//! pqmls-provider: an OpenMLS provider (crypto, randomness, SQLite storage) for every
//! OpenMLS cipher suite. Work in progress (issue 3).
