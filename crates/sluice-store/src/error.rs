/// Errors of the store. Callers map `Conflict` and `NotFound` to 409 and 404.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A uniqueness rule was broken (an endpoint name already used by the account).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The row does not exist.
    #[error("not found")]
    NotFound,
    /// A conditional write found the row changed since it was read (another writer was first).
    #[error("the {0} was changed by another request meanwhile; retry")]
    Stale(&'static str),
    /// A stored value could not be decoded (a corrupt or newer database).
    #[error("corrupt row in {table}: {message}")]
    Corrupt { table: &'static str, message: String },
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Applying migrations failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}
