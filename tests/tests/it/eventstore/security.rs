//! Security as the official Rust client speaks it (issue 17, finding 1): TLS
//! (a verified generated CA, `tlsVerifyCert=false`, plaintext), the `admin`
//! user's password on every streams call, refusals the client maps to
//! `Error::AccessDenied`, no unauthenticated listener beyond loopback, and
//! the `projector` binary's defaults (`projector eventstore` secure,
//! `projector serve` requiring its store's password and never echoing a
//! connection string's credentials).

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use eventstore::{
    Client, ExpectedRevision, ReadAllOptions, ReadStreamOptions, StreamPosition, SubscribeToStreamOptions,
};
use eventstore_embedded::{Config, Credentials, EmbeddedServer, Error, Security, TlsSettings};
use projector_tests::{collect, json_event, within, LoggedProcess, TestEnv};
use serde_json::json;

const BINARY: &str = env!("CARGO_BIN_EXE_projector-host");

/// A server with TLS (generated CA) and the `admin` user.
async fn secure_env() -> TestEnv {
    TestEnv::start_with(|config| config.security = Security::secure(&config.data_dir).expect("security")).await
}

/// A client for `addr` with `credentials` (`user:pass@`, or "" for none) and
/// `tls` (the query string's TLS part). Few discovery attempts, so a client
/// that cannot connect gives up soon.
fn client(addr: SocketAddr, credentials: &str, tls: &str) -> Client {
    let connection = format!("esdb://{credentials}{addr}?{tls}&maxDiscoverAttempts=2&discoveryInterval=50");
    Client::new(connection.parse().expect("settings")).expect("client")
}

fn ca_query(server: &EmbeddedServer) -> String {
    format!("tls=true&tlsCAFile={}", server.ca_file().expect("a generated CA").display())
}

fn password(server_dir: &Path) -> String {
    std::fs::read_to_string(server_dir.join(eventstore_embedded::PASSWORD_FILE)).expect("password").trim().to_owned()
}

fn is_access_denied<T: std::fmt::Debug>(result: &Result<T, eventstore::Error>) -> bool {
    matches!(result, Err(eventstore::Error::AccessDenied))
}

#[tokio::test]
async fn the_right_credentials_append_read_and_subscribe_over_verified_tls() {
    let env = secure_env().await;
    let server = env.server();
    let admin = format!("admin:{}@", password(&env.dir().join("eventstore")));
    let client = client(server.local_addr(), &admin, &ca_query(server));
    client
        .append_to_stream("secure", &Default::default(), json_event("Appended", json!({"n": 1})))
        .await
        .expect("append");
    let events = collect(client.read_stream("secure", &ReadStreamOptions::default()).await.expect("read"))
        .await
        .expect("events");
    assert_eq!(events.len(), 1);
    let all = collect(client.read_all(&ReadAllOptions::default()).await.expect("read $all")).await.expect("$all");
    assert!(all.iter().any(|e| e.get_original_event().stream_id == "secure"));
    let mut subscription = client
        .subscribe_to_stream("secure", &SubscribeToStreamOptions::default().start_from(StreamPosition::Start))
        .await;
    let first = within("the subscription's first event", subscription.next()).await.expect("event");
    assert_eq!(first.get_original_event().event_type, "Appended");
    // The server's own connection string carries the same credentials and CA.
    server
        .client()
        .expect("client")
        .append_to_stream("secure", &Default::default(), json_event("Again", json!({})))
        .await
        .expect("append");
}

#[tokio::test]
async fn discovery_answers_anyone_and_the_calls_after_it_need_credentials() {
    let env = secure_env().await;
    let server = env.server();
    let admin = format!("admin:{}@", password(&env.dir().join("eventstore")));
    let discover = |credentials: &str| {
        let connection = format!("esdb+discover://{credentials}{}?{}", server.local_addr(), ca_query(server));
        Client::new(connection.parse().expect("settings")).expect("client")
    };
    let append = discover(&admin).append_to_stream("found", &Default::default(), json_event("X", json!({}))).await;
    assert!(append.is_ok(), "{append:?}");
    // Gossip answers the anonymous client too, so its failure is the refusal, not discovery.
    let anonymous = discover("").append_to_stream("found", &Default::default(), json_event("X", json!({}))).await;
    assert!(is_access_denied(&anonymous), "{anonymous:?}");
}

