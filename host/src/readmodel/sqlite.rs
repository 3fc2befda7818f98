//! The SQLite backend: one database file per read model.
//!
//! Documents live in one table keyed by (collection, key); the checkpoint
//! lives in the same file and is written in the same transaction as the
//! batch's documents, so after a crash the read model and its checkpoint
//! always agree: the next run resumes exactly after the last committed batch.
//! Declared indexes become partial expression indexes on the JSON field.
//! Queries use their own connections, a small pool of them (WAL lets them
//! read beside each other and while a batch commits), and each may carry a
//! time limit past which SQLite interrupts it. The file is one host's own,
//! so fences (see `mod.rs`) mean nothing here: every commit lands.

use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use super::query::{fnv, sql_literal, Query, QueryError};
use super::sqlite_sql::{continue_after, extract, sort_value, where_clause};
use super::{Checkpoint, DeadLetter, Item};
use crate::runtime::Writes;

/// One read model's database file.
#[derive(Debug)]
pub(super) struct SqliteReadModel {
    path: PathBuf,
    writer: Mutex<Connection>,
    /// The module's reads: a connection of their own, so that a lane's next
    /// batch reads while the batch before it commits (`runner/pipeline.rs`).
    lookups: Mutex<Connection>,
    /// Idle read-only connections; a query takes one (or opens one) and puts it back.
    readers: Mutex<Vec<Connection>>,
    /// Dropping it stops the WAL checkpointer.
    _checkpointer: std::sync::mpsc::Sender<()>,
}

/// Most idle read connections kept open per read model.
const IDLE_READERS: usize = 4;

/// How many SQLite virtual-machine steps run between two checks of a query's time limit.
const STEPS_PER_CHECK: i32 = 10_000;

/// How often the WAL is copied back into the database.
const WAL_CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// The WAL size (in 4 KiB pages) past which the checkpointer truncates it.
const WAL_TRUNCATE_PAGES: i64 = 16 * 1024;

/// Copies the WAL back into the database every `WAL_CHECKPOINT_EVERY`, in
/// PASSIVE mode (never waiting for, or blocking, the writer and readers),
/// until the returned sender is dropped.
///
/// Under a steady stream of commits (a catch-up) a PASSIVE checkpoint never
/// finds the WAL fully copied at a moment when no write is under way, so
/// SQLite never starts the WAL over and the file grows for the whole
/// catch-up (788 MiB beside a 237 MiB database after 1M events). Once the
/// WAL holds more than `WAL_TRUNCATE_PAGES` pages, the checkpointer therefore
/// runs a TRUNCATE checkpoint: it waits for the batch being committed, holds
/// the next one back while it copies what PASSIVE has not copied yet, and
/// empties the file.
fn spawn_wal_checkpointer(conn: Connection) -> anyhow::Result<std::sync::mpsc::Sender<()>> {
    use std::sync::mpsc::RecvTimeoutError;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    std::thread::Builder::new().name("sqlite-wal".into()).spawn(move || {
        while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(WAL_CHECKPOINT_EVERY) {
            let passive = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| row.get::<_, i64>(1));
            let result = match passive {
                Ok(pages) if pages > WAL_TRUNCATE_PAGES => {
                    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                }
                other => other.map(|_| ()),
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, "WAL checkpoint failed");
            }
        }
    })?;
    Ok(stop)
}

