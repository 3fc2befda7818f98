//! Malformed and oversized gRPC requests, sent as raw HTTP/2 frames, while a
//! well-behaved client appends and follows `$all` beside them: each one is
//! answered with an error status (never a dropped connection, which is what
//! a panicking handler looks like), nothing of them is written, and the
//! other client notices nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use eventstore::{ReadAllOptions, SubscribeToAllOptions};
use projector_tests::{collect, json_event, within, TestEnv};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::codegen::http;

const APPEND: &str = "/event_store.client.streams.Streams/Append";
const READ: &str = "/event_store.client.streams.Streams/Read";

/// A gRPC message frame: compression flag, declared length, body.
fn frame(compressed: bool, declared: u32, body: &[u8]) -> Bytes {
    let mut frame = BytesMut::with_capacity(5 + body.len());
    frame.put_u8(u8::from(compressed));
    frame.put_u32(declared);
    frame.put_slice(body);
    frame.freeze()
}

fn whole(body: &[u8]) -> Bytes {
    frame(false, u32::try_from(body.len()).expect("small"), body)
}

/// Sends one request on a fresh HTTP/2 connection; its `grpc-status` and message.
async fn call(addr: std::net::SocketAddr, path: &str, content_type: &str, body: Bytes) -> (Option<u32>, String) {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (client, connection) = h2::client::handshake(tcp).await.expect("HTTP/2 handshake");
    tokio::spawn(connection);
    let mut client = client.ready().await.expect("ready");
    let request = http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", content_type)
        .header("te", "trailers")
        .body(())
        .expect("request");
    let (response, mut send) = client.send_request(request, false).expect("send");
    send.send_data(body, true).expect("body");
    let response = response.await.expect("an answer, not a dropped stream");
    let header = |headers: &http::HeaderMap, name: &str| {
        headers.get(name).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let (mut status, mut message) =
        (header(response.headers(), "grpc-status"), header(response.headers(), "grpc-message"));
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("body");
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    if let Some(trailers) = body.trailers().await.expect("trailers") {
        status = status.or_else(|| header(&trailers, "grpc-status"));
        message = message.or_else(|| header(&trailers, "grpc-message"));
    }
    (status.and_then(|s| s.parse().ok()), message.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_grpc_requests_are_refused_without_harming_other_clients() {
    let env = TestEnv::start().await;
    let addr = env.server().local_addr();
    let client = env.client();

    // The well-behaved client: appends without pause and follows $all.
    let stop = Arc::new(AtomicBool::new(false));
    let appender = tokio::spawn({
        let (client, stop) = (client.clone(), stop.clone());
        async move {
            let mut acknowledged = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let event = json_event("Behaved", json!({"n": acknowledged}));
                client.append_to_stream("behaved", &Default::default(), event).await.expect("a good append");
                acknowledged += 1;
            }
            acknowledged
        }
    });
    let mut subscription = client.subscribe_to_all(&SubscribeToAllOptions::default()).await;

    let huge = 200u32 << 20;
    // Field 2 of AppendReq (a proposed message) before field 1 (the options).
    let proposal_first = [0x12, 0x00];
    let cases: Vec<(&str, &str, &str, Bytes, Option<u32>)> = vec![
        ("bytes that are no protobuf", APPEND, "application/grpc", whole(b"\xff\xff\xff\xff\x0fnot protobuf"), None),
        ("a frame shorter than it declares", APPEND, "application/grpc", frame(false, 1000, b"\x0a\x02"), None),
        ("a frame declaring 200 MiB", APPEND, "application/grpc", frame(false, huge, b"\x0a"), Some(11)),
        ("a compressed frame without an encoding", APPEND, "application/grpc", frame(true, 2, b"\x0a\x00"), None),
        ("a proposed event before the options", APPEND, "application/grpc", whole(&proposal_first), Some(3)),
        ("a read without options", READ, "application/grpc", whole(b""), Some(3)),
        ("no message at all", READ, "application/grpc", Bytes::new(), None),
        ("an unknown method", "/event_store.client.streams.Streams/Nope", "application/grpc", whole(b""), Some(12)),
        ("a service that does not exist", "/nope.Nope/Nope", "application/grpc", whole(b""), Some(12)),
    ];
    for (what, path, content_type, body, expected) in cases {
        let (status, message) = within(what, call(addr, path, content_type, body)).await;
        eprintln!("{what}: grpc-status {status:?} {message}");
        let status = status.unwrap_or_else(|| panic!("{what}: answered without a gRPC status"));
        assert_ne!(status, 0, "{what} was accepted");
        if let Some(expected) = expected {
            assert_eq!(status, expected, "{what}: {message}");
        }
    }

    // Bytes that are not HTTP/2 at all: the connection is closed, nothing else.
    let mut raw = TcpStream::connect(addr).await.expect("connect");
    raw.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\x00\x01garbage").await.expect("write");
    let mut rest = Vec::new();
    within("the server to close a connection that is not HTTP/2", raw.read_to_end(&mut rest)).await.ok();

    // The good client went on all along, and only its events are in the log.
    stop.store(true, Ordering::Relaxed);
    let acknowledged = within("the appender", appender).await.expect("appender");
    assert!(acknowledged > 0);
    let events = collect(client.read_all(&ReadAllOptions::default().max_count(usize::MAX)).await.expect("read"))
        .await
        .expect("events");
    assert_eq!(events.len() as u64, acknowledged, "only the good client's events were written");
    assert!(events.iter().all(|e| e.get_original_event().stream_id == "behaved"));
    for n in 0..acknowledged {
        let event = within("the subscriber's events", subscription.next()).await.expect("served");
        let data: serde_json::Value = serde_json::from_slice(&event.get_original_event().data).expect("json");
        assert_eq!(data["n"], n, "the subscriber got every event in order");
    }
}