#[tokio::test]
async fn missing_credentials_are_refused_as_access_denied() {
    let env = secure_env().await;
    let server = env.server();
    let anonymous = client(server.local_addr(), "", &ca_query(server));
    let read = anonymous.read_stream("anything", &ReadStreamOptions::default()).await;
    assert!(is_access_denied(&read), "{:?}", read.map(|_| ()));
    let all = anonymous.read_all(&ReadAllOptions::default()).await;
    assert!(is_access_denied(&all), "{:?}", all.map(|_| ()));
    let append = anonymous.append_to_stream("anything", &Default::default(), json_event("X", json!({}))).await;
    assert!(is_access_denied(&append), "{append:?}");
    let mut subscription = anonymous.subscribe_to_stream("anything", &SubscribeToStreamOptions::default()).await;
    let refused = within("the subscription's refusal", subscription.next()).await;
    assert!(is_access_denied(&refused), "{refused:?}");
}

#[tokio::test]
async fn wrong_credentials_are_refused_as_access_denied() {
    let env = secure_env().await;
    let server = env.server();
    let right = password(&env.dir().join("eventstore"));
    for credentials in [format!("admin:{right}x@"), format!("root:{right}@"), "admin:@".to_owned()] {
        let wrong = client(server.local_addr(), &credentials, &ca_query(server));
        let read = wrong.read_stream("anything", &ReadStreamOptions::default()).await;
        assert!(is_access_denied(&read), "{credentials}: {:?}", read.map(|_| ()));
        let append = wrong.append_to_stream("anything", &Default::default(), json_event("X", json!({}))).await;
        assert!(is_access_denied(&append), "{credentials}: {append:?}");
    }
}

#[tokio::test]
async fn a_forged_append_without_credentials_is_refused_and_the_stream_is_unchanged() {
    let env = secure_env().await;
    let server = env.server();
    let owner = server.client().expect("client");
    owner
        .append_to_stream(
            "emails-user1@example.com",
            &Default::default(),
            json_event("EmailReserved", json!({"userId": "u1"})),
        )
        .await
        .expect("append");
    let forger = client(server.local_addr(), "", &ca_query(server));
    let forged = json_event("EmailReserved", json!({"userId": "attacker"}));
    let single = forger.append_to_stream("emails-user1@example.com", &Default::default(), forged.clone()).await;
    assert!(is_access_denied(&single), "{single:?}");
    // The batched path (one long call) is refused as well.
    let batch = forger.batch_append(&Default::default()).await;
    if let Ok(batch) = batch {
        let result = batch.append_to_stream("emails-user1@example.com", ExpectedRevision::Any, vec![forged]).await;
        assert!(result.is_err(), "{result:?}");
    }
    let events =
        collect(owner.read_stream("emails-user1@example.com", &ReadStreamOptions::default()).await.expect("read"))
            .await
            .expect("events");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].get_original_event().data.as_ref(), br#"{"userId":"u1"}"#);
}

#[tokio::test]
async fn authentication_also_works_over_plaintext_and_with_tls_verification_off() {
    let plain = TestEnv::start_with(|config| {
        config.security.user = Some(Credentials::new("admin", "plain-password"));
    })
    .await;
    let addr = plain.server().local_addr();
    let right = client(addr, "admin:plain-password@", "tls=false");
    right.append_to_stream("plain", &Default::default(), json_event("X", json!({}))).await.expect("append");
    let anonymous = client(addr, "", "tls=false");
    let read = anonymous.read_stream("plain", &ReadStreamOptions::default()).await;
    assert!(is_access_denied(&read), "{:?}", read.map(|_| ()));

    let tls = secure_env().await;
    let admin = format!("admin:{}@", password(&tls.dir().join("eventstore")));
    let unverified = client(tls.server().local_addr(), &admin, "tls=true&tlsVerifyCert=false");
    unverified.append_to_stream("unverified", &Default::default(), json_event("X", json!({}))).await.expect("append");
}

