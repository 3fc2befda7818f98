//! How a host is told where its state lives: `--readmodels sqlite` or a
//! PostgreSQL URL, with this host's name and lease among the others.

use super::ClusterConfig;

/// Where a host keeps read models, the registry and modules.
#[derive(Debug, Clone, Default)]
pub enum Storage {
    /// SQLite files and a JSON registry under the data dir: one host.
    #[default]
    Sqlite,
    /// A PostgreSQL database several hosts share (ADR 0012).
    Postgres(ClusterConfig),
}

impl Storage {
    /// `sqlite`, or a PostgreSQL URL with this host's settings among the others.
    pub fn parse(
        readmodels: &str,
        host_id: Option<String>,
        listen: std::net::SocketAddr,
        lease_ms: u64,
    ) -> anyhow::Result<Storage> {
        if readmodels == "sqlite" {
            return Ok(Storage::Sqlite);
        }
        anyhow::ensure!(
            readmodels.starts_with("postgres://") || readmodels.starts_with("postgresql://"),
            "--readmodels must be 'sqlite' or a PostgreSQL URL (postgres://user:password@host:5432/db), not '{}'",
            crate::pg::redact(readmodels)
        );
        let host_id = match host_id {
            Some(id) => id,
            None => format!("{}:{}", hostname(), listen.port()),
        };
        Ok(Storage::Postgres(ClusterConfig {
            url: readmodels.to_owned(),
            host_id,
            lease: std::time::Duration::from_millis(lease_ms),
        }))
    }
}

/// The machine's name, for a default host id.
fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "host".to_owned())
}
