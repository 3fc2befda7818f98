//! The embedded event store, driven by the official clients.

mod append;
mod durability;
mod kill;
mod malformed;
mod node;
mod persistent;
mod persistent_crash;
mod protocol;
mod read;
mod security;
mod subscribe;
