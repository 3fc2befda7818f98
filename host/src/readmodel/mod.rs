//! Read models: where a projection version's documents, checkpoint and dead
//! letters are kept, in SQLite (one file per read model, the default) or in
//! PostgreSQL (one table per read model in the database every host shares).
//!
//! [`ReadModelDb`] is the one API the rest of the host uses; it hands each
//! call to its backend (`sqlite.rs`, `postgres.rs`). On both, a batch's
//! documents and its checkpoint are committed in one transaction, so the
//! read model and its checkpoint always agree: after a crash the next run
//! resumes exactly after the last committed batch. Declared indexes become
//! partial expression indexes on the JSON field, used by the listings that
//! filter or order by it. A listing may carry a time limit past which the
//! database cuts it off. Where the backends answer differently (document
//! text, comparisons across JSON types, order of mixed types) is written at
//! the top of `postgres.rs`.
//!
//! Fencing (PostgreSQL only): several hosts may open the same read model,
//! and only the one holding its lease may write it. The lease code hands the
//! lane's epoch to [`ReadModelDb::set_fence`]; every commit checks it in its
//! own transaction and is refused with [`Fenced`] once another host has
//! taken the lease over. This module does not take or renew leases.

use std::path::Path;

mod postgres;
mod postgres_sql;
mod query;
mod sqlite;
mod sqlite_sql;
#[cfg(test)]
mod tests;

use crate::runtime::{DocumentSource, Writes};
use postgres::PgReadModel;
pub use query::{validate_field, Filter, FilterValue, Op, Order, Page, Query, QueryError, SortValue};
use sqlite::SqliteReadModel;

/// Where a projection is in `$all`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Checkpoint {
    /// Commit position of the last event applied.
    pub position: u64,
    /// Events applied so far (delivered to the module).
    pub events: u64,
}

/// An event a projection with `on_error=skip` failed on and went past.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeadLetter {
    /// Its commit position in `$all`.
    pub position: u64,
    /// Its stream.
    pub stream: String,
    /// Its revision in that stream.
    pub revision: u64,
    /// Its type.
    pub event_type: String,
    /// Why the module failed on it.
    pub error: String,
}

/// One document of a listing.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// The document's key.
    pub key: String,
    /// The document, JSON text.
    pub doc: String,
    /// The ordering field's value in it, for an ordered listing (`Null` otherwise).
    pub sort_value: SortValue,
}

/// A commit refused because this host no longer holds the read model's
/// lease (its epoch is not the row's any more, or it never set one): nothing
/// of the batch was kept. Find it with `error.downcast_ref::<Fenced>()`.
#[derive(Debug, thiserror::Error)]
#[error("this host no longer holds the lease on read model {readmodel} of {projection}; another host writes it now")]
pub struct Fenced {
    /// The projection.
    pub projection: String,
    /// Its read model.
    pub readmodel: String,
}

/// A batch the read model cannot hold, however often it is tried (PostgreSQL
/// text holds no NUL character). The runner treats it as the module's
/// failure: it faults the projection, or becomes a dead letter under `skip`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unstorable(pub String);

/// One projection version's read model, in either backend.
#[derive(Debug)]
pub struct ReadModelDb {
    backend: Backend,
}

#[derive(Debug)]
enum Backend {
    Sqlite(Box<SqliteReadModel>),
    Postgres(PgReadModel),
}

/// Runs the same call on whichever backend `$self` has.
macro_rules! on_backend {
    ($self:ident, $db:ident => $call:expr) => {
        match &$self.backend {
            Backend::Sqlite($db) => $call,
            Backend::Postgres($db) => $call,
        }
    };
}

impl ReadModelDb {
    /// Opens (creating if needed) the SQLite database at `path`.
    pub fn open(path: &Path) -> anyhow::Result<ReadModelDb> {
        Ok(ReadModelDb { backend: Backend::Sqlite(Box::new(SqliteReadModel::open(path)?)) })
    }

    /// Opens the read model `readmodel` of `projection` in PostgreSQL,
    /// creating its row and table if missing (several hosts may do so at once).
    /// Its commits are refused until [`ReadModelDb::set_fence`] gives the lease's epoch.
    pub fn open_postgres(pg: &crate::pg::Postgres, projection: &str, readmodel: &str) -> anyhow::Result<ReadModelDb> {
        Ok(ReadModelDb { backend: Backend::Postgres(PgReadModel::open(pg, projection, readmodel)?) })
    }

