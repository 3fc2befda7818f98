//! How `projector serve` reaches its event store: the embedded one started
//! in-process with its security settings, or an external one through a
//! connection string, and how credentials are kept out of logs and errors.
//!
//! The host always talks through the official client, with the credentials
//! of its connection string (`esdb://user:pass@…`) or of a password file.
//! A connection string is never echoed whole: its `user:pass@` part, and the
//! password wherever it appears in a client's error, become `***`.

use std::path::Path;

use anyhow::Context;
use eventstore_embedded::{Credentials, EmbeddedServer, Security, TlsSettings};
use tokio::net::TcpListener;

use crate::cli::ServeArgs;
use crate::data_dir::DataDir;

/// The client the host follows events through, and the embedded server
/// behind it when there is one.
pub(crate) async fn connect(args: &ServeArgs) -> anyhow::Result<(Option<EmbeddedServer>, eventstore::Client)> {
    match &args.eventstore {
        Some(connection) => {
            let connection = match &args.eventstore_password_file {
                Some(file) => with_password(connection, &Credentials::admin_from_existing_file(file)?)?,
                None => connection.clone(),
            };
            Ok((None, external_client(&connection)?))
        }
        None => {
            DataDir::new(&args.data).create_private()?;
            let data = DataDir::new(&args.data).eventstore();
            let listener = TcpListener::bind(args.eventstore_listen)
                .await
                .with_context(|| format!("cannot listen on {}", args.eventstore_listen))?;
            let config = eventstore_embedded::Config {
                security: embedded_security(args, &data)?,
                ..eventstore_embedded::Config::new(data)
            };
            let server = EmbeddedServer::start(listener, config).await?;
            let client = server.client()?;
            Ok((Some(server), client))
        }
    }
}

/// The embedded store's settings under `projector serve`: authentication on
/// (unless `--eventstore-insecure`), TLS when asked or beyond loopback.
fn embedded_security(args: &ServeArgs, data: &Path) -> anyhow::Result<Security> {
    let beyond_loopback = !args.eventstore_listen.ip().is_loopback();
    let tls = (args.eventstore_tls || beyond_loopback).then_some(TlsSettings::Generated);
    if args.eventstore_insecure {
        return Ok(Security { tls, ..Security::default() });
    }
    let password_file =
        args.eventstore_password_file.clone().unwrap_or_else(|| data.join(eventstore_embedded::PASSWORD_FILE));
    let user = Credentials::admin_from_file(&password_file)
        .with_context(|| format!("cannot set up the event store's password in {}", password_file.display()))?;
    Ok(Security { tls, user: Some(user), allow_unauthenticated_network: false })
}

/// A client for `connection`, with errors that do not show its credentials.
fn external_client(connection: &str) -> anyhow::Result<eventstore::Client> {
    let settings: eventstore::ClientSettings =
        connection.parse().map_err(|e: eventstore::ClientSettingsParseError| {
            anyhow::anyhow!(
                "invalid --eventstore connection string '{}': {}",
                redacted(connection),
                hide_password(&e.to_string(), connection)
            )
        })?;
    eventstore::Client::new(settings).map_err(|e| anyhow::anyhow!("{}", hide_password(&format!("{e:#}"), connection)))
}

/// `connection` with `user:password@` set to `credentials` (replacing any).
fn with_password(connection: &str, credentials: &Credentials) -> anyhow::Result<String> {
    let (scheme, rest) = connection
        .split_once("://")
        .with_context(|| format!("invalid --eventstore connection string '{}'", redacted(connection)))?;
    let rest = match userinfo(connection) {
        Some(info) => &rest[info.len() + 1..],
        None => rest,
    };
    // The client takes user info as written: a character that ends it would
    // cut the password (and show the rest of it where the host should be).
    anyhow::ensure!(
        !credentials.password().contains(['@', '/', '?', '#', ':', '%']),
        "the event store password file holds a character a connection string cannot carry (@ / ? # : %); \
         use letters, digits, '-' or '_'"
    );
    Ok(format!("{scheme}://{}:{}@{rest}", credentials.username(), credentials.password()))
}

/// The `user:pass` part of a connection string, if it has one: up to the
/// last `@`, so a password holding `/` or `?` is still all of it (a `@` in
/// the query string makes it take too much, which only hides more).
fn userinfo(connection: &str) -> Option<&str> {
    let (_, rest) = connection.split_once("://")?;
    rest.rsplit_once('@').map(|(info, _)| info)
}

/// `connection` with its credentials replaced by `***`, for messages.
pub(crate) fn redacted(connection: &str) -> String {
    match userinfo(connection) {
        Some(info) => connection.replacen(info, "***", 1),
        None => connection.to_owned(),
    }
}

/// `text` with the credentials of `connection` replaced by `***` wherever they appear.
fn hide_password(text: &str, connection: &str) -> String {
    let Some(info) = userinfo(connection) else { return text.to_owned() };
    let mut text = text.replace(info, "***");
    if let Some((_, password)) = info.split_once(':') {
        if !password.is_empty() {
            text = text.replace(password, "***");
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_show_in_a_redacted_connection_string() {
        assert_eq!(redacted("esdb://admin:s3cret@host:2113?tls=true"), "esdb://***@host:2113?tls=true");
        assert_eq!(redacted("esdb://host:2113?tls=false"), "esdb://host:2113?tls=false");
        assert_eq!(redacted("esdb://admin:pa/ss?w@host:2113?tls=true"), "esdb://***@host:2113?tls=true");
        assert_eq!(hide_password("parse error near 'pa/ss?w'", "esdb://admin:pa/ss?w@host"), "parse error near '***'");
        assert_eq!(
            hide_password("bad 'esdb://admin:s3cret@h' and s3cret", "esdb://admin:s3cret@h"),
            "bad 'esdb://***@h' and ***"
        );
    }

    #[test]
    fn a_password_file_sets_the_credentials_of_a_connection_string() {
        let admin = Credentials::new("admin", "pw");
        assert_eq!(with_password("esdb://old:x@h:1?tls=true", &admin).expect("string"), "esdb://admin:pw@h:1?tls=true");
        assert_eq!(with_password("esdb://h:1?tls=false", &admin).expect("string"), "esdb://admin:pw@h:1?tls=false");
        let refused = with_password("esdb://h:1", &Credentials::new("admin", "a/b")).expect_err("a slash");
        assert!(!refused.to_string().contains("a/b"), "{refused}");
    }
}
