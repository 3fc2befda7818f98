//! Where a deployment's read models live: SQLite files under the data dir,
//! or tables in the PostgreSQL the hosts share (then with this host's place
//! among them, for leases).

use crate::cluster::Cluster;
use crate::data_dir::DataDir;
use crate::readmodel::ReadModelDb;

/// The read-model store of a host.
#[derive(Debug, Clone)]
pub(crate) enum Storage {
    /// One SQLite file per read model under the data dir.
    Files(DataDir),
    /// One table per read model in the shared database.
    Postgres(Cluster),
}

impl Storage {
    /// Opens (creating if needed) read model `readmodel` of projection `name`.
    pub(crate) fn open(&self, name: &str, readmodel: &str) -> anyhow::Result<ReadModelDb> {
        match self {
            Storage::Files(data) => ReadModelDb::open(&data.readmodel(name, readmodel)),
            Storage::Postgres(cluster) => ReadModelDb::open_postgres(&cluster.pg, name, readmodel),
        }
    }

    /// Deletes read model `readmodel` of `name` (nothing refers to it any more).
    pub(crate) fn remove(&self, name: &str, readmodel: &str) {
        match self {
            Storage::Files(data) => data.remove_readmodel(name, readmodel),
            Storage::Postgres(cluster) => {
                if let Err(e) = ReadModelDb::remove_postgres(&cluster.pg, name, readmodel) {
                    tracing::warn!(projection = name, readmodel, error = %format!("{e:#}"), "cannot drop a read model");
                }
            }
        }
    }

    /// Deletes every read model of `name` (a deleted projection).
    pub(crate) fn remove_all(&self, name: &str) {
        match self {
            Storage::Files(data) => data.remove_readmodels(name),
            Storage::Postgres(cluster) => {
                let pg = &cluster.pg;
                let names = pg.block_on(async {
                    let rows = pg
                        .client()
                        .await?
                        .query("SELECT name FROM projector.readmodels WHERE projection = $1", &[&name])
                        .await?;
                    anyhow::Ok(rows.iter().map(|row| row.get::<_, String>(0)).collect::<Vec<_>>())
                });
                match names {
                    Ok(names) => names.iter().for_each(|readmodel| self.remove(name, readmodel)),
                    Err(e) => {
                        tracing::warn!(projection = name, error = %format!("{e:#}"), "cannot list the read models to drop")
                    }
                }
            }
        }
    }

    /// With PostgreSQL, the row id of each read model of `name`, by read-model name.
    pub(crate) async fn readmodel_ids(
        &self,
        name: &str,
    ) -> anyhow::Result<Option<std::collections::HashMap<String, i64>>> {
        let Storage::Postgres(cluster) = self else { return Ok(None) };
        let rows = cluster
            .pg
            .client()
            .await?
            .query("SELECT name, id FROM projector.readmodels WHERE projection = $1", &[&name])
            .await?;
        Ok(Some(rows.iter().map(|row| (row.get(0), row.get(1))).collect()))
    }

    /// The hosts sharing the database, when they are.
    pub(crate) fn cluster(&self) -> Option<&Cluster> {
        match self {
            Storage::Files(_) => None,
            Storage::Postgres(cluster) => Some(cluster),
        }
    }
}