impl SqliteReadModel {
    /// Opens (creating if needed) the database at `path`.
    pub(super) fn open(path: &Path) -> anyhow::Result<SqliteReadModel> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        create_owner_only(path)?;
        let writer = Connection::open(path)?;
        writer.pragma_update(None, "journal_mode", "WAL")?;
        // NORMAL in WAL mode: a power loss may drop the last commits, but
        // never splits a batch from its checkpoint.
        writer.pragma_update(None, "synchronous", "NORMAL")?;
        // Catch-up writes thousands of documents per second at random keys:
        // a larger page cache keeps the B-tree's inner pages in memory.
        writer.pragma_update(None, "cache_size", -65536)?;
        // Commits never copy the WAL back themselves (that stalls a batch for
        // as long as the copy and its fsync take); a background thread does.
        writer.pragma_update(None, "wal_autocheckpoint", 0)?;
        writer.execute_batch(
            "CREATE TABLE IF NOT EXISTS documents (
                 collection TEXT NOT NULL,
                 key TEXT NOT NULL,
                 doc TEXT NOT NULL,
                 PRIMARY KEY (collection, key)
             ) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS checkpoint (
                 id INTEGER PRIMARY KEY CHECK (id = 1),
                 position INTEGER NOT NULL,
                 events INTEGER NOT NULL
             );
             CREATE TABLE IF NOT EXISTS dead_letters (
                 position INTEGER PRIMARY KEY,
                 stream TEXT NOT NULL,
                 revision INTEGER NOT NULL,
                 event_type TEXT NOT NULL,
                 error TEXT NOT NULL
             );",
        )?;
        let reader = open_reader(path)?;
        let lookups = open_reader(path)?;
        // A module's reads go to random keys across the whole read model, as
        // its writes do.
        lookups.pragma_update(None, "cache_size", -32768)?;
        let checkpointer = spawn_wal_checkpointer(Connection::open(path)?)?;
        Ok(SqliteReadModel {
            path: path.to_path_buf(),
            writer: Mutex::new(writer),
            lookups: Mutex::new(lookups),
            readers: Mutex::new(vec![reader]),
            _checkpointer: checkpointer,
        })
    }

    /// Runs `read` on an idle read connection (a new one if none is idle),
    /// interrupting it once `time_limit` has passed.
    pub(super) fn read<T>(
        &self,
        time_limit: Option<std::time::Duration>,
        read: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, QueryError> {
        let idle = self.readers.lock().pop();
        let conn = match idle {
            Some(conn) => conn,
            None => open_reader(&self.path).map_err(|e| QueryError::Failed(e.into()))?,
        };
        if let Some(limit) = time_limit {
            let deadline = std::time::Instant::now() + limit;
            conn.progress_handler(STEPS_PER_CHECK, Some(move || std::time::Instant::now() >= deadline));
        }
        let outcome = read(&conn);
        if time_limit.is_some() {
            conn.progress_handler(STEPS_PER_CHECK, None::<fn() -> bool>);
        }
        let mut readers = self.readers.lock();
        if readers.len() < IDLE_READERS {
            readers.push(conn);
        }
        drop(readers);
        outcome.map_err(|e| match (e.sqlite_error_code(), time_limit) {
            (Some(rusqlite::ErrorCode::OperationInterrupted), Some(limit)) => QueryError::TooSlow(limit),
            _ => QueryError::Failed(e.into()),
        })
    }

    /// The database file.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Creates the expression index for `field` of `collection`'s documents.
    pub(super) fn create_index(&self, collection: &str, field: &str) -> anyhow::Result<()> {
        let name = format!("ix_{:016x}", fnv(&format!("{collection}\u{0}{field}")));
        let sql = format!(
            "CREATE INDEX IF NOT EXISTS {name} ON documents ({expression}) WHERE collection = {collection}",
            expression = extract(field)?,
            collection = sql_literal(collection),
        );
        self.writer.lock().execute_batch(&sql)?;
        Ok(())
    }

    /// The declared indexes in place, as the SQL that created them.
    pub(super) fn indexes(&self) -> anyhow::Result<Vec<String>> {
        let conn = self.writer.lock();
        let mut statement =
            conn.prepare("SELECT sql FROM sqlite_master WHERE type = 'index' AND name GLOB 'ix_*' ORDER BY name")?;
        let rows = statement.query_map([], |row| row.get::<_, String>(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The last committed checkpoint, if any batch was committed.
    pub(super) fn checkpoint(&self) -> anyhow::Result<Option<Checkpoint>> {
        let row = self
            .writer
            .lock()
            .query_row("SELECT position, events FROM checkpoint WHERE id = 1", [], |row| {
                Ok(Checkpoint { position: row.get::<_, i64>(0)? as u64, events: row.get::<_, i64>(1)? as u64 })
            })
            .optional()?;
        Ok(row)
    }

    /// Commits a batch's writes, its checkpoint and the dead letter it skipped, if any, in one transaction.
    pub(super) fn commit(
        &self,
        writes: &Writes,
        checkpoint: Checkpoint,
        letter: Option<&DeadLetter>,
    ) -> anyhow::Result<()> {
        let mut conn = self.writer.lock();
        let tx = conn.transaction()?;
        {
            let mut put =
                tx.prepare_cached("INSERT OR REPLACE INTO documents (collection, key, doc) VALUES (?1, ?2, ?3)")?;
            let mut delete = tx.prepare_cached("DELETE FROM documents WHERE collection = ?1 AND key = ?2")?;
            for ((collection, key), write) in writes {
                match write {
                    Some(doc) => put.execute(params![collection, key, doc])?,
                    None => delete.execute(params![collection, key])?,
                };
            }
            tx.execute(
                "INSERT INTO checkpoint (id, position, events) VALUES (1, ?1, ?2)
                 ON CONFLICT (id) DO UPDATE SET position = excluded.position, events = excluded.events",
                params![checkpoint.position as i64, checkpoint.events as i64],
            )?;
            if let Some(l) = letter {
                tx.execute(
                    "INSERT OR REPLACE INTO dead_letters (position, stream, revision, event_type, error)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![l.position as i64, l.stream, l.revision as i64, l.event_type, l.error],
                )?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Skipped events, oldest first, after `after` (a position), at most `limit`.
    pub(super) fn dead_letters(&self, after: Option<u64>, limit: usize) -> anyhow::Result<Vec<DeadLetter>> {
        // Positions past i64::MAX are past every stored one.
        let after = after.map_or(-1, |p| i64::try_from(p).unwrap_or(i64::MAX));
        let letters = self.read(None, |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT position, stream, revision, event_type, error FROM dead_letters
                 WHERE position > ?1 ORDER BY position LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![after, limit as i64], |row| {
                Ok(DeadLetter {
                    position: row.get::<_, i64>(0)? as u64,
                    stream: row.get(1)?,
                    revision: row.get::<_, i64>(2)? as u64,
                    event_type: row.get(3)?,
                    error: row.get(4)?,
                })
            })?;
            rows.collect()
        })?;
        Ok(letters)
    }

    /// How many events were skipped.
    pub(super) fn dead_letter_count(&self) -> anyhow::Result<u64> {
        let n: i64 =
            self.read(None, |conn| conn.query_row("SELECT count(*) FROM dead_letters", [], |row| row.get(0)))?;
        Ok(n as u64)
    }

    /// A document, for queries.
    pub(super) fn document(&self, collection: &str, key: &str) -> anyhow::Result<Option<String>> {
        let doc = self.read(None, |conn| {
            conn.prepare_cached("SELECT doc FROM documents WHERE collection = ?1 AND key = ?2")?
                .query_row(params![collection, key], |row| row.get(0))
                .optional()
        })?;
        Ok(doc)
    }

    /// Copies the WAL back into the database and empties it (see `fold_log` in `mod.rs`).
    pub(super) fn fold_log(&self) -> anyhow::Result<()> {
        self.writer.lock().query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }

    /// A document, for the module's reads: on a connection kept for them,
    /// which neither waits for queries nor for the batch being committed
    /// (it sees the last committed state).
    pub(super) fn get(&self, collection: &str, key: &str) -> anyhow::Result<Option<String>> {
        let conn = self.lookups.lock();
        let doc = conn
            .prepare_cached("SELECT doc FROM documents WHERE collection = ?1 AND key = ?2")?
            .query_row(params![collection, key], |row| row.get(0))
            .optional()?;
        Ok(doc)
    }

    /// The documents of `collection` that pass every filter, ordered and paged.
    pub(super) fn query(&self, collection: &str, query: &Query) -> Result<Vec<Item>, QueryError> {
        let (mut sql, mut values) = where_clause(collection, &query.filters)?;
        if let Some((condition, more)) =
            continue_after(query.order.as_ref(), &query.page).map_err(QueryError::Invalid)?
        {
            sql.push_str(&format!(" AND {condition}"));
            values.extend(more);
        }
        let sorted_by = match &query.order {
            Some(order) => {
                let direction = if order.descending { "DESC" } else { "ASC" };
                let field = extract(&order.path)?;
                sql.push_str(&format!(" ORDER BY {field} {direction}, key {direction}"));
                field
            }
            None => {
                sql.push_str(" ORDER BY key");
                "NULL".to_owned()
            }
        };
        sql.push_str(&format!(" LIMIT {}", query.limit));
        self.read(query.time_limit, |conn| {
            let mut statement = conn.prepare_cached(&format!("SELECT key, doc, {sorted_by} FROM documents {sql}"))?;
            let rows = statement.query_map(rusqlite::params_from_iter(values), |row| {
                Ok(Item { key: row.get(0)?, doc: row.get(1)?, sort_value: sort_value(row, 2)? })
            })?;
            rows.collect()
        })
    }

    /// How many documents of `collection` pass every filter of `query` (its order and page do not matter).
    pub(super) fn count(&self, collection: &str, query: &Query) -> Result<u64, QueryError> {
        let (sql, values) = where_clause(collection, &query.filters)?;
        let count: i64 = self.read(query.time_limit, |conn| {
            conn.prepare_cached(&format!("SELECT COUNT(*) FROM documents {sql}"))?
                .query_row(rusqlite::params_from_iter(values), |row| row.get(0))
        })?;
        Ok(count as u64)
    }
}

/// Creates the database file owner-only (0600) if missing, or makes it so:
/// SQLite gives its -wal and -shm files the database file's mode.
fn create_owner_only(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    std::fs::OpenOptions::new().write(true).create(true).truncate(false).mode(0o600).open(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

/// A read-only connection to the database at `path`.
fn open_reader(path: &Path) -> rusqlite::Result<Connection> {
    Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
}
