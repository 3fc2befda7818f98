//! What the tests of this binary share: a host to test against, in-process
//! ([`HostEnv`]) or as the real binary in its own process ([`HostProcess`]);
//! a client for its HTTP API ([`Api`]); and the events the test projections
//! consume, with what those projections answer (`tally`, `users`).
//!
//! Written once here, used by the test modules; nothing here asserts a
//! behaviour of its own beyond "the request was answered". Helpers that the
//! benchmarks need too (the event store in a temporary directory, `within`,
//! `Seeded`, the module paths) are in the `projector-tests` library instead.
//!
//! Nothing waits by sleeping: an in-process host is watched on its status
//! channel, a host process is polled at a short fixed interval, and every
//! wait is bounded by `within`.

mod api;
mod host_env;
mod host_process;
pub(crate) mod tally;
mod users;

pub(crate) use api::Api;
pub(crate) use host_env::{on_both_backends, Backend, HostEnv};
pub(crate) use host_process::{HostProcess, BINARY, TOKEN};
pub(crate) use users::register;
