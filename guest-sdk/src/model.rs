//! The read model a projection writes to, and the log.
//!
//! `ReadModel` is the same API inside the host (backed by the WIT imports)
//! and in the test harness (backed by memory); the backend is private.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{Error, Result};

/// Why the host refused a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteError {
    /// The document is over the host's size limit (given in bytes).
    TooLarge(u64),
    /// The document is not valid JSON.
    InvalidJson(String),
    /// The collection or key is not acceptable.
    InvalidName(String),
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriteError::TooLarge(limit) => write!(f, "document is larger than the limit of {limit} bytes"),
            WriteError::InvalidJson(m) => write!(f, "document is not valid JSON: {m}"),
            WriteError::InvalidName(m) => write!(f, "invalid collection or key: {m}"),
        }
    }
}

/// Where documents actually live: the host, or the harness's memory.
#[doc(hidden)]
pub trait Backend {
    fn get(&mut self, collection: &str, key: &str) -> Option<String>;
    fn put(&mut self, collection: &str, key: &str, document: String) -> Result<(), WriteError>;
    fn delete(&mut self, collection: &str, key: &str);
}

/// A projection's documents: JSON values by collection and key.
///
/// Reads see the writes made earlier in the same batch.
pub struct ReadModel<'a> {
    backend: &'a mut dyn Backend,
}

impl std::fmt::Debug for ReadModel<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReadModel")
    }
}

impl<'a> ReadModel<'a> {
    #[doc(hidden)]
    pub fn new(backend: &'a mut dyn Backend) -> Self {
        ReadModel { backend }
    }

    /// The document under `key` in `collection`, decoded as `T`.
    pub fn get<T: DeserializeOwned>(&mut self, collection: &str, key: &str) -> Result<Option<T>> {
        match self.backend.get(collection, key) {
            None => Ok(None),
            Some(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| Error::ReadModel(format!("{collection}/{key} does not decode: {e}"))),
        }
    }

    /// Stores `document` under `key` in `collection`.
    pub fn put<T: Serialize + ?Sized>(&mut self, collection: &str, key: &str, document: &T) -> Result<()> {
        let text = serde_json::to_string(document)
            .map_err(|e| Error::ReadModel(format!("{collection}/{key} does not serialise: {e}")))?;
        self.backend.put(collection, key, text).map_err(|e| Error::ReadModel(format!("{collection}/{key}: {e}")))
    }

    /// Removes the document under `key` in `collection`, if any.
    pub fn delete(&mut self, collection: &str, key: &str) {
        self.backend.delete(collection, key);
    }

    /// Reads a document (or its default), lets `change` modify it, and stores it.
    pub fn update<T>(&mut self, collection: &str, key: &str, change: impl FnOnce(&mut T)) -> Result<()>
    where
        T: DeserializeOwned + Serialize + Default,
    {
        let mut document = self.get::<T>(collection, key)?.unwrap_or_default();
        change(&mut document);
        self.put(collection, key, &document)
    }
}

/// How important a log line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Detail for development.
    Debug,
    /// Normal operation.
    Info,
    /// Something unexpected, handled.
    Warn,
    /// Something that went wrong.
    Error,
}
