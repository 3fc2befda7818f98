//! Protocol plumbing the clients depend on: feature negotiation, gossip for
//! cluster-style connection strings, and refusal of malformed requests.

use eventstore::{ClientSettings, ExpectedRevision, ReadStreamOptions};
use projector_tests::{collect, json_event, TestEnv};
use serde_json::json;

#[tokio::test]
async fn the_server_advertises_a_version_and_batch_append() {
    let env = TestEnv::start().await;
    let client = env.client();
    client.append_to_stream("warmup", &Default::default(), json_event("X", json!({}))).await.expect("append");
    let info = client.server_info().await.expect("server info");
    let version = info.version();
    assert!((version.major(), version.minor()) >= (23, 10), "version {version}");
    // The client refuses batch appends with UnsupportedFeature unless the
    // server lists the method, so a successful batch append proves it is advertised.
    let batch = client.batch_append(&Default::default()).await.expect("batch append is supported");
    let written = batch
        .append_to_stream(
            "batched",
            ExpectedRevision::NoStream,
            vec![json_event("A", json!({})), json_event("B", json!({}))],
        )
        .await
        .expect("batch append");
    assert_eq!(written.current_revision(), Some(1));
    let err = batch
        .append_to_stream("batched", ExpectedRevision::NoStream, vec![json_event("C", json!({}))])
        .await
        .unwrap_err();
    assert!(matches!(err, eventstore::Error::Grpc { code: tonic::Code::FailedPrecondition, .. }), "{err:?}");
}

#[tokio::test]
async fn a_cluster_connection_string_discovers_the_single_node_through_gossip() {
    let env = TestEnv::start().await;
    let addr = env.server().local_addr();
    let settings: ClientSettings = format!("esdb+discover://{addr}?tls=false").parse().expect("settings");
    let client = eventstore::Client::new(settings).expect("client");
    client
        .append_to_stream("via-gossip", &Default::default(), json_event("Found", json!({})))
        .await
        .expect("append via gossip");
    let events = collect(client.read_stream("via-gossip", &ReadStreamOptions::default()).await.expect("read"))
        .await
        .expect("events");
    assert_eq!(events.len(), 1);
}

#[tokio::test]
async fn an_event_without_a_type_is_refused() {
    let env = TestEnv::start().await;
    let client = env.client();
    let untyped = json_event("", json!({}));
    let err = client.append_to_stream("typed", &Default::default(), untyped).await.unwrap_err();
    assert!(matches!(err, eventstore::Error::Grpc { code: tonic::Code::InvalidArgument, .. }), "{err:?}");
    let err = client.read_stream("typed", &Default::default()).await.expect("read").next().await.unwrap_err();
    assert!(matches!(err, eventstore::Error::ResourceNotFound), "{err:?}");
}
