//! Storage errors, split by what the caller should do: retry (transient) or give up.

/// Longest client id stored with a publication or a geo message, in bytes.
pub const CLIENT_ID_BYTES_MAX: usize = 128;
/// Longest topic or user id stored, in bytes. Both sit in Postgres btree indexes, whose entries
/// must stay under about 2.7 KB, so a longer one would fail the whole batch it is written in.
pub const KEY_TEXT_BYTES_MAX: usize = 512;
/// Longest idempotency key stored, in bytes (a user id and a client id with a short prefix).
pub const IDEM_KEY_BYTES_MAX: usize = 2 * KEY_TEXT_BYTES_MAX;

/// A storage failure.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database is unreachable or busy; the same call may succeed later.
    #[error("storage unavailable: {0}")]
    Transient(String),
    /// The call cannot succeed as made.
    #[error("storage error: {0}")]
    Permanent(String),
    /// The database refused a row's data (a bad value, a constraint, an index entry too large):
    /// the same rows always fail, but the other rows of their batch may succeed alone.
    #[error("storage refused a row: {0}")]
    Rejected(String),
    /// A record found unstorable before it was written (see [`RecordError`]).
    #[error("{0}")]
    Invalid(RecordError),
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
            StoreError::Rejected(_) => "rejected",
            StoreError::Invalid(_) => "invalid",
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
        let rejected = matches!(&e, E::Database(db) if db.code().is_some_and(|c| rejects_row(&c)));
        if transient {
            StoreError::Transient(e.to_string())
        } else if rejected {
            StoreError::Rejected(e.to_string())
        } else {
            StoreError::Permanent(e.to_string())
        }
    }
}

/// Whether a database error code says the database refused a row's data rather than the
/// statement: Postgres SQLSTATE classes 22 (data exception, e.g. NUL in text), 23 (integrity
/// constraint) and 54 (program limit, e.g. an index entry over 2.7 KB); SQLite's TOOBIG,
/// CONSTRAINT and MISMATCH (primary code in the low byte of the extended one).
fn rejects_row(code: &str) -> bool {
    // A SQLSTATE is always five characters; SQLite's extended codes have at most four digits.
    if code.len() == 5 {
        code.starts_with("22") || code.starts_with("23") || code.starts_with("54")
    } else {
        code.parse::<i32>()
            .is_ok_and(|c| matches!(c & 0xff, 18..=20))
    }
}

/// A record that cannot be stored as given: it would be refused by the database, or break the
/// batch it is written in. Checked when a writer accepts it, so only its publisher is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("the {0} must not contain NUL characters")]
    Nul(&'static str),
    #[error("the client id is longer than {CLIENT_ID_BYTES_MAX} bytes")]
    ClientIdTooLong,
    #[error("the {0} is longer than {1} bytes")]
    TooLong(&'static str, usize),
}

impl RecordError {
    /// The stable code for replies and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            RecordError::Nul(_) | RecordError::TooLong(..) => "InvalidPayload",
            RecordError::ClientIdTooLong => "ClientIdTooLong",
        }
    }
}

/// Checks one text field: no NUL (Postgres `TEXT` refuses it) and at most `max` bytes.
pub(crate) fn check_text(field: &'static str, text: &str, max: usize) -> Result<(), RecordError> {
    if text.contains('\0') {
        return Err(RecordError::Nul(field));
    }
    if text.len() > max {
        return Err(RecordError::TooLong(field, max));
    }
    Ok(())
}

/// Checks a client's id: no NUL and at most [`CLIENT_ID_BYTES_MAX`] bytes.
pub(crate) fn check_client_id(id: &str) -> Result<(), RecordError> {
    if id.len() > CLIENT_ID_BYTES_MAX {
        return Err(RecordError::ClientIdTooLong);
    }
    check_text("client id", id, CLIENT_ID_BYTES_MAX)
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        StoreError::Migration(e.to_string())
    }
}
