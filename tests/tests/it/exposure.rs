//! What a hostile or careless client can do to the API, and what it gets:
//! bounded filters, a time limit per query, lookups by key beside slow
//! scans, names and cursors that cannot reach SQL or the log.

use std::time::Duration;

use eventstore::{AppendToStreamOptions, EventData};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::HostEnv;

/// A host whose listings may run `limit`, with 20,000 documents in `scribbler`'s `filled`.
async fn filled_host(adjust: fn(&mut projector::HostConfig)) -> (HostEnv, u64) {
    let env = HostEnv::start_adjusted(adjust).await;
    let (status, body) = env.deploy("scribbler", env!("WASM_GUEST_SCRIBBLER")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let fill = EventData::json("Fill", &json!({})).expect("event");
    let written =
        env.events.append_to_stream("scribble-fill", &AppendToStreamOptions::default(), fill).await.expect("append");
    (env, written.position.commit)
}

/// `n` filters that every document passes, none on an indexed field.
fn filters(n: usize) -> String {
    (0..n).map(|i| format!("filter=n>%3D-{i}")).collect::<Vec<_>>().join("&")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_has_bounded_filters_and_a_time_limit_and_lookups_by_key_are_answered_meanwhile() {
    let (env, at) = filled_host(|config| config.query_time_limit = Duration::from_millis(1)).await;
    let (status, body) =
        env.api().get_caught_up(&format!("/projections/scribbler/collections/filled/00042?at_least={at}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"n": 42, "group": 2, "name": "doc-00042"}));

    // 900 filters (the review's hostile URL) are refused before any work.
    let (status, body) = env.get(&format!("/projections/scribbler/collections/filled?{}", filters(900))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "too_many_filters");

    // Sixteen unindexed filters over 20,000 documents take longer than 1 ms:
    // stopped with a 503 that says why, not a 500 and not a long wait.
    let slow = format!("/projections/scribbler/collections/filled?count=true&{}", filters(16));
    let (status, body) = env.get(&slow).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "query_too_slow");
    assert!(body["error"]["message"].as_str().unwrap().contains("1ms"), "{body}");

    // Three of them at once, and lookups by key alongside: every lookup is
    // answered (they take no scan turn and have their own connections).
    let hostile: Vec<_> = (0..3)
        .map(|_| {
            let (http, url) = (env.http.clone(), env.url(&slow));
            tokio::spawn(async move { http.get(url).send().await.expect("get").status() })
        })
        .collect();
    for n in [7, 4_242, 19_999] {
        let (status, body) = env.get(&format!("/projections/scribbler/collections/filled/{n:05}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["n"], n);
    }
    for answer in hostile {
        let status = answer.await.expect("task");
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "stopped or told to come back, never a 500");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_pages_of_an_ordered_listing_continue_by_value_and_key() {
    let (env, at) = filled_host(|_| {}).await;
    let path = |cursor: &str| {
        format!("/projections/scribbler/collections/filled?order_by=-group&limit=1000&at_least={at}{cursor}")
    };
    let (status, mut page) = env.api().get_caught_up(&path("")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let mut seen: Vec<(i64, String)> = Vec::new();
    loop {
        for item in page["items"].as_array().unwrap() {
            seen.push((item["doc"]["group"].as_i64().unwrap(), item["key"].as_str().unwrap().to_owned()));
        }
        let Some(cursor) = page["next_cursor"].as_str() else { break };
        let (status, next) = env.get(&path(&format!("&cursor={cursor}"))).await;
        assert_eq!(status, StatusCode::OK, "{next}");
        page = next;
    }
    assert_eq!(seen.len(), 20_000, "every document once");
    let mut expected = seen.clone();
    expected.sort_by(|a, b| b.cmp(a));
    assert_eq!(seen, expected, "largest group first, ties by key, descending");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_characters_and_forged_cursors_are_refused_with_a_400() {
    let (env, at) = filled_host(|_| {}).await;
    let (status, _) =
        env.api().get_caught_up(&format!("/projections/scribbler/collections/filled?limit=1&at_least={at}")).await;
    assert_eq!(status, StatusCode::OK);
    let cases: [(&str, &str); 6] = [
        ("/projections/scribbler/collections/fil%00led", "invalid_collection"),
        ("/projections/scribbler/collections/a%0A2026-12-02T00:00:00Z%20ERROR%20forged", "invalid_collection"),
        ("/projections/scribbler/collections/fil%00led/00001", "invalid_collection"),
        // The offset cursor of earlier releases, at u64::MAX.
        ("/projections/scribbler/collections/filled?order_by=n&cursor=6f3a3138343436373434303733373039353531363135", "invalid_cursor"),
        // A value cursor whose integer does not fit.
        ("/projections/scribbler/collections/filled?order_by=n&cursor=763a5b2269222c31383434363734343037333730393535313631352c226b225d", "invalid_cursor"),
        ("/projections/scribbler/collections/filled?cursor=763a5b2269222c312c226b225d", "invalid_cursor"),
    ];
    for (path, code) in cases {
        let (status, body): (StatusCode, Value) = env.get(path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert_eq!(body["error"]["code"], code, "{path}: {body}");
    }
}

/// A self-signed certificate for `localhost` and 127.0.0.1, written as PEM
/// files into `dir`: (certificate, key).
fn self_signed(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    let rcgen::CertifiedKey { cert, key_pair } = rcgen::generate_simple_self_signed(names).expect("certificate");
    let (cert_path, key_path) = (dir.join("api.crt"), dir.join("api.key"));
    std::fs::write(&cert_path, cert.pem()).expect("write the certificate");
    std::fs::write(&key_path, key_pair.serialize_pem()).expect("write the key");
    (cert_path, key_path)
}

/// Runs the command-line client: (success, stdout, stderr).
async fn cli(args: Vec<String>) -> (bool, String, String) {
    let mut command = std::process::Command::new(crate::support::BINARY);
    command.args(args).stdin(std::process::Stdio::null()).env_remove("PROJECTOR_ADMIN_TOKEN");
    let output = tokio::task::spawn_blocking(move || command.output()).await.expect("thread").expect("run the client");
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).expect("utf-8");
    (output.status.success(), text(output.stdout), text(output.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_is_cut_off_and_a_page_rebinding_its_name_to_loopback_is_refused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let store = projector_tests::TestEnv::start().await;
    let data = tempfile::tempdir().expect("tempdir");
    let eventstore = store.server().connection_string();
    let host = crate::support::HostProcess::spawn_with(data.path(), &eventstore, |command| {
        command.env("PROJECTOR_HEADER_READ_TIMEOUT_MS", "300");
    })
    .await;
    let addr = host.api().url("").trim_start_matches("http://").to_owned();

    // Slowloris: a request head that never ends. The server closes the connection.
    let mut slow = tokio::net::TcpStream::connect(&addr).await.expect("connect");
    slow.write_all(b"GET /projections HTTP/1.1\r\nHost: localhost\r\nX-Slow: ").await.expect("write");
    let closed = projector_tests::within("the server to close a connection whose head never ends", async {
        let mut buffer = [0u8; 1024];
        loop {
            match slow.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {} // a 408, if hyper answers one first
            }
        }
    });
    closed.await;

    // DNS rebinding: the page's own name arrives in Host; loopback names pass.
    let get_with_host = |host_header: &'static str| {
        let url = format!("http://{addr}/projections");
        async move { reqwest::Client::new().get(url).header("host", host_header).send().await.expect("get") }
    };
    let refused = get_with_host("rebind.attacker.example:8080").await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let body: Value = refused.json().await.expect("json");
    assert_eq!(body["error"]["code"], "host_not_allowed", "{body}");
    for name in ["localhost:8080", "127.0.0.1", "LOCALHOST"] {
        assert_eq!(get_with_host(name).await.status(), StatusCode::OK, "{name}");
    }

    // Owner-only files: the data directory and a read model.
    use std::os::unix::fs::PermissionsExt;
    let (status, body) = host.api().deploy("tally", env!("WASM_GUEST_TALLY")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let mode = |path: &std::path::Path| std::fs::metadata(path).expect("metadata").permissions().mode() & 0o777;
    assert_eq!(mode(data.path()), 0o700, "the data directory");
    let readmodels = data.path().join("readmodels").join("tally");
    let files: Vec<_> =
        std::fs::read_dir(&readmodels).expect("read models").map(|e| e.expect("entry").path()).collect();
    assert!(files.iter().any(|f| f.extension().is_some_and(|e| e == "sqlite")), "{files:?}");
    for file in files {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }

    // A line break in a collection name is refused and never becomes a log line of its own.
    let forged = "/projections/tally/collections/x%0AFORGED%20ERROR%20admin%20token%20leaked";
    let (status, body) = host.api().get(forged).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "invalid_collection");
    let log = host.log();
    assert!(!log.iter().any(|line| line.starts_with("FORGED")), "{log:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_loopback_reads_need_a_token_and_tls_serves_the_cli_over_https() {
    let store = projector_tests::TestEnv::start().await;
    let data = tempfile::tempdir().expect("tempdir");
    let eventstore = store.server().connection_string();
    let certs = tempfile::tempdir().expect("tempdir");
    let (cert, key) = self_signed(certs.path());

    // Tokens shorter than 16 characters are refused at start, with why.
    let mut short = crate::support::HostProcess::command(data.path(), &eventstore);
    short.env("PROJECTOR_ADMIN_TOKEN", "short-token");
    let output = tokio::task::spawn_blocking(move || short.output()).await.expect("thread").expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("the admin token must be at least 16 characters long (it is 11)"), "{stderr}");
    assert!(!stderr.contains("short-token"), "the token itself is not echoed: {stderr}");

    let token_file = certs.path().join("admin-token");
    std::fs::write(&token_file, format!("{}\n", crate::support::TOKEN)).expect("token file");
    let (file, cert_arg, key_arg) = (token_file.clone(), cert.clone(), key.clone());
    let host = crate::support::HostProcess::spawn_with(data.path(), &eventstore, move |command| {
        let (token_file, cert, key) = (file, cert_arg, key_arg);
        command
            .env_remove("PROJECTOR_ADMIN_TOKEN")
            .env("PROJECTOR_ADMIN_TOKEN_FILE", &token_file)
            .env("PROJECTOR_LISTEN", "0.0.0.0:0")
            .args(["--tls-cert".as_ref(), cert.as_os_str(), "--tls-key".as_ref(), key.as_os_str()]);
    })
    .await;
    let port = host.api().url("").rsplit(':').next().expect("port").to_owned();
    let https = format!("https://localhost:{port}");
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&cert).expect("cert")).expect("pem");
    let client = reqwest::Client::builder().add_root_certificate(ca).build().expect("client");

    // Plain HTTP to a TLS port gets no answer.
    let plain = reqwest::Client::new().get(format!("http://127.0.0.1:{port}/healthz")).send().await;
    assert!(plain.is_err() || !plain.expect("response").status().is_success(), "plain HTTP is not served");
    // Beyond loopback reads need a token; the admin token (from its file) opens them.
    let open = client.get(format!("{https}/projections")).send().await.expect("https get");
    assert_eq!(open.status(), StatusCode::UNAUTHORIZED);
    let read = client.get(format!("{https}/projections")).bearer_auth(crate::support::TOKEN).send().await;
    assert_eq!(read.expect("https get").status(), StatusCode::OK);
    assert_eq!(client.get(format!("{https}/healthz")).send().await.expect("health").status(), StatusCode::OK);

    // The command-line client over https, trusting the certificate, with the token from a file.
    let args = |command: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = command.iter().map(|a| (*a).to_owned()).collect();
        args.extend(["--url".to_owned(), https.clone(), "--ca-cert".to_owned(), cert.display().to_string()]);
        args.extend(["--token-file".to_owned(), token_file.display().to_string()]);
        args
    };
    let (ok, out, err) = cli(args(&["deploy", "tally", env!("WASM_GUEST_TALLY")])).await;
    assert!(ok, "{out}{err}");
    let (ok, out, err) = cli(args(&["list"])).await;
    assert!(ok && out.contains("tally"), "{out}{err}");
    // Without the certificate trusted, the client refuses the connection.
    let (ok, _, err) = cli(vec![
        "list".into(),
        "--url".into(),
        https.clone(),
        "--token-file".into(),
        token_file.display().to_string(),
    ])
    .await;
    assert!(!ok, "an untrusted certificate is refused");
    assert!(err.starts_with("error:"), "{err}");
    let log = host.log();
    assert!(!log.iter().any(|line| line.contains(crate::support::TOKEN)), "a token is in the host's log: {log:?}");
}

/// A copy of the core module `bytes` with `memories` more linear memories
/// of `pages` 64 KiB pages each and a table of `table_elements` more.
fn with_more(bytes: &[u8], memories: u32, pages: u64, table_elements: u64) -> Vec<u8> {
    use wasm_encoder::reencode::{utils, Error, Reencode};
    struct More {
        memories: u32,
        pages: u64,
        table_elements: u64,
    }
    impl Reencode for More {
        type Error = std::convert::Infallible;
        fn parse_memory_section(
            &mut self,
            memories: &mut wasm_encoder::MemorySection,
            section: wasmparser::MemorySectionReader<'_>,
        ) -> Result<(), Error<Self::Error>> {
            utils::parse_memory_section(self, memories, section)?;
            for _ in 0..self.memories {
                memories.memory(wasm_encoder::MemoryType {
                    minimum: self.pages,
                    maximum: None,
                    memory64: false,
                    shared: false,
                    page_size_log2: None,
                });
            }
            Ok(())
        }
        fn parse_table_section(
            &mut self,
            tables: &mut wasm_encoder::TableSection,
            section: wasmparser::TableSectionReader<'_>,
        ) -> Result<(), Error<Self::Error>> {
            utils::parse_table_section(self, tables, section)?;
            if self.table_elements > 0 {
                tables.table(wasm_encoder::TableType {
                    element_type: wasm_encoder::RefType::FUNCREF,
                    table64: false,
                    minimum: self.table_elements,
                    maximum: None,
                    shared: false,
                });
            }
            Ok(())
        }
    }
    let mut module = wasm_encoder::Module::new();
    More { memories, pages, table_elements }
        .parse_core_module(&mut module, wasmparser::Parser::new(0), bytes)
        .expect("re-encode the module");
    module.finish()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_declaring_many_memories_or_a_huge_table_is_held_to_its_limits_beside_a_healthy_one() {
    let env = HostEnv::start().await;
    let (status, body) = env.deploy("inventory", env!("WASM_INVENTORY")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let noop = std::fs::read(env!("WASM_GUEST_NOOP")).expect("the noop guest");
    let cases = [
        // Ten memories of 60 MiB: each under the 64 MiB cap, 600 MiB together.
        ("big-memories", with_more(&noop, 10, 960, 0), "exceeded its memory limit of 67108864 bytes"),
        // Thirty small memories.
        ("many-memories", with_more(&noop, 30, 1, 0), "memory count too high"),
        // Fifty million table elements: hundreds of MiB of host memory.
        ("table", with_more(&noop, 0, 0, 50_000_000), "tables would hold"),
    ];
    for (name, module, said) in cases {
        let response = env
            .http
            .put(env.url(&format!("/projections/{name}")))
            .bearer_auth(env.token())
            .body(module)
            .send()
            .await
            .expect("deploy");
        let status = response.status();
        let body: Value = response.json().await.expect("json");
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{name}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().contains(said), "{name}: {body}");
        let (status, _) = env.get(&format!("/projections/{name}")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{name}: nothing deployed");
    }
    // The healthy projection applies every event once.
    let mut last = 0;
    for quantity in 1..=5 {
        let event = EventData::json("StockReceived", &json!({"sku": "fig", "warehouse": "east", "quantity": quantity}))
            .expect("event");
        last = env
            .events
            .append_to_stream("stock-fig", &AppendToStreamOptions::default(), event)
            .await
            .expect("append")
            .position
            .commit;
    }
    let (status, body) =
        env.api().get_caught_up(&format!("/projections/inventory/collections/skus/fig?at_least={last}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["quantity"], 15, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_past_its_query_rate_gets_429_with_retry_after() {
    let env =
        HostEnv::start_adjusted(|config| config.network.query_rate_per_minute = std::num::NonZeroU32::new(3)).await;
    let (status, body) = env.deploy("tally", env!("WASM_GUEST_TALLY")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let path = "/projections/tally/collections/totals";
    for _ in 0..3 {
        let (status, body) = env.get(path).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let refused = env.http.get(env.url(path)).send().await.expect("get");
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = refused.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    let body: Value = refused.json().await.expect("json");
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    // Only queries count: the status and health stay open.
    assert_eq!(env.get("/projections/tally").await.0, StatusCode::OK);
    assert_eq!(env.http.get(env.url("/healthz")).send().await.expect("health").status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_cannot_hold_more_than_its_share_of_connections() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let env = HostEnv::start_adjusted(|config| config.network.max_connections_per_client = 2).await;
    let addr = env.url("").trim_start_matches("http://").to_owned();
    let request = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n";
    // Two kept-alive connections, each answered.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = tokio::net::TcpStream::connect(&addr).await.expect("connect");
        stream.write_all(request).await.expect("write");
        let mut buffer = [0u8; 256];
        let n = stream.read(&mut buffer).await.expect("read");
        assert!(buffer[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buffer[..n]));
        held.push(stream);
    }
    // A third from the same address is closed without an answer.
    let mut third = tokio::net::TcpStream::connect(&addr).await.expect("connect");
    let _ = third.write_all(request).await;
    let mut buffer = [0u8; 256];
    let read = projector_tests::within("the third connection to be closed", third.read(&mut buffer)).await;
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    // Once one is closed, a new connection is served again.
    drop(held.pop());
    let (status, _) = projector_tests::within("a connection once one is free", async {
        loop {
            let response = reqwest::Client::new().get(env.url("/healthz")).send().await;
            if let Ok(response) = response {
                break (response.status(), ());
            }
        }
    })
    .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_trickled_past_its_deadline_is_refused_and_deploys_nothing() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let env = HostEnv::start_adjusted(|config| config.network.body_read_timeout = Duration::from_millis(300)).await;
    let addr = env.url("").trim_start_matches("http://").to_owned();
    let mut slow = tokio::net::TcpStream::connect(&addr).await.expect("connect");
    let head = format!(
        "PUT /projections/slow HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\nContent-Length: 100000\r\n\r\n\0asm",
        env.token()
    );
    slow.write_all(head.as_bytes()).await.expect("write");
    // The rest of the body never comes: the host answers (or closes) on its own.
    let answer = projector_tests::within("the host to give up on the body", async {
        let mut answer = Vec::new();
        let _ = slow.read_to_end(&mut answer).await;
        String::from_utf8_lossy(&answer).into_owned()
    })
    .await;
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 4"), "{answer}");
    let (status, _) = env.get("/projections/slow").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing deployed");
}
