//! Integration tests: one binary, real components, loopback only.
//!
//! Table of contents
//! - `eventstore::append`    appends, expected revisions, idempotency, size limit, concurrency
//! - `eventstore::read`      stream and `$all` reads, closing stream positions, deleted / tombstoned / missing streams
//! - `eventstore::subscribe` catch-up -> caught-up -> live, filters (with lookaround) and checkpoints, many subscribers
//! - `eventstore::durability` restart, torn and corrupt tails
//! - `eventstore::kill`      the store's own process killed under concurrent appends; a full disk
//! - `eventstore::malformed` raw HTTP/2: malformed and oversized gRPC requests beside a good client
//! - `eventstore::protocol`  server features, gossip, transport latency path
//! - `eventstore::node`      the official Node.js client (opt-in: `PROJECTOR_NODE_TESTS=1`), plain and secure
//! - `eventstore::security`  TLS and credentials with the Rust client; no open listener beyond loopback
//! - `runtime`               the Wasm runtime running the example modules (built by `tests/build.rs`)
//! - `host`                  end to end: store + host in-process, deploy over HTTP, query read models
//! - `process`               the real binary: CLI client, kill -9 and restart
//! - `own_crate`             `projector new` outside the repository: the crate tests, builds and deploys
//! - `crash`                 kill -9 at random points of a catch-up; read models equal an uninterrupted run's
//! - `soak`                  the binary under steady appends, registrations, queries and swaps: resources flat, nothing lost
//! - `storage`               the host's data directory unusable or full: clear errors, retried, nothing damaged
//! - `races`                 a fault racing stop/rollback/swap: the registry keeps both; a restart brings back what was answered
//! - `languages`             TypeScript and Python examples beside their Rust twins: same documents, errors in their own words, hostile TS modules stopped, a swap to TS without a failed query (opt-in: `PROJECTOR_GUEST_LANGUAGES`)
//! - `exposure`              hostile clients: bounded filters, query time limits, lookups beside slow scans, names and cursors refused
//! - `shared_feed`           lanes sharing the host's reads of `$all`: one read at the head, a late lane joining at its exact checkpoint
//! - `lifecycle`             swaps, blue/green rebuilds, stop/start/reset/retry/delete, restarts, auth
//! - `rollback`              rollback after a swap and after a rebuild (same version too), a rebuild cancelled
//! - `console`               the web console in headless Chromium: overview, fault, stop/start, deploy, try, explore, read-only (opt-in: `PROJECTOR_BROWSER`)
//! - `trial`                 `POST /try`: a module over given or recent events, nothing committed; the console's files
//! - `users`                 registration: validation, argon2id, uniqueness under concurrency, idempotency, outages, read-back
//! - `fuzz`                  schemathesis over the published OpenAPI document (opt-in: `PROJECTOR_SCHEMATHESIS`)
//!
//! Shared set-ups, in `support`: `HostEnv` (store and host in-process, waits
//! on the status watch), `HostProcess` (the real binary), `Api` (requests to
//! either, bounded waits), `tally` and `register` (events the test
//! projections consume). The event store alone, `within` and `Seeded` are in
//! the `projector-tests` library, which the benchmarks share.
//!
//! Every test starts its own server on `127.0.0.1:0` in a temporary directory
//! and talks to it through the official `eventstore` client.

// Tests assert on the error they expect.
#![allow(clippy::unwrap_used)]

mod cluster;
mod console;
mod crash;
mod eventstore;
mod exposure;
mod fuzz;
mod host;
mod languages;
mod lifecycle;
mod own_crate;
mod process;
mod races;
mod rollback;
mod runtime;
mod shared_feed;
mod soak;
mod storage;
mod support;
mod trial;
mod users;
