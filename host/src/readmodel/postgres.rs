//! The PostgreSQL backend: one row of `projector.readmodels` (checkpoint and
//! lease) and one table `projector.documents_<id>` per read model, in the
//! database every host shares (`crate::pg`).
//!
//! A commit is one transaction: first the fence (the checkpoint moves only if
//! this host's lease epoch is still the row's), then all the batch's upserts
//! in one statement (`INSERT … SELECT … FROM unnest(…) ON CONFLICT … DO
//! UPDATE`) and all its deletes in another, the dead letter if any, and a
//! `projector_checkpoint` notification (`<id>:<position>`) that PostgreSQL
//! delivers at commit. Documents travel as text and PostgreSQL parses them
//! (`::jsonb`); the host never parses one. Fixed statements are prepared once
//! per pooled connection; listings are not (see `read`).
//!
//! A declared index is `d<id>_<hash>` (index names are schema-wide), an
//! expression index on `(doc #> '{…}')` limited to its collection; listings
//! write the same expression and the collection as a literal, so that the
//! planner matches the index. It is built in place (not `CONCURRENTLY`):
//! commits wait while it builds.
//!
//! Every call is synchronous: `Postgres::block_on` runs the driver's futures
//! from the blocking threads the read model is used on (or from async code on
//! the multi-threaded runtime).
//!
//! How it differs from SQLite, by design:
//! - documents are JSONB: a document comes back as PostgreSQL prints it (the
//!   same JSON value; key order, spacing and number spelling may differ);
//! - filters compare JSONB values: numbers as numbers (198 = 198.0), and a
//!   value of another JSON type never passes `=`, `<`, `<=`, `>` or `>=`
//!   (SQLite compares booleans as 0 and 1 with numbers, so `true` = 1 there,
//!   and puts any text above any number); `!=` passes neither a missing field
//!   nor JSON `null` (as on SQLite) but does pass a value of another type;
//! - a path name of digits also indexes into an array (`#>`); on SQLite it
//!   only names an object's key;
//! - ordering puts missing fields first (ascending), then JSON `null`, then
//!   strings, numbers, booleans, arrays and objects: JSONB's own order. SQLite
//!   sorts JSON `null` together with missing fields, numbers before text, and
//!   booleans among the numbers. Strings compare in the database's collation;
//!   keys (and collections) in byte order (`COLLATE "C"`), as on SQLite;
//! - a cursor carries the value as JSONB text ([`SortValue::Json`]), so
//!   cursors of one backend are refused by the other;
//! - the time limit is `statement_timeout`, set for the query's transaction;
//! - PostgreSQL's text holds no NUL character: a batch writing a collection
//!   or key with one, or a document with `\u0000` in a string, cannot be
//!   committed ([`Unstorable`]: the runner goes event by event and the event
//!   that wrote it faults the projection or, under `skip`, becomes a dead
//!   letter), where SQLite stores it. Lookups and listings under such a name find nothing; a filter
//!   or cursor holding one is refused as invalid; in a dead letter's text it
//!   becomes U+FFFD.
//!
//! This file does not take, renew or give up leases: it only checks the
//! epoch it is given ([`PgReadModel::set_fence`]).

use anyhow::Context;
use parking_lot::Mutex;
use tokio_postgres::error::SqlState;

use super::postgres_sql::{bigint, continue_after, field, order_by, printable, table, unsigned, where_clause, Params};
use super::query::{fnv, sql_literal, Query, QueryError};
use super::{Checkpoint, DeadLetter, Fenced, Item, SortValue, Unstorable};
use crate::pg::Postgres;
use crate::runtime::Writes;

/// One read model in PostgreSQL.
#[derive(Debug)]
pub(super) struct PgReadModel {
    pg: Postgres,
    /// Its row in `projector.readmodels`.
    id: i64,
    projection: String,
    name: String,
    /// `projector.documents_<id>`.
    table: String,
    /// The lease epoch this host writes under; `None`: it holds no lease.
    fence: Mutex<Option<i64>>,
}