    /// Drops the read model `readmodel` of `projection` from PostgreSQL: its
    /// documents, checkpoint and dead letters. Nothing to do if it is not there.
    pub fn remove_postgres(pg: &crate::pg::Postgres, projection: &str, readmodel: &str) -> anyhow::Result<()> {
        PgReadModel::remove(pg, projection, readmodel)
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// The database file (SQLite only).
    pub fn path(&self) -> Option<&Path> {
        match &self.backend {
            Backend::Sqlite(db) => Some(db.path()),
            Backend::Postgres(_) => None,
        }
    }

    /// Its row in `projector.readmodels` (PostgreSQL only).
    pub fn readmodel_id(&self) -> Option<i64> {
        match &self.backend {
            Backend::Sqlite(_) => None,
            Backend::Postgres(db) => Some(db.id()),
        }
    }

    /// Sets the lease epoch under which this host commits (`None`: it holds
    /// no lease, and every commit is refused). SQLite ignores it.
    pub fn set_fence(&self, epoch: Option<i64>) {
        if let Backend::Postgres(db) = &self.backend {
            db.set_fence(epoch);
        }
    }

    /// Copies what the write-ahead log holds back into the database and
    /// empties the log (SQLite), waiting for the commit under way; nothing
    /// to do on PostgreSQL.
    pub fn fold_log(&self) -> anyhow::Result<()> {
        match &self.backend {
            Backend::Sqlite(db) => db.fold_log(),
            Backend::Postgres(_) => Ok(()),
        }
    }

    /// Creates the expression index for `field` of `collection`'s documents.
    pub fn create_index(&self, collection: &str, field: &str) -> anyhow::Result<()> {
        on_backend!(self, db => db.create_index(collection, field))
    }

    /// The declared indexes in place, as the SQL that creates them.
    pub fn indexes(&self) -> anyhow::Result<Vec<String>> {
        on_backend!(self, db => db.indexes())
    }

    /// The last committed checkpoint, if any batch was committed.
    pub fn checkpoint(&self) -> anyhow::Result<Option<Checkpoint>> {
        on_backend!(self, db => db.checkpoint())
    }

    /// Commits a batch's writes and its checkpoint in one transaction (on
    /// PostgreSQL, refused with [`Fenced`] if this host lost the lease).
    pub fn commit(&self, writes: &Writes, checkpoint: Checkpoint) -> anyhow::Result<()> {
        on_backend!(self, db => db.commit(writes, checkpoint, None))
    }

    /// Records `letter` (an event the module failed on and the projection
    /// skipped) and moves the checkpoint past it, in one transaction (fenced
    /// like [`ReadModelDb::commit`]).
    pub fn commit_dead_letter(&self, letter: &DeadLetter, checkpoint: Checkpoint) -> anyhow::Result<()> {
        on_backend!(self, db => db.commit(&Writes::new(), checkpoint, Some(letter)))
    }

    /// [`ReadModelDb::commit`] (with `letter`: [`ReadModelDb::commit_dead_letter`])
    /// by the runner whose batch began at position `from` (`None`: before any
    /// batch). On PostgreSQL the commit also requires the stored checkpoint to
    /// be still `from`: should two runners ever follow the same read model
    /// under one lease, the second to commit a batch is refused with
    /// [`Fenced`] instead of applying its events a second time.
    pub fn commit_after(
        &self,
        from: Option<u64>,
        writes: &Writes,
        letter: Option<&DeadLetter>,
        checkpoint: Checkpoint,
    ) -> anyhow::Result<()> {
        match &self.backend {
            Backend::Sqlite(db) => db.commit(writes, checkpoint, letter),
            Backend::Postgres(db) => db.commit_after(Some(from), writes, checkpoint, letter),
        }
    }

    /// Whether a commit of `writes` might be refused as [`Unstorable`]: on
    /// PostgreSQL, a NUL character in a name, or a `\u0000` escape in a
    /// document (which jsonb refuses). It may say yes where the commit would
    /// land (an escaped backslash before `u0000`); never no where it would not.
    pub fn may_refuse(&self, writes: &Writes) -> bool {
        match &self.backend {
            Backend::Sqlite(_) => false,
            Backend::Postgres(_) => writes.iter().any(|((collection, key), doc)| {
                collection.contains('\0') || key.contains('\0') || doc.as_ref().is_some_and(|d| d.contains("\\u0000"))
            }),
        }
    }

    /// Skipped events, oldest first, after `after` (a position), at most `limit`.
    pub fn dead_letters(&self, after: Option<u64>, limit: usize) -> anyhow::Result<Vec<DeadLetter>> {
        on_backend!(self, db => db.dead_letters(after, limit))
    }

    /// How many events were skipped.
    pub fn dead_letter_count(&self) -> anyhow::Result<u64> {
        on_backend!(self, db => db.dead_letter_count())
    }

    /// A document, for queries.
    pub fn document(&self, collection: &str, key: &str) -> anyhow::Result<Option<String>> {
        on_backend!(self, db => db.document(collection, key))
    }

    /// Up to `limit` documents of `collection` with keys after `after`, in key order.
    pub fn list(&self, collection: &str, after: Option<&str>, limit: usize) -> anyhow::Result<Vec<Item>> {
        let query = Query { limit, page: Page::AfterKey(after.map(str::to_owned)), ..Query::default() };
        Ok(self.query(collection, &query)?)
    }

    /// The documents of `collection` that pass every filter, ordered and paged.
    pub fn query(&self, collection: &str, query: &Query) -> Result<Vec<Item>, QueryError> {
        on_backend!(self, db => db.query(collection, query))
    }

    /// How many documents of `collection` pass every filter of `query` (its order and page do not matter).
    pub fn count(&self, collection: &str, query: &Query) -> Result<u64, QueryError> {
        on_backend!(self, db => db.count(collection, query))
    }

    /// Runs `during` while a read holds one of the read model's connections.
    #[cfg(test)]
    fn while_reading(&self, during: impl FnOnce()) -> anyhow::Result<()> {
        match &self.backend {
            Backend::Sqlite(db) => Ok(db.read(None, |_| {
                during();
                Ok(())
            })?),
            Backend::Postgres(db) => db.while_reading(during),
        }
    }
}

impl DocumentSource for ReadModelDb {
    fn get(&self, collection: &str, key: &str) -> anyhow::Result<Option<String>> {
        match &self.backend {
            Backend::Sqlite(db) => db.get(collection, key),
            Backend::Postgres(db) => db.document(collection, key),
        }
    }
}