#[tokio::test]
async fn a_client_trusting_another_ca_cannot_connect() {
    let env = secure_env().await;
    let other = secure_env().await;
    let admin = format!("admin:{}@", password(&env.dir().join("eventstore")));
    let mistrusting = client(env.server().local_addr(), &admin, &ca_query(other.server()));
    let append = within(
        "an append through an untrusted certificate",
        mistrusting.append_to_stream("mistrust", &Default::default(), json_event("X", json!({}))),
    )
    .await;
    assert!(append.is_err(), "{append:?}");
    // A plaintext client cannot talk to the TLS server either.
    let plaintext = client(env.server().local_addr(), &admin, "tls=false");
    let append = within(
        "a plaintext append",
        plaintext.append_to_stream("mistrust", &Default::default(), json_event("X", json!({}))),
    )
    .await;
    assert!(append.is_err(), "{append:?}");
}

#[tokio::test]
async fn generated_secrets_are_owner_only_and_the_ca_survives_a_restart() {
    let mut env = secure_env().await;
    let data = env.dir().join("eventstore");
    let mode = |path: &Path| std::fs::metadata(path).expect("metadata").permissions().mode() & 0o777;
    assert_eq!(mode(&data.join("admin-password")), 0o600);
    assert_eq!(mode(&data.join("tls")), 0o700);
    for secret in ["ca.key", "node.key", "node.crt"] {
        assert_eq!(mode(&data.join("tls").join(secret)), 0o600, "{secret}");
    }
    assert_eq!(mode(&data.join("tls/ca.crt")), 0o644);
    let ca = std::fs::read(data.join("tls/ca.crt")).expect("ca");
    let admin = format!("admin:{}@", password(&data));
    let before = ca_query(env.server());
    env.restart().await;
    assert_eq!(std::fs::read(data.join("tls/ca.crt")).expect("ca"), ca, "the CA is kept");
    let client = client(env.server().local_addr(), &admin, &before);
    client.append_to_stream("after-restart", &Default::default(), json_event("X", json!({}))).await.expect("append");
}

#[tokio::test]
async fn the_server_refuses_a_non_loopback_address_without_authentication() {
    let dir = tempfile::tempdir().expect("tempdir");
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.expect("bind");
    let refused = EmbeddedServer::start(listener, Config::new(dir.path().join("open"))).await;
    assert!(matches!(refused, Err(Error::Unprotected(_))), "{refused:?}");

    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.expect("bind");
    let data = dir.path().join("secure");
    let config = Config { security: Security::secure(&data).expect("security"), ..Config::new(&data) };
    let server = EmbeddedServer::start(listener, config).await.expect("with authentication it serves");
    server
        .client()
        .expect("client")
        .append_to_stream("x", &Default::default(), json_event("X", json!({})))
        .await
        .expect("append");
    server.shutdown().await.expect("shutdown");

    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.expect("bind");
    let mut config = Config::new(dir.path().join("allowed"));
    config.security.allow_unauthenticated_network = true;
    let server = EmbeddedServer::start(listener, config).await.expect("explicitly allowed");
    server.shutdown().await.expect("shutdown");

    let output = std::process::Command::new(BINARY)
        .args(["eventstore", "--insecure", "--listen", "0.0.0.0:0", "--data"])
        .arg(dir.path().join("binary"))
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("without authentication"), "{stderr}");
}