impl PgReadModel {
    /// Opens the read model `name` of `projection`, creating its row and its
    /// table if missing. Several hosts may open it at once.
    pub(super) fn open(pg: &Postgres, projection: &str, name: &str) -> anyhow::Result<PgReadModel> {
        let id = pg
            .block_on(async {
                let mut client = pg.client().await?;
                let tx = client.transaction().await?;
                // Two hosts inserting at once: the second waits for the
                // first's row, then inserts nothing and reads it.
                tx.execute(
                    "INSERT INTO projector.readmodels (projection, name) VALUES ($1, $2)
                     ON CONFLICT (projection, name) DO NOTHING",
                    &[&projection, &name],
                )
                .await?;
                let id: i64 = tx
                    .query_one(
                        "SELECT id FROM projector.readmodels WHERE projection = $1 AND name = $2",
                        &[&projection, &name],
                    )
                    .await?
                    .get(0);
                // CREATE TABLE IF NOT EXISTS run at once by two sessions can
                // still collide on the table's row type (pg_type): one at a time.
                tx.execute("SELECT pg_advisory_xact_lock($1)", &[&id]).await?;
                tx.batch_execute(&format!(
                    "CREATE TABLE IF NOT EXISTS {} (
                         collection TEXT COLLATE \"C\" NOT NULL,
                         key TEXT COLLATE \"C\" NOT NULL,
                         doc JSONB NOT NULL,
                         PRIMARY KEY (collection, key)
                     )",
                    table(id)
                ))
                .await?;
                tx.commit().await?;
                Ok::<_, anyhow::Error>(id)
            })
            .with_context(|| format!("cannot open read model {name} of {projection} in {}", pg.shown()))?;
        Ok(PgReadModel {
            pg: pg.clone(),
            id,
            projection: projection.to_owned(),
            name: name.to_owned(),
            table: table(id),
            fence: Mutex::new(None),
        })
    }

    /// Drops the read model `name` of `projection`: its row (its dead
    /// letters go with it), then its table, in one transaction. Nothing to do if it is not there.
    pub(super) fn remove(pg: &Postgres, projection: &str, name: &str) -> anyhow::Result<()> {
        pg.block_on(async {
            let mut client = pg.client().await?;
            let tx = client.transaction().await?;
            let row = tx
                .query_opt(
                    "SELECT id FROM projector.readmodels WHERE projection = $1 AND name = $2",
                    &[&projection, &name],
                )
                .await?;
            let Some(id) = row.map(|row| row.get::<_, i64>(0)) else { return Ok(()) };
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&id]).await?;
            // The row first, as a commit takes it (the fence) before the
            // table: taken in the other order, a commit under way and this
            // removal would deadlock. Deleting it fences any owner off.
            tx.execute("DELETE FROM projector.readmodels WHERE id = $1", &[&id]).await?;
            tx.batch_execute(&format!("DROP TABLE IF EXISTS {}", table(id))).await?;
            tx.commit().await?;
            Ok::<_, anyhow::Error>(())
        })
        .with_context(|| format!("cannot remove read model {name} of {projection} from {}", pg.shown()))
    }

    /// Its row's id in `projector.readmodels`.
    pub(super) fn id(&self) -> i64 {
        self.id
    }

    /// Sets the lease epoch the commits check (`None`: this host holds no lease).
    pub(super) fn set_fence(&self, epoch: Option<i64>) {
        *self.fence.lock() = epoch;
    }

    /// Creates the expression index for the field `path` of `collection`'s documents.
    pub(super) fn create_index(&self, collection: &str, path: &str) -> anyhow::Result<()> {
        // Index names are schema-wide: the read model's id keeps them apart.
        let name = format!("d{}_{:016x}", self.id, fnv(&format!("{collection}\u{0}{path}")));
        let sql = format!(
            "CREATE INDEX IF NOT EXISTS {name} ON {table} ({expression}) WHERE collection = {collection}",
            table = self.table,
            expression = field(path)?,
            collection = sql_literal(collection),
        );
        self.pg.block_on(async {
            let mut client = self.pg.client().await?;
            let tx = client.transaction().await?;
            // Like CREATE TABLE, two hosts creating the same index collide.
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&self.id]).await?;
            tx.batch_execute(&sql).await?;
            tx.commit().await?;
            // Statistics on the indexed expression (ANALYZE gathers them for
            // expression indexes): without them the planner guesses that a
            // filter on it matches many documents and walks the primary key
            // in key order instead (a filtered list at 10/s, not thousands).
            client.batch_execute(&format!("ANALYZE {}", self.table)).await?;
            Ok(())
        })
    }

    /// The declared indexes in place, as the SQL that would create them.
    pub(super) fn indexes(&self) -> anyhow::Result<Vec<String>> {
        self.pg.block_on(async {
            let client = self.pg.client().await?;
            let rows = client
                .query(
                    "SELECT indexdef FROM pg_indexes
                     WHERE schemaname = 'projector' AND tablename = $1 AND indexname LIKE $2
                     ORDER BY indexname",
                    &[&format!("documents_{}", self.id), &format!("d{}\\_%", self.id)],
                )
                .await?;
            Ok(rows.iter().map(|row| row.get(0)).collect())
        })
    }

    /// The last committed checkpoint, if any batch was committed.
    pub(super) fn checkpoint(&self) -> anyhow::Result<Option<Checkpoint>> {
        let row = self.pg.block_on(async {
            let client = self.pg.client().await?;
            let statement =
                client.prepare_cached("SELECT position, events FROM projector.readmodels WHERE id = $1").await?;
            Ok::<_, anyhow::Error>(client.query_opt(&statement, &[&self.id]).await?)
        })?;
        let row = row.with_context(|| format!("read model {} of {} was removed", self.name, self.projection))?;
        let Some(position) = row.get::<_, Option<i64>>(0) else { return Ok(None) };
        Ok(Some(Checkpoint { position: unsigned(position)?, events: unsigned(row.get(1))? }))
    }

    /// Commits a batch's writes, its checkpoint and the dead letter it
    /// skipped, if any, in one transaction; refused with [`Fenced`] unless
    /// this host's lease epoch is still the read model's.
    pub(super) fn commit(
        &self,
        writes: &Writes,
        checkpoint: Checkpoint,
        letter: Option<&DeadLetter>,
    ) -> anyhow::Result<()> {
        self.commit_after(None, writes, checkpoint, letter)
    }

    /// [`PgReadModel::commit`], also refused with [`Fenced`] when `from` is
    /// given and the stored checkpoint's position is not it (another runner
    /// committed since this batch began).
    pub(super) fn commit_after(
        &self,
        from: Option<Option<u64>>,
        writes: &Writes,
        checkpoint: Checkpoint,
        letter: Option<&DeadLetter>,
    ) -> anyhow::Result<()> {
        let expected = match from {
            Some(Some(position)) => Some(bigint(position)?),
            _ => None,
        };
        let check_from = from.is_some();
        let fenced = || Fenced { projection: self.projection.clone(), readmodel: self.name.clone() };
        let Some(epoch) = *self.fence.lock() else { return Err(fenced().into()) };
        let (position, events) = (bigint(checkpoint.position)?, bigint(checkpoint.events)?);
        let mut upserts: (Vec<&str>, Vec<&str>, Vec<&str>) = Default::default();
        let mut deletes: (Vec<&str>, Vec<&str>) = Default::default();
        for ((collection, key), write) in writes {
            // PostgreSQL's text cannot hold it; SQLite's can. Trying again
            // cannot help: the runner treats it as the module's failure.
            if collection.contains('\0') || key.contains('\0') {
                return Err(Unstorable(format!(
                    "PostgreSQL cannot store a NUL character, found in the collection or key {collection:?} / {key:?}"
                ))
                .into());
            }
            match write {
                Some(doc) => {
                    upserts.0.push(collection);
                    upserts.1.push(key);
                    upserts.2.push(doc);
                }
                None => {
                    deletes.0.push(collection);
                    deletes.1.push(key);
                }
            }
        }
        let letter = match letter {
            Some(l) => Some((bigint(l.position)?, bigint(l.revision)?, l)),
            None => None,
        };
        self.pg.block_on(async {
            let mut client = self.pg.client().await?;
            let tx = client.transaction().await?;
            // The fence comes first: the UPDATE takes the row's lock, so a
            // takeover (`SET epoch = epoch + 1`) either committed before it,
            // and then no row matches here, or waits until this transaction
            // ends. A batch of a host that lost its lease never lands.
            let fence = tx
                .prepare_cached(
                    "UPDATE projector.readmodels SET position = $1, events = $2
                     WHERE id = $3 AND epoch = $4 AND (NOT $5 OR position IS NOT DISTINCT FROM $6)",
                )
                .await?;
            let fenced_off =
                tx.execute(&fence, &[&position, &events, &self.id, &epoch, &check_from, &expected]).await?;
            if fenced_off == 0 {
                // Dropping the transaction rolls it back.
                return Err(fenced().into());
            }
            if !upserts.0.is_empty() {
                let upsert = tx
                    .prepare_cached(&format!(
                        "INSERT INTO {} (collection, key, doc)
                         SELECT c, k, d::jsonb FROM unnest($1::text[], $2::text[], $3::text[]) AS w (c, k, d)
                         ON CONFLICT (collection, key) DO UPDATE SET doc = excluded.doc",
                        self.table
                    ))
                    .await?;
                tx.execute(&upsert, &[&upserts.0, &upserts.1, &upserts.2]).await.map_err(|e| {
                    match e.code() {
                        // `\u0000` in a JSON string: jsonb cannot hold it.
                        Some(&tokio_postgres::error::SqlState::UNTRANSLATABLE_CHARACTER) => {
                            anyhow::Error::from(Unstorable(format!(
                                "PostgreSQL cannot store this document: {}",
                                e.as_db_error().map_or_else(|| e.to_string(), |d| d.message().to_owned())
                            )))
                        }
                        _ => e.into(),
                    }
                })?;
            }
            if !deletes.0.is_empty() {
                let delete = tx
                    .prepare_cached(&format!(
                        "DELETE FROM {} WHERE (collection, key) IN (SELECT * FROM unnest($1::text[], $2::text[]))",
                        self.table
                    ))
                    .await?;
                tx.execute(&delete, &[&deletes.0, &deletes.1]).await?;
            }
            if let Some((position, revision, l)) = letter {
                let insert = tx
                    .prepare_cached(
                        "INSERT INTO projector.dead_letters (readmodel, position, stream, revision, event_type, error)
                         VALUES ($1, $2, $3, $4, $5, $6)
                         ON CONFLICT (readmodel, position) DO UPDATE SET stream = excluded.stream,
                             revision = excluded.revision, event_type = excluded.event_type, error = excluded.error",
                    )
                    .await?;
                let (stream, event_type, error) = (printable(&l.stream), printable(&l.event_type), printable(&l.error));
                tx.execute(&insert, &[&self.id, &position, &stream, &revision, &event_type, &error]).await?;
            }
            // Delivered when the transaction commits, never before.
            let notify = tx.prepare_cached("SELECT pg_notify('projector_checkpoint', $1)").await?;
            tx.execute(&notify, &[&format!("{}:{position}", self.id)]).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    /// Skipped events, oldest first, after `after` (a position), at most `limit`.
    pub(super) fn dead_letters(&self, after: Option<u64>, limit: usize) -> anyhow::Result<Vec<DeadLetter>> {
        // Positions past i64::MAX are past every stored one.
        let after = after.map_or(-1, |p| i64::try_from(p).unwrap_or(i64::MAX));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self.pg.block_on(async {
            let client = self.pg.client().await?;
            let statement = client
                .prepare_cached(
                    "SELECT position, stream, revision, event_type, error FROM projector.dead_letters
                     WHERE readmodel = $1 AND position > $2 ORDER BY position LIMIT $3",
                )
                .await?;
            Ok::<_, anyhow::Error>(client.query(&statement, &[&self.id, &after, &limit]).await?)
        })?;
        rows.iter()
            .map(|row| {
                Ok(DeadLetter {
                    position: unsigned(row.get(0))?,
                    stream: row.get(1),
                    revision: unsigned(row.get(2))?,
                    event_type: row.get(3),
                    error: row.get(4),
                })
            })
            .collect()
    }

    /// How many events were skipped.
    pub(super) fn dead_letter_count(&self) -> anyhow::Result<u64> {
        let n: i64 = self.pg.block_on(async {
            let client = self.pg.client().await?;
            let statement =
                client.prepare_cached("SELECT count(*) FROM projector.dead_letters WHERE readmodel = $1").await?;
            Ok::<_, anyhow::Error>(client.query_one(&statement, &[&self.id]).await?.get(0))
        })?;
        unsigned(n)
    }

    /// A document, by its key.
    pub(super) fn document(&self, collection: &str, key: &str) -> anyhow::Result<Option<String>> {
        if collection.contains('\0') || key.contains('\0') {
            return Ok(None); // Nothing is stored under it (see `commit`).
        }
        self.pg.block_on(async {
            let client = self.pg.client().await?;
            let statement = client
                .prepare_cached(&format!("SELECT doc::text FROM {} WHERE collection = $1 AND key = $2", self.table))
                .await?;
            Ok(client.query_opt(&statement, &[&collection, &key]).await?.map(|row| row.get(0)))
        })
    }

    /// The documents of `collection` that pass every filter, ordered and paged.
    pub(super) fn query(&self, collection: &str, query: &Query) -> Result<Vec<Item>, QueryError> {
        let mut params = Params::default();
        if collection.contains('\0') {
            return Ok(Vec::new()); // Nothing is stored under it (see `commit`).
        }
        let mut sql = where_clause(collection, &query.filters, &mut params).map_err(QueryError::Invalid)?;
        if let Some(condition) =
            continue_after(query.order.as_ref(), &query.page, &mut params).map_err(QueryError::Invalid)?
        {
            sql.push_str(&format!(" AND {condition}"));
        }
        let (order_by, sorted_by) = order_by(query.order.as_ref())?;
        let sql = format!(
            "SELECT key, doc::text, {sorted_by} FROM {table} {sql} {order_by} LIMIT {limit}",
            table = self.table,
            limit = query.limit,
        );
        let rows = self.read(query.time_limit, &sql, &params)?;
        Ok(rows
            .iter()
            .map(|row| Item {
                key: row.get(0),
                doc: row.get(1),
                sort_value: row.get::<_, Option<String>>(2).map_or(SortValue::Null, SortValue::Json),
            })
            .collect())
    }

    /// How many documents of `collection` pass every filter of `query` (its order and page do not matter).
    pub(super) fn count(&self, collection: &str, query: &Query) -> Result<u64, QueryError> {
        let mut params = Params::default();
        if collection.contains('\0') {
            return Ok(0); // Nothing is stored under it (see `commit`).
        }
        let sql = where_clause(collection, &query.filters, &mut params).map_err(QueryError::Invalid)?;
        let rows = self.read(query.time_limit, &format!("SELECT count(*) FROM {} {sql}", self.table), &params)?;
        let count: i64 = rows.first().context("count(*) returned no row")?.get(0);
        Ok(unsigned(count)?)
    }

    /// Runs a listing's statement in a read-only transaction, cut off by
    /// PostgreSQL once `time_limit` has passed. Not a cached statement: its
    /// text varies with each request's collection and fields, and would
    /// grow every connection's statement cache without bound.
    fn read(
        &self,
        time_limit: Option<std::time::Duration>,
        sql: &str,
        params: &Params,
    ) -> Result<Vec<tokio_postgres::Row>, QueryError> {
        self.pg.block_on(async {
            let mut client = self.pg.client().await?;
            let tx = client.build_transaction().read_only(true).start().await.map_err(anyhow::Error::from)?;
            if let Some(limit) = time_limit {
                // In whole milliseconds, at least one: 0 would mean no limit.
                let millis = limit.as_micros().div_ceil(1000).max(1);
                tx.batch_execute(&format!("SET LOCAL statement_timeout = {millis}"))
                    .await
                    .map_err(anyhow::Error::from)?;
            }
            let rows = tx.query(sql, &params.as_sql()).await.map_err(|e| match (e.code(), time_limit) {
                (Some(&SqlState::QUERY_CANCELED), Some(limit)) => QueryError::TooSlow(limit),
                _ => QueryError::Failed(e.into()),
            })?;
            tx.commit().await.map_err(anyhow::Error::from)?;
            Ok(rows)
        })
    }

    /// Runs `during` while one of its pooled connections is in the middle of a read.
    #[cfg(test)]
    pub(super) fn while_reading(&self, during: impl FnOnce()) -> anyhow::Result<()> {
        self.pg.block_on(async {
            let mut client = self.pg.client().await?;
            let tx = client.transaction().await?;
            tx.query(&format!("SELECT count(*) FROM {}", self.table), &[]).await?;
            during();
            tx.commit().await?;
            Ok(())
        })
    }
}
