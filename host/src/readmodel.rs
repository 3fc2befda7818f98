//! Read models in SQLite: one database file per projection version.
//!
//! Documents live in one table keyed by (collection, key); the checkpoint
//! lives in the same file and is written in the same transaction as the
//! batch's documents, so after a crash the read model and its checkpoint
//! always agree: the next run resumes exactly after the last committed batch.
//! Declared indexes become partial expression indexes on the JSON field.
//! Queries use their own connection (WAL lets them read while a batch commits).

use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use crate::runtime::{DocumentSource, Writes};

/// Where a projection is in `$all`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Checkpoint {
    /// Commit position of the last event applied.
    pub position: u64,
    /// Events applied so far (delivered to the module).
    pub events: u64,
}

/// One projection version's read model.
#[derive(Debug)]
pub struct ReadModelDb {
    path: PathBuf,
    writer: Mutex<Connection>,
    reader: Mutex<Connection>,
}

/// One document of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The document's key.
    pub key: String,
    /// The document, JSON text.
    pub doc: String,
}

impl ReadModelDb {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> anyhow::Result<ReadModelDb> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let writer = Connection::open(path)?;
        writer.pragma_update(None, "journal_mode", "WAL")?;
        // NORMAL in WAL mode: a power loss may drop the last commits, but
        // never splits a batch from its checkpoint.
        writer.pragma_update(None, "synchronous", "NORMAL")?;
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
             );",
        )?;
        let reader =
            Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
        Ok(ReadModelDb { path: path.to_path_buf(), writer: Mutex::new(writer), reader: Mutex::new(reader) })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates the expression index for `field` of `collection`'s documents.
    pub fn create_index(&self, collection: &str, field: &str) -> anyhow::Result<()> {
        let json_path = json_path(field)?;
        let name = format!("ix_{:016x}", fnv(&format!("{collection}\u{0}{field}")));
        let sql = format!(
            "CREATE INDEX IF NOT EXISTS {name} ON documents (json_extract(doc, {path})) WHERE collection = {collection}",
            path = sql_literal(&json_path),
            collection = sql_literal(collection),
        );
        self.writer.lock().execute_batch(&sql)?;
        Ok(())
    }

    /// The last committed checkpoint, if any batch was committed.
    pub fn checkpoint(&self) -> anyhow::Result<Option<Checkpoint>> {
        let row = self
            .writer
            .lock()
            .query_row("SELECT position, events FROM checkpoint WHERE id = 1", [], |row| {
                Ok(Checkpoint { position: row.get::<_, i64>(0)? as u64, events: row.get::<_, i64>(1)? as u64 })
            })
            .optional()?;
        Ok(row)
    }

    /// Commits a batch's writes and its checkpoint in one transaction.
    pub fn commit(&self, writes: &Writes, checkpoint: Checkpoint) -> anyhow::Result<()> {
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
        }
        tx.commit()?;
        Ok(())
    }

    /// A document, for queries.
    pub fn document(&self, collection: &str, key: &str) -> anyhow::Result<Option<String>> {
        let conn = self.reader.lock();
        let doc = conn
            .prepare_cached("SELECT doc FROM documents WHERE collection = ?1 AND key = ?2")?
            .query_row(params![collection, key], |row| row.get(0))
            .optional()?;
        Ok(doc)
    }

    /// Up to `limit` documents of `collection` with keys after `after`, in key order.
    pub fn list(&self, collection: &str, after: Option<&str>, limit: usize) -> anyhow::Result<Vec<Item>> {
        let conn = self.reader.lock();
        let mut statement = conn.prepare_cached(
            "SELECT key, doc FROM documents WHERE collection = ?1 AND key > ?2 ORDER BY key LIMIT ?3",
        )?;
        let rows = statement.query_map(params![collection, after.unwrap_or(""), limit as i64], |row| {
            Ok(Item { key: row.get(0)?, doc: row.get(1)? })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Whether `collection` holds any document.
    pub fn has_collection(&self, collection: &str) -> anyhow::Result<bool> {
        let conn = self.reader.lock();
        let found = conn
            .prepare_cached("SELECT 1 FROM documents WHERE collection = ?1 LIMIT 1")?
            .query_row(params![collection], |_| Ok(()))
            .optional()?;
        Ok(found.is_some())
    }
}

impl DocumentSource for ReadModelDb {
    fn get(&self, collection: &str, key: &str) -> anyhow::Result<Option<String>> {
        let conn = self.writer.lock();
        let doc = conn
            .prepare_cached("SELECT doc FROM documents WHERE collection = ?1 AND key = ?2")?
            .query_row(params![collection, key], |row| row.get(0))
            .optional()?;
        Ok(doc)
    }
}

/// `address.city` -> `$.address.city`, refusing anything but plain names.
fn json_path(field: &str) -> anyhow::Result<String> {
    let valid =
        |part: &str| !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !field.split('.').all(valid) {
        anyhow::bail!("index field '{field}' must be dot-separated names of letters, digits, '_' or '-'");
    }
    Ok(format!("$.{}", field.split('.').map(|p| format!("\"{p}\"")).collect::<Vec<_>>().join(".")))
}

fn sql_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// A stable 64-bit hash (FNV-1a), for index names.
fn fnv(value: &str) -> u64 {
    value.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3))
}