#[tokio::test]
async fn tls_files_from_the_operator_are_served() {
    // A pair generated by another server stands in for the operator's files.
    let issuer = secure_env().await;
    let tls = issuer.dir().join("eventstore/tls");
    let env = TestEnv::start_with(|config| {
        config.security.tls = Some(TlsSettings::Files {
            cert: tls.join("node.crt"),
            key: tls.join("node.key"),
            ca: Some(tls.join("ca.crt")),
        });
        config.security.user = Some(Credentials::new("admin", "files"));
    })
    .await;
    assert!(env.server().connection_string().contains("tlsCAFile="));
    env.client().append_to_stream("files", &Default::default(), json_event("X", json!({}))).await.expect("append");
}

#[tokio::test]
async fn projector_serve_protects_its_embedded_store_with_a_generated_password() {
    // On loopback TLS is optional: both ways, the host works through its
    // store with the password and an anonymous client is refused.
    for tls in [false, true] {
        let data = tempfile::tempdir().expect("tempdir");
        // A data directory others could read, as `mkdir` makes it: the host tightens it.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(data.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let mut command = std::process::Command::new(BINARY);
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--eventstore-listen", "127.0.0.1:0", "--data"])
            .arg(data.path())
            .args(tls.then_some("--eventstore-tls"))
            .env("PROJECTOR_ADMIN_TOKEN", "security-test-admin-token")
            .env("PROJECTOR_LOG", "info")
            .env_remove("RUST_LOG");
        let host = tokio::task::spawn_blocking(move || LoggedProcess::start(command, "projector API listening"))
            .await
            .expect("host");
        let log = host.log().join("\n");
        let store: SocketAddr = log
            .split("event store listening addr=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .expect("the store's address in the log")
            .parse()
            .expect("address");
        let store_dir = data.path().join("eventstore");
        let query = match tls {
            true => format!("tls=true&tlsCAFile={}", store_dir.join("tls/ca.crt").display()),
            false => "tls=false".to_owned(),
        };
        let anonymous = client(store, "", &query);
        let read = anonymous.read_all(&ReadAllOptions::default()).await;
        assert!(is_access_denied(&read), "tls {tls}: {:?}", read.map(|_| ()));

        // The host itself appends through its store with the password.
        let registered = reqwest::Client::new()
            .post(format!("http://{}/users", host.addr))
            .json(&json!({"email": "ada@example.com", "username": "ada", "password": "correct horse battery"}))
            .send()
            .await
            .expect("register");
        assert!(registered.status().is_success(), "tls {tls}: {}", registered.status());
        let store_password = password(&store_dir);
        let admin = client(store, &format!("admin:{store_password}@"), &query);
        let all = collect(admin.read_all(&ReadAllOptions::default()).await.expect("read $all")).await.expect("$all");
        assert!(all.iter().any(|e| e.get_original_event().event_type == "UserRegistered"));
        assert!(!host.log().join("\n").contains(&store_password), "the password is never logged");
        // Owner-only: the data directory, the store's directory and its log (password hashes inside).
        let mode = |path: &std::path::Path| std::fs::metadata(path).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode(data.path()), 0o700, "the data directory");
        assert_eq!(mode(&store_dir), 0o700, "the store's directory");
        assert_eq!(mode(&store_dir.join("events.log")), 0o600, "the event log");
        host.kill();
    }
}

#[test]
fn a_connection_string_with_credentials_is_not_echoed_in_its_error() {
    for connection in
        ["esdb://admin:hunter2-secret@127.0.0.1:2113?tls=maybe", "esdb://admin:hunter2-secret@h1:1,h2:x?tls=false"]
    {
        let data = tempfile::tempdir().expect("tempdir");
        let output = std::process::Command::new(BINARY)
            .args(["serve", "--listen", "127.0.0.1:0", "--eventstore", connection, "--data"])
            .arg(data.path())
            .env("PROJECTOR_ADMIN_TOKEN", "security-test-admin-token")
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{stderr}");
        assert!(stderr.contains("invalid --eventstore connection string 'esdb://***@"), "{stderr}");
        assert!(!stderr.contains("hunter2"), "{stderr}");
    }
}
