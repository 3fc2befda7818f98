//! Compiled functions kept across modules, so compiling a module whose
//! functions were compiled before costs little.
//!
//! A TypeScript or Python module carries its language's runtime
//! (SpiderMonkey, CPython): tens of thousands of functions that are the same
//! in every module built with the same toolchain, beside a small part that
//! is the projection (its code is data for that runtime). Cranelift's
//! incremental cache keys each function by what it compiles from, so a new
//! module, or a new version of one, compiles only what differs.
//!
//! The store is one SQLite file. It is a cache: writes are not synced, a
//! damaged or missing file only costs compile time, a failure to read or
//! write is a miss, and it is emptied when the engine changes (a wasmtime
//! upgrade) or when it has grown past 1 GiB.

use std::borrow::Cow;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension};
use wasmtime::CacheStore;

/// Past this size the store is emptied when opened, so it cannot grow
/// without bound (modules come and go; their functions stay).
const MAX_BYTES: u64 = 1 << 30;

/// Compiled functions by Cranelift's cache key.
#[derive(Debug)]
pub(super) struct FunctionCache {
    db: Mutex<Connection>,
    hits: AtomicU64,
}

impl FunctionCache {
    /// Opens (or creates) the store at `path` for the engine `engine_key`;
    /// functions another engine compiled, or a store past its size, are dropped.
    pub(super) fn open(path: &Path, engine_key: &str) -> rusqlite::Result<FunctionCache> {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let db = Connection::open(path)?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "OFF")?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS functions (key BLOB PRIMARY KEY, compiled BLOB NOT NULL);
             CREATE TABLE IF NOT EXISTS engine (key TEXT NOT NULL);",
        )?;
        let stored: Option<String> = db.query_row("SELECT key FROM engine", [], |row| row.get(0)).optional()?;
        let bytes: u64 =
            db.query_row("SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()", [], |row| {
                row.get(0)
            })?;
        if stored.as_deref() != Some(engine_key) || bytes > MAX_BYTES {
            db.execute_batch("DELETE FROM functions; DELETE FROM engine;")?;
            db.execute("INSERT INTO engine (key) VALUES (?1)", [engine_key])?;
            if bytes > MAX_BYTES {
                db.execute_batch("VACUUM")?;
            }
        }
        Ok(FunctionCache { db: Mutex::new(db), hits: AtomicU64::new(0) })
    }

    /// Functions found in the store so far.
    pub(super) fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }
}

impl CacheStore for FunctionCache {
    fn get(&self, key: &[u8]) -> Option<Cow<'_, [u8]>> {
        let db = self.db.lock();
        let found = db
            .prepare_cached("SELECT compiled FROM functions WHERE key = ?1")
            .and_then(|mut select| select.query_row([key], |row| row.get::<_, Vec<u8>>(0)).optional());
        let found = found.ok().flatten()?;
        self.hits.fetch_add(1, Ordering::Relaxed);
        Some(Cow::Owned(found))
    }

    fn insert(&self, key: &[u8], compiled: Vec<u8>) -> bool {
        let db = self.db.lock();
        db.prepare_cached("INSERT OR REPLACE INTO functions (key, compiled) VALUES (?1, ?2)")
            .and_then(|mut insert| insert.execute(rusqlite::params![key, compiled]))
            .is_ok()
    }
}
