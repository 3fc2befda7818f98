//! Code generated from the EventStoreDB `.proto` files by `build.rs`.
//!
//! The module tree mirrors the protobuf packages because the generated code
//! refers to its neighbours by relative path. Nothing outside `grpc/` uses
//! these types; storage speaks its own domain types.
#![allow(missing_docs, missing_debug_implementations, unreachable_pub, clippy::all, dead_code, rust_2018_idioms)]

pub mod event_store {
    pub mod client {
        //! `event_store.client`: identifiers, positions and typed error details.
        tonic::include_proto!("event_store.client");

        pub mod streams {
            //! `event_store.client.streams`: append, read, subscribe, delete.
            tonic::include_proto!("event_store.client.streams");
        }

        pub mod persistent_subscriptions {
            //! `event_store.client.persistent_subscriptions`: consumer groups, acks and nacks.
            tonic::include_proto!("event_store.client.persistent_subscriptions");
        }

        pub mod gossip {
            //! `event_store.client.gossip`: cluster membership.
            tonic::include_proto!("event_store.client.gossip");
        }

        pub mod server_features {
            //! `event_store.client.server_features`: what this server supports.
            tonic::include_proto!("event_store.client.server_features");
        }
    }
}

pub mod google {
    pub mod rpc {
        //! `google.rpc`: the status carried by batch-append failures.
        tonic::include_proto!("google.rpc");
    }
}
