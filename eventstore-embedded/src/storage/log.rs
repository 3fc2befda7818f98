//! The log file: opening and locking it, recovering it after a crash, and
//! reading records back by position.
//!
//! The file is `events.log` in the data directory: a 16-byte header, then
//! records back to back (see `record.rs`). A record's position is its byte
//! offset in the file, which is also the commit and prepare position the
//! clients see. Writing is the writer's job (`writer.rs`), not this module's.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::index::Index;
use super::record::{self, DecodeError, StoredEvent, HEADER_LEN};
use super::StoreError;

/// The log's file name inside the data directory.
pub(crate) const FILE_NAME: &str = "events.log";

/// The file header: format name and version. Changing the record format means a new header.
const MAGIC: &[u8; 16] = b"projector-log-1\n";

/// The position of the first record.
pub(crate) const FIRST_POSITION: u64 = MAGIC.len() as u64;

/// What `open` found on disk.
#[derive(Debug)]
pub(crate) struct Recovered {
    pub(crate) file: File,
    pub(crate) index: Index,
    /// Where the next record goes.
    pub(crate) end: u64,
    /// Set when a torn or corrupt tail was cut off.
    pub(crate) truncated: Option<TruncatedTail>,
}

/// A tail that recovery dropped because it was not a complete, valid record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TruncatedTail {
    /// Where the first bad record started; the log now ends here.
    pub at: u64,
    /// How many bytes were dropped.
    pub dropped_bytes: u64,
    /// What was wrong with the record at `at`.
    pub reason: String,
}

/// Opens (creating if needed) and locks the log in `dir`, then rebuilds the
/// index by scanning every record. A torn or corrupt tail is truncated back to
/// the end of the last valid record and made durable before anything is served.
pub(crate) fn open(dir: &Path) -> Result<Recovered, StoreError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    // Owner-only: the log holds every event, password hashes included.
    crate::security::create_private_dir(dir).map_err(|e| StoreError::io(dir, e))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(|e| StoreError::io(dir, e))?;
    let path = dir.join(FILE_NAME);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(|e| StoreError::io(&path, e))?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(|e| StoreError::io(&path, e))?;
    file.try_lock().map_err(|_| StoreError::Locked(path.clone()))?;

    let len = file.metadata().map_err(|e| StoreError::io(&path, e))?.len();
    if len < FIRST_POSITION {
        // New file, or a crash before the header was made durable.
        file.set_len(0).map_err(|e| StoreError::io(&path, e))?;
        file.write_all_at(MAGIC, 0).map_err(|e| StoreError::io(&path, e))?;
        file.sync_all().map_err(|e| StoreError::io(&path, e))?;
        sync_dir(dir)?;
        return Ok(Recovered { file, index: Index::default(), end: FIRST_POSITION, truncated: None });
    }
    let mut magic = [0; MAGIC.len()];
    file.read_exact_at(&mut magic, 0).map_err(|e| StoreError::io(&path, e))?;
    if &magic != MAGIC {
        return Err(StoreError::NotALog(path));
    }

    let (index, end, bad) = scan(&file, len).map_err(|e| StoreError::io(&path, e))?;
    let truncated = match bad {
        None => None,
        Some(reason) => {
            file.set_len(end).map_err(|e| StoreError::io(&path, e))?;
            file.sync_all().map_err(|e| StoreError::io(&path, e))?;
            let tail = TruncatedTail { at: end, dropped_bytes: len - end, reason };
            tracing::warn!(path = %path.display(), at = tail.at, dropped_bytes = tail.dropped_bytes, reason = %tail.reason, "truncated an incomplete or corrupt tail of the event log");
            Some(tail)
        }
    };
    Ok(Recovered { file, index, end, truncated })
}

/// Reads every record from the start, returning the index, the end of the last
/// valid record and, if the file goes on past it, why the rest is invalid.
fn scan(file: &File, len: u64) -> io::Result<(Index, u64, Option<String>)> {
    let mut index = Index::default();
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut skip = [0; MAGIC.len()];
    reader.read_exact(&mut skip)?;
    let mut position = FIRST_POSITION;
    let mut buf = Vec::with_capacity(64 * 1024);
    while position < len {
        let remaining = len - position;
        let mut header = [0; HEADER_LEN];
        if remaining < HEADER_LEN as u64 {
            return Ok((index, position, Some("partial record header".into())));
        }
        reader.read_exact(&mut header)?;
        let Some(total) = record::announced_len(&header) else {
            return Ok((index, position, Some("record length out of range".into())));
        };
        if remaining < total as u64 {
            return Ok((index, position, Some("record runs past the end of the file".into())));
        }
        buf.clear();
        buf.extend_from_slice(&header);
        buf.resize(total, 0);
        reader.read_exact(&mut buf[HEADER_LEN..])?;
        match StoredEvent::decode(&buf) {
            Ok((event, _)) => index.apply(&event, position),
            Err(DecodeError::Corrupt(reason)) => return Ok((index, position, Some(reason.into()))),
            Err(DecodeError::Incomplete { .. }) => {
                return Ok((index, position, Some("record runs past the end of the file".into())))
            }
        }
        position += total as u64;
    }
    Ok((index, position, None))
}

/// Makes a newly created file's directory entry durable.
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| StoreError::io(dir, e))
}

/// Reads records at given positions through a buffer, so that neighbouring
/// records (a `$all` scan) cost one system call per chunk rather than per event.
#[derive(Debug)]
pub(crate) struct EventReader<'a> {
    file: &'a File,
    /// Shared with the events decoded from it, which point into it.
    buf: Bytes,
    buf_start: u64,
    chunk: usize,
}

impl<'a> EventReader<'a> {
    /// A reader that fetches at least `chunk` bytes per system call.
    pub(crate) fn new(file: &'a File, chunk: usize) -> Self {
        EventReader { file, buf: Bytes::new(), buf_start: 0, chunk }
    }

    /// Decodes the record that starts at `position`.
    pub(crate) fn read(&mut self, position: u64) -> io::Result<StoredEvent> {
        let mut wanted = self.chunk;
        for _ in 0..2 {
            let cached = position >= self.buf_start && position < self.buf_start + self.buf.len() as u64;
            if cached {
                let offset = (position - self.buf_start) as usize;
                match StoredEvent::decode_in(&self.buf[offset..], Some(&self.buf)) {
                    Ok((event, _)) => return Ok(event),
                    Err(DecodeError::Incomplete { needed }) => wanted = wanted.max(needed),
                    Err(DecodeError::Corrupt(reason)) => {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("record at {position}: {reason}"),
                        ))
                    }
                }
            }
            self.fill(position, wanted)?;
        }
        Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("record at {position} is incomplete")))
    }

    fn fill(&mut self, position: u64, len: usize) -> io::Result<()> {
        // A fresh buffer each time: events from the previous one may still be in use.
        let mut buf = vec![0; len];
        let mut filled = 0;
        while filled < len {
            match self.file.read_at(&mut buf[filled..], position + filled as u64) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        buf.truncate(filled);
        self.buf = Bytes::from(buf);
        self.buf_start = position;
        Ok(())
    }
}

/// The log file's path inside a data directory.
pub(crate) fn path_in(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}
