//! Who may call the store, and over what: TLS and username/password
//! authentication as EventStoreDB does them, in the forms the official clients
//! speak (`esdb://user:pass@host:port?tls=true&tlsCAFile=…`).
//!
//! This module holds the settings and the secrets kept on disk (a generated
//! admin password, owner-only). The TLS handshake and the per-call check live
//! in `grpc::tls` and `grpc::auth`. There are no roles or access lists: a caller
//! with the right credentials may do everything, one without may do nothing
//! but discovery (gossip, server features), as the clients need before they
//! authenticate. Decisions: `docs/adr/0009-event-store-security.md`.

use std::fmt;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The user the store knows when authentication is on, as in EventStoreDB.
pub const DEFAULT_USER: &str = "admin";

/// The generated admin password's file name inside the data directory.
pub const PASSWORD_FILE: &str = "admin-password";

/// The directory of generated TLS files inside the data directory.
pub const TLS_DIR: &str = "tls";

/// How the server protects itself. The default is the insecure development
/// mode: plaintext, no authentication, loopback only.
#[derive(Debug, Clone, Default)]
pub struct Security {
    /// TLS for every connection; `None` serves plaintext HTTP/2.
    pub tls: Option<TlsSettings>,
    /// The one user every stream call must authenticate as; `None` lets
    /// every caller in (the insecure mode).
    pub user: Option<Credentials>,
    /// Serve without authentication on an address other than loopback.
    /// Without it, [`crate::EmbeddedServer::start`] refuses such a listener.
    pub allow_unauthenticated_network: bool,
}

impl Security {
    /// TLS with a generated certificate and the `admin` user with the
    /// password kept in `DATA/admin-password` (generated when missing): what
    /// `projector eventstore` runs with by default.
    pub fn secure(data_dir: &Path) -> io::Result<Security> {
        Ok(Security {
            tls: Some(TlsSettings::Generated),
            user: Some(Credentials::admin_from_file(&data_dir.join(PASSWORD_FILE))?),
            allow_unauthenticated_network: false,
        })
    }

    /// Whether a listener on `addr` may serve with these settings: without
    /// authentication only on loopback, unless explicitly allowed.
    pub fn permits(&self, addr: SocketAddr) -> bool {
        self.user.is_some() || addr.ip().is_loopback() || self.allow_unauthenticated_network
    }
}

/// Where the server's certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSettings {
    /// A CA and a node certificate for `localhost`, the loopback addresses and
    /// the bound address, kept in `DATA/tls/`. The CA is made once (its key
    /// stays there, owner-only); the node certificate is signed again at every
    /// start so that it names the address bound this time. Clients trust
    /// `DATA/tls/ca.crt`.
    Generated,
    /// PEM files given by the operator.
    Files {
        /// The certificate chain, leaf first.
        cert: PathBuf,
        /// The private key (PKCS#8, PKCS#1 or SEC1).
        key: PathBuf,
        /// The CA clients should trust, if known; used only for the
        /// connection string the server hands out.
        ca: Option<PathBuf>,
    },
}

/// A username and password. `Debug` does not show the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    username: String,
    password: String,
}

impl Credentials {
    /// Credentials for `username` with `password`.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Credentials {
        Credentials { username: username.into(), password: password.into() }
    }

    /// The `admin` user with the password stored in `path` (trailing
    /// whitespace ignored). A missing file is created owner-only with a
    /// random password; an empty one is an error.
    pub fn admin_from_file(path: &Path) -> io::Result<Credentials> {
        Ok(Credentials::new(DEFAULT_USER, read_or_generate_password(path)?))
    }

    /// The `admin` user with the password stored in `path`, which must exist
    /// (for connecting to a store whose password is kept elsewhere).
    pub fn admin_from_existing_file(path: &Path) -> io::Result<Credentials> {
        match read_password(path)? {
            Some(password) => Ok(Credentials::new(DEFAULT_USER, password)),
            None => Err(io::Error::new(io::ErrorKind::NotFound, format!("{} does not exist", path.display()))),
        }
    }

    /// The username.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// The password.
    pub fn password(&self) -> &str {
        &self.password
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials").field("username", &self.username).field("password", &"<redacted>").finish()
    }
}

/// The password in `path`, or a new random one written there (mode 0600).
///
/// Generated passwords are hexadecimal so that they can stand in a
/// connection string as they are (the Rust client does not percent-decode).
fn read_or_generate_password(path: &Path) -> io::Result<String> {
    if let Some(password) = read_password(path)? {
        return Ok(password);
    }
    if let Some(dir) = path.parent() {
        create_private_dir(dir)?;
    }
    let password = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
    write_private(path, password.as_bytes())?;
    tracing::info!(path = %path.display(), "generated the event store's admin password; it is stored in this file");
    Ok(password)
}

/// The password in `path`, `None` when the file does not exist.
fn read_password(path: &Path) -> io::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(password) if !password.trim_end().is_empty() => Ok(Some(password.trim_end().to_owned())),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is empty; delete it to generate a new password", path.display()),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io::Error::new(e.kind(), format!("cannot read {}: {e}", path.display()))),
    }
}

/// Creates `dir` (and its parents) owner-only if it does not exist.
pub(crate) fn create_private_dir(dir: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot create {}: {e}", dir.display())))
}

/// Writes a new file readable by its owner only (replacing an old one).
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_with_mode(path, bytes, 0o600)
}

/// Writes a new file with `mode` (replacing an old one), durably.
pub(crate) fn write_with_mode(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    let _ = std::fs::remove_file(&temporary);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&temporary)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot create {}: {e}", temporary.display())))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)
}
