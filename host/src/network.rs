//! How the host faces the network: TLS, who may read, which `Host` names it
//! answers for, how long clients may take, how many may connect; and the
//! tokens, read from files or the environment rather than the command line.
//!
//! The defaults follow where the API listens. On loopback (the default
//! `127.0.0.1:8080`) reads are open and only loopback names are answered, so
//! a web page cannot read a developer's host through DNS rebinding. Beyond
//! loopback reads need a token (the query token, or the admin token when no
//! query token is set) unless `--open-reads` says otherwise; so do they on
//! loopback when other `Host` names are allowed (a reverse proxy in front).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

/// Shortest token accepted: 16 characters, so that no token is guessable
/// by trying (the generated admin token has 64).
pub const MIN_TOKEN_LEN: usize = 16;

/// How the API faces the network.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// PEM certificate chain and private key: the API speaks HTTPS only.
    pub tls: Option<TlsFiles>,
    /// Whether reads need a token; `None` decides by the listen address
    /// (open on loopback, a token beyond).
    pub reads_need_token: Option<bool>,
    /// `Host` names to answer for besides the loopback ones a loopback host
    /// always allows; when given beyond loopback, only these are answered.
    pub allowed_hosts: Vec<String>,
    /// Longest a client may take to send a request's head; also how long an
    /// idle kept-alive connection is held.
    pub header_read_timeout: Duration,
    /// Longest a client may take to send a request's body.
    pub body_read_timeout: Duration,
    /// Most connections open at once.
    pub max_connections: usize,
    /// Most connections one client (IP address; IPv6: its /64) may hold open.
    pub max_connections_per_client: usize,
    /// Most queries one client (IP address) may send per minute; `None`: no limit.
    pub query_rate_per_minute: Option<std::num::NonZeroU32>,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            tls: None,
            reads_need_token: None,
            allowed_hosts: Vec::new(),
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(60),
            max_connections: 1024,
            max_connections_per_client: 128,
            query_rate_per_minute: None,
        }
    }
}

/// A certificate chain and its private key, PEM files.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key.
    pub key: PathBuf,
}

impl NetworkConfig {
    /// Whether reads need a token for an API listening on `addr`: beyond
    /// loopback, and on loopback when told of other names (a reverse proxy
    /// in front, which makes every client look local).
    pub(crate) fn reads_need_token(&self, addr: SocketAddr) -> bool {
        self.reads_need_token.unwrap_or(!addr.ip().is_loopback() || !self.allowed_hosts.is_empty())
    }

    /// The `Host` names answered by an API listening on `addr` (any when `None`).
    pub(crate) fn allowed_hosts(&self, addr: SocketAddr) -> Option<Vec<String>> {
        let mut names = self.allowed_hosts.clone();
        if addr.ip().is_loopback() {
            let own = match addr {
                SocketAddr::V4(v4) => v4.ip().to_string(),
                SocketAddr::V6(v6) => format!("[{}]", v6.ip()),
            };
            for name in ["localhost".to_owned(), "127.0.0.1".to_owned(), "[::1]".to_owned(), own] {
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
        (!names.is_empty()).then_some(names)
    }
}

/// Checks a token given by the user: long enough, and no whitespace or
/// control characters (which no `Authorization` header could carry).
pub fn check_token(what: &str, token: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        token.chars().count() >= MIN_TOKEN_LEN,
        "the {what} must be at least {MIN_TOKEN_LEN} characters long (it is {})",
        token.chars().count()
    );
    anyhow::ensure!(
        token.chars().all(|c| c.is_ascii_graphic()),
        "the {what} must be visible ASCII characters, without spaces"
    );
    Ok(())
}

/// A token from a file: its content without the trailing line break.
pub fn read_token_file(what: &str, path: &Path) -> anyhow::Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read the {what} file {}", path.display()))?;
    let token = text.trim_end_matches(['\n', '\r']).to_owned();
    check_token(what, &token).with_context(|| format!("in {}", path.display()))?;
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_visible_ascii() {
        assert!(check_token("admin token", "0123456789abcdef").is_ok());
        let short = check_token("admin token", "reader-secret").expect_err("13 characters");
        assert_eq!(short.to_string(), "the admin token must be at least 16 characters long (it is 13)");
        assert!(check_token("query token", "0123456789 abcdef").is_err(), "a space");
        assert!(check_token("query token", "0123456789\u{7}abcdef").is_err(), "a control character");
    }

    #[test]
    fn loopback_allows_loopback_names_and_reads_beyond_it_need_a_token() {
        let config = NetworkConfig::default();
        let loopback: SocketAddr = "127.0.0.1:8080".parse().expect("address");
        let anywhere: SocketAddr = "0.0.0.0:8080".parse().expect("address");
        assert!(!config.reads_need_token(loopback));
        assert!(config.reads_need_token(anywhere));
        let names = config.allowed_hosts(loopback).expect("a list");
        assert!(names.iter().any(|n| n == "localhost") && names.iter().any(|n| n == "127.0.0.1"), "{names:?}");
        assert_eq!(config.allowed_hosts(anywhere), None, "beyond loopback, any name unless told");
        let told = NetworkConfig { allowed_hosts: vec!["api.example.com".into()], ..NetworkConfig::default() };
        assert_eq!(told.allowed_hosts(anywhere), Some(vec!["api.example.com".to_owned()]));
        let open = NetworkConfig { reads_need_token: Some(false), ..NetworkConfig::default() };
        assert!(!open.reads_need_token(anywhere), "--open-reads");
        let proxied = NetworkConfig { allowed_hosts: vec!["api.example.com".into()], ..NetworkConfig::default() };
        assert!(proxied.reads_need_token(loopback), "behind a proxy every client looks local");
    }
}
