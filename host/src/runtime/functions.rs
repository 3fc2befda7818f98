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
//! damaged or missing file only costs compile time, and a failure to read
//! or write is a miss.

use std::borrow::Cow;
use std::path::Path;

use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension};
use wasmtime::CacheStore;

/// Compiled functions by Cranelift's cache key.
#[derive(Debug)]
pub(super) struct FunctionCache {
    db: Mutex<Connection>,
}

impl FunctionCache {
    /// Opens (or creates) the store at `path`.
    pub(super) fn open(path: &Path) -> rusqlite::Result<FunctionCache> {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let db = Connection::open(path)?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "OFF")?;
        db.execute("CREATE TABLE IF NOT EXISTS functions (key BLOB PRIMARY KEY, compiled BLOB NOT NULL)", [])?;
        Ok(FunctionCache { db: Mutex::new(db) })
    }
}

impl CacheStore for FunctionCache {
    fn get(&self, key: &[u8]) -> Option<Cow<'_, [u8]>> {
        let db = self.db.lock();
        let found = db
            .prepare_cached("SELECT compiled FROM functions WHERE key = ?1")
            .and_then(|mut select| select.query_row([key], |row| row.get::<_, Vec<u8>>(0)).optional());
        found.ok().flatten().map(Cow::Owned)
    }

    fn insert(&self, key: &[u8], compiled: Vec<u8>) -> bool {
        let db = self.db.lock();
        db.prepare_cached("INSERT OR REPLACE INTO functions (key, compiled) VALUES (?1, ?2)")
            .and_then(|mut insert| insert.execute(rusqlite::params![key, compiled]))
            .is_ok()
    }
}
