//! Storage errors, split by what the caller should do: retry (transient) or give up.

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database is unreachable or busy; the same call may succeed later.
    #[error("storage unavailable: {0}")]
    Transient(String),
    /// The call cannot succeed as made.
    #[error("storage error: {0}")]
    Permanent(String),
    /// Migrations failed to apply.
    #[error("storage migration failed: {0}")]
    Migration(String),
    /// The storage configuration is unusable.
    #[error("storage configuration: {0}")]
    Config(String),
}

impl StoreError {
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Transient(_))
    }

    /// Bounded label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            StoreError::Transient(_) => "transient",
            StoreError::Permanent(_) => "permanent",
            StoreError::Migration(_) => "migration",
            StoreError::Config(_) => "config",
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        use sqlx::Error as E;
        let transient = match &e {
            E::Io(_)
            | E::Tls(_)
            | E::PoolTimedOut
            | E::PoolClosed
            | E::WorkerCrashed
            | E::Protocol(_) => true,
            E::Database(db) => db.code().is_some_and(|c| {
                // Postgres: connection exceptions (08), admin/crash shutdown (57P0x), cannot
                // connect now (57P03), serialization failure and deadlock (40001, 40P01).
                // SQLite: SQLITE_BUSY (5) and SQLITE_LOCKED (6).
                c.starts_with("08")
                    || c.starts_with("57P")
                    || c == "40001"
                    || c == "40P01"
                    || c == "5"
                    || c == "6"
            }),
            _ => false,
        };
        if transient {
            StoreError::Transient(e.to_string())
        } else {
            StoreError::Permanent(e.to_string())
        }
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        StoreError::Migration(e.to_string())
    }
}
