//! The small services clients call before anything else: `ServerFeatures`
//! (which decides whether the client uses batch appends) and `Gossip` (which
//! cluster-style connection strings use to find the leader).

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::proto::event_store::client::gossip::{self, gossip_server, member_info::VNodeState, ClusterInfo};
use crate::proto::event_store::client::server_features::{server_features_server, SupportedMethod, SupportedMethods};

/// The EventStoreDB version this server answers like. Clients enable features
/// by version; 24.10 is past every threshold the 4.x Rust and 6.x Node clients check.
pub(crate) const SERVER_VERSION: &str = "24.10.0";

const STREAMS: &str = "event_store.client.streams.streams";
const PERSISTENT: &str = "event_store.client.persistent_subscriptions.persistentsubscriptions";

/// Reports the RPCs this server implements.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Features;

#[tonic::async_trait]
impl server_features_server::ServerFeatures for Features {
    async fn get_supported_methods(&self, _: Request<()>) -> Result<Response<SupportedMethods>, Status> {
        let method = |service: &str, name: &str, features: &[&str]| SupportedMethod {
            method_name: name.into(),
            service_name: service.into(),
            features: features.iter().map(|f| (*f).to_owned()).collect(),
        };
        let methods = vec![
            method(STREAMS, "read", &["position", "events"]),
            method(STREAMS, "append", &[]),
            method(STREAMS, "batchappend", &[]),
            method(STREAMS, "delete", &[]),
            method(STREAMS, "tombstone", &[]),
            // The clients look for these before they use the gRPC calls
            // (without them they fall back to the HTTP API), and for "all"
            // before persistent subscriptions to `$all`.
            method(PERSISTENT, "create", &["stream", "all"]),
            method(PERSISTENT, "update", &["stream", "all"]),
            method(PERSISTENT, "delete", &["stream", "all"]),
            method(PERSISTENT, "read", &["stream", "all"]),
            method(PERSISTENT, "getinfo", &["stream", "all"]),
            method(PERSISTENT, "replayparked", &["stream", "all"]),
            method(PERSISTENT, "list", &["stream", "all"]),
            method(PERSISTENT, "restartsubsystem", &[]),
            method("event_store.client.gossip.gossip", "read", &[]),
            method("event_store.client.server_features.serverfeatures", "getsupportedmethods", &[]),
        ];
        Ok(Response::new(SupportedMethods { methods, event_store_server_version: SERVER_VERSION.into() }))
    }
}

/// Describes a one-member cluster: this node, always the leader.
#[derive(Debug, Clone)]
pub(crate) struct Gossip {
    pub(crate) instance_id: Uuid,
    pub(crate) advertised: SocketAddr,
}

#[tonic::async_trait]
impl gossip_server::Gossip for Gossip {
    async fn read(&self, _: Request<()>) -> Result<Response<ClusterInfo>, Status> {
        let ticks = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos() / 100;
        let member = gossip::MemberInfo {
            instance_id: Some(super::convert::uuid_to_wire(self.instance_id, super::convert::IdFormat::Structured)),
            time_stamp: ticks as i64,
            state: VNodeState::Leader as i32,
            is_alive: true,
            http_end_point: Some(gossip::EndPoint {
                address: self.advertised.ip().to_string(),
                port: u32::from(self.advertised.port()),
            }),
        };
        Ok(Response::new(ClusterInfo { members: vec![member] }))
    }
}
