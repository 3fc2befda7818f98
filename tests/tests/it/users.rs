//! `POST /users` and `GET /users/{id}` end to end: the host in-process over
//! the embedded store, requests over loopback HTTP, what was appended read
//! back with the official client. The cost bounds of issue 17 (duplicates
//! refused before hashing, the bounded hashing queue, the per-client rate,
//! the idempotency key that is no password oracle) are seen from outside:
//! answers, the store, and the counters on `/metrics`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use argon2::password_hash::{PasswordHash, PasswordVerifier};
use eventstore::{AppendToStreamOptions, ExpectedRevision, ReadAllOptions, ReadStreamOptions};
use projector::users::{Argon2Settings, RegistrationConfig};
use projector_events::{encode, UniqueValue, ValueReserved};
use projector_tests::{collect, within};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::HostEnv;

struct Answer {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

async fn post_user(env: &HostEnv, body: &Value, key: Option<&str>) -> Answer {
    let mut request = env.http.post(env.url("/users")).json(body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    answer(request).await
}

async fn answer(request: reqwest::RequestBuilder) -> Answer {
    let response = request.send().await.expect("request");
    let (status, headers) = (response.status(), response.headers().clone());
    let body = response.json().await.expect("JSON body");
    Answer { status, headers, body }
}

/// The value of `series` (name and labels as exposed) on `GET /metrics`, 0 if absent.
async fn metric(env: &HostEnv, series: &str) -> u64 {
    let text = env.http.get(env.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0, |value| value.trim().parse::<f64>().expect("a number") as u64)
}

fn user(email: &str, username: &str) -> Value {
    json!({"email": email, "username": username, "password": "correct horse battery"})
}

/// Every event in the store (data and metadata as text), in order.
async fn all_events(env: &HostEnv) -> Vec<(String, String, String, String)> {
    let read = env.events.read_all(&ReadAllOptions::default()).await.expect("read $all");
    collect(read)
        .await
        .expect("events")
        .into_iter()
        .map(|e| {
            let e = e.get_original_event();
            let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
            (e.stream_id.clone(), e.event_type.clone(), text(&e.data), text(&e.custom_metadata))
        })
        .collect()
}

async fn registrations(env: &HostEnv) -> Vec<Value> {
    all_events(env)
        .await
        .into_iter()
        .filter(|(_, event_type, _, _)| event_type == "UserRegistered")
        .map(|(_, _, data, _)| serde_json::from_str(&data).expect("JSON"))
        .collect()
}

fn now_ms() -> i64 {
    i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_millis()).expect("ms")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_appends_a_versioned_event_whose_hash_verifies() {
    let env = HostEnv::start().await;
    let sent = json!({"email": "  Ada.Lovelace@Example.com ", "username": "ada", "password": "correct horse battery"});
    let created = post_user(&env, &sent, None).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let id = created.body["id"].as_str().expect("id").to_owned();
    let position = created.body["position"].as_u64().expect("position");
    assert_eq!(created.headers["location"], format!("/users/{id}"));

    let read = env.events.read_stream(format!("user-{id}"), &ReadStreamOptions::default()).await.expect("read");
    let events = collect(read).await.expect("events");
    assert_eq!(events.len(), 1);
    let event = events[0].get_original_event();
    assert_eq!(event.event_type, "UserRegistered");
    assert_eq!(event.position.commit, position, "the answer's position is the event's commit position");
    let metadata: Value = serde_json::from_slice(&event.custom_metadata).expect("metadata");
    assert_eq!(metadata["schemaVersion"], 2);
    let data: Value = serde_json::from_slice(&event.data).expect("data");
    assert_eq!(data["userId"], id.as_str());
    assert_eq!(data["email"], "Ada.Lovelace@Example.com", "stored as given, trimmed");
    assert_eq!(data["username"], "ada");
    let registered_at = data["registeredAt"].as_str().expect("registeredAt");
    assert!(registered_at.len() == 24 && registered_at.ends_with('Z'), "{registered_at}");
    let hash = data["passwordHash"].as_str().expect("hash");
    assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "default parameters: {hash}");
    let parsed = PasswordHash::new(hash).expect("PHC string");
    assert!(argon2::Argon2::default().verify_password(b"correct horse battery", &parsed).is_ok());
    assert!(argon2::Argon2::default().verify_password(b"correct horse batterx", &parsed).is_err());

    let everything = format!("{:?}", all_events(&env).await);
    assert!(!everything.contains("correct horse"), "the plain password is in no event: {everything}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_validation_rule_is_reported_at_once_and_nothing_is_appended() {
    let env = HostEnv::start().await;
    let long_email = format!("{}@example.com", "a".repeat(250));
    let cases = [
        (json!({}), json!({"email": "is required", "username": "is required", "password": "is required"})),
        (
            json!({"email": "not-an-email", "username": "ab", "password": "short"}),
            json!({"email": "is not a valid email address", "username": "must be 3 to 50 characters (it has 2)",
                   "password": "must be 8 to 128 characters (it has 5)"}),
        ),
        (
            json!({"email": long_email, "username": "x".repeat(51), "password": "p".repeat(129)}),
            json!({"email": "must be at most 254 characters", "username": "must be 3 to 50 characters (it has 51)",
                   "password": "must be 8 to 128 characters (it has 129)"}),
        ),
        (
            json!({"email": "a@example.com", "username": "bad name!", "password": "long enough"}),
            json!({"username": "may contain only letters a-z and A-Z, digits, '.', '_' and '-', and must start with a letter or digit"}),
        ),
        (
            json!({"email": 7, "username": null, "password": ["x"], "admin": true}),
            json!({"email": "must be a string", "username": "is required", "password": "must be a string",
                   "admin": "is not a known field (expected email, username, password)"}),
        ),
        (json!({"email": "   ", "username": "ada", "password": "long enough"}), json!({"email": "must not be empty"})),
    ];
    for (body, fields) in cases {
        let refused = post_user(&env, &body, None).await;
        assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {}", refused.body);
        assert_eq!(refused.body["error"]["code"], "validation", "{body}");
        assert_eq!(refused.body["error"]["fields"], fields, "{body}");
    }
    assert!(all_events(&env).await.is_empty(), "a refused request appends nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_refused_with_400_and_nothing_is_appended() {
    let env = HostEnv::start().await;
    let url = env.url("/users");
    let valid = user("ada@example.com", "ada").to_string();
    let cases = [
        (env.http.post(&url).header("content-type", "text/plain").body(valid.clone()), "invalid_content_type"),
        (env.http.post(&url).body(valid.clone()), "invalid_content_type"),
        (env.http.post(&url).header("content-type", "application/json").body("{\"email\": "), "invalid_json"),
        (env.http.post(&url).header("content-type", "application/json").body("[1, 2]"), "invalid_json"),
        (env.http.post(&url).header("content-type", "application/json").body(""), "invalid_json"),
        (
            env.http
                .post(&url)
                .header("content-type", "application/json")
                .header("Idempotency-Key", "has space")
                .body(valid.clone()),
            "invalid_idempotency_key",
        ),
        (
            env.http
                .post(&url)
                .header("content-type", "application/json")
                .header("Idempotency-Key", "k".repeat(256))
                .body(valid),
            "invalid_idempotency_key",
        ),
    ];
    for (request, code) in cases {
        let refused = answer(request).await;
        assert_eq!((refused.status, refused.body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some(code)));
    }
    let huge = answer(
        reqwest::Client::new()
            .post(&url)
            .header("content-type", "application/json")
            .body(json!({"email": "a@example.com", "username": "ada", "password": "x".repeat(100_000)}).to_string()),
    )
    .await;
    assert_eq!(
        (huge.status, huge.body["error"]["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("body_too_large"))
    );
    assert!(all_events(&env).await.is_empty(), "a refused request appends nothing");

    let charset = answer(
        env.http
            .post(&url)
            .header("content-type", "application/json; charset=utf-8")
            .body(user("ada@example.com", "ada").to_string()),
    )
    .await;
    assert_eq!(charset.status, StatusCode::CREATED, "a charset parameter is fine: {}", charset.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_are_refused_case_insensitively_and_a_refusal_holds_nothing() {
    let env = HostEnv::start().await;
    assert_eq!(post_user(&env, &user("ada@example.com", "ada"), None).await.status, StatusCode::CREATED);

    let cases = [
        (user("ADA@Example.COM", "someone"), json!({"email": "is already registered"})),
        (user("other@example.com", "ADA"), json!({"username": "is already registered"})),
        (
            user(" Ada@example.com", "Ada"),
            json!({"email": "is already registered", "username": "is already registered"}),
        ),
    ];
    for (body, fields) in cases {
        let refused = post_user(&env, &body, None).await;
        assert_eq!(refused.status, StatusCode::CONFLICT, "{body}: {}", refused.body);
        assert_eq!(refused.body["error"]["code"], "conflict");
        assert_eq!(refused.body["error"]["fields"], fields, "{body}");
    }
    // The refused requests reserved 'other@example.com' and 'someone' on the
    // way and gave them back: they are free at once.
    let later = post_user(&env, &user("other@example.com", "someone"), None).await;
    assert_eq!(later.status, StatusCode::CREATED, "{}", later.body);
    assert_eq!(registrations(&env).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_registrations_of_one_email_give_exactly_one_user() {
    // None is taken yet, so all fifty pass the cheap check and hash: room
    // for them all in the hashing queue (the default, 16 per core, would
    // answer some 503, which `a_full_hashing_queue_...` is about).
    let registration = RegistrationConfig { hash_queue: 50, ..RegistrationConfig::default() };
    let env = HostEnv::start_with_registration(registration).await;
    let bodies: Vec<Value> = (0..50)
        .map(|n| user(if n % 2 == 0 { "race@example.com" } else { "Race@Example.com" }, &format!("racer{n}")))
        .collect();
    let answers = futures::future::join_all(bodies.iter().map(|body| post_user(&env, body, None))).await;
    let created: Vec<usize> = (0..50).filter(|&n| answers[n].status == StatusCode::CREATED).collect();
    assert_eq!(created.len(), 1, "exactly one registration wins");
    for (n, refused) in answers.iter().enumerate().filter(|(n, _)| *n != created[0]) {
        assert_eq!(refused.status, StatusCode::CONFLICT, "racer{n}: {}", refused.body);
        let email = refused.body["error"]["fields"]["email"].as_str().expect("the email is named");
        assert!(email == "is already registered" || email == "is being registered by another request", "{email}");
        assert!(refused.body["error"]["fields"].get("username").is_none(), "only the email conflicts");
    }
    let registered = registrations(&env).await;
    assert_eq!(registered.len(), 1);
    assert_eq!(registered[0]["username"], format!("racer{}", created[0]));

    // Every loser gave its username back: the usernames are free at once.
    let loser = (created[0] + 1) % 50;
    let later = post_user(&env, &user("someone.else@example.com", &format!("racer{loser}")), None).await;
    assert_eq!(later.status, StatusCode::CREATED, "{}", later.body);
}

async fn reserve_directly(env: &HostEnv, value: &str, holder: &str, reserved_at_ms: i64) {
    let reserved =
        ValueReserved { kind: UniqueValue::Email, value: value.to_owned(), user_id: holder.to_owned(), reserved_at_ms };
    let encoded = encode(&reserved).expect("valid");
    let data: Value = serde_json::from_slice(&encoded.data).expect("JSON");
    let event = eventstore::EventData::json(encoded.event_type, &data).expect("event");
    let options = AppendToStreamOptions::default().expected_revision(ExpectedRevision::NoStream);
    env.events.append_to_stream(UniqueValue::Email.stream(value), &options, event).await.expect("append");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_died_half_way_does_not_block_a_later_registration() {
    let env = HostEnv::start().await;
    // A request reserved this email an hour ago and died before registering.
    let dead = uuid::Uuid::new_v4().to_string();
    reserve_directly(&env, "orphan@example.com", &dead, now_ms() - 3_600_000).await;
    let created = post_user(&env, &user("Orphan@example.com", "heir"), None).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);

    // The dead request is fenced: were it only stalled, it could not register now.
    let read = env.events.read_stream(format!("user-{dead}"), &ReadStreamOptions::default()).await.expect("read");
    let fenced = collect(read).await.expect("events");
    assert_eq!(fenced.len(), 1);
    assert_eq!(fenced[0].get_original_event().event_type, "RegistrationAbandoned");
    let late = env
        .events
        .append_to_stream(
            format!("user-{dead}"),
            &AppendToStreamOptions::default().expected_revision(ExpectedRevision::NoStream),
            projector_tests::json_event("UserRegistered", json!({})),
        )
        .await;
    assert!(matches!(late, Err(eventstore::Error::WrongExpectedVersion { .. })), "{late:?}");

    // A reservation within its lease is a registration in progress.
    reserve_directly(&env, "busy@example.com", &uuid::Uuid::new_v4().to_string(), now_ms()).await;
    let refused = post_user(&env, &user("busy@example.com", "patient"), None).await;
    assert_eq!(refused.status, StatusCode::CONFLICT);
    assert_eq!(refused.body["error"]["fields"], json!({"email": "is being registered by another request"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_retry_returns_the_original_response_and_appends_nothing() {
    let env = HostEnv::start().await;
    let body = user("ada@example.com", "ada");
    let first = post_user(&env, &body, Some("signup-7f3a")).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    assert!(first.headers.get("idempotent-replayed").is_none());
    let appended = all_events(&env).await.len();
    let hashes = metric(&env, "projector_password_hashes_total").await;

    let retry = post_user(&env, &body, Some("signup-7f3a")).await;
    assert_eq!((retry.status, &retry.body), (StatusCode::CREATED, &first.body), "the original response");
    assert_eq!(retry.headers["location"], first.headers["location"]);
    assert_eq!(retry.headers["idempotent-replayed"], "true");
    assert_eq!(all_events(&env).await.len(), appended, "a retry appends nothing");
    assert_eq!(metric(&env, "projector_password_hashes_total").await, hashes, "a replay computes no hash");

    // Concurrent attempts under one key: one user, the same answer for all.
    let body = user("bo@example.com", "bojack");
    let answers = futures::future::join_all((0..5).map(|_| post_user(&env, &body, Some("signup-b0")))).await;
    for a in &answers {
        assert_eq!((a.status, &a.body), (StatusCode::CREATED, &answers[0].body));
    }
    let bos = registrations(&env).await.into_iter().filter(|r| r["username"] == "bojack").count();
    assert_eq!(bos, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_idempotency_key_gets_one_answer_whatever_differs_so_it_is_no_password_oracle() {
    let env = HostEnv::start().await;
    let created = post_user(&env, &user("ada@example.com", "ada"), Some("signup-ada")).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let (appended, hashes) = (all_events(&env).await.len(), metric(&env, "projector_password_hashes_total").await);

    let mismatches = [
        json!({"email": "ada@example.com", "username": "ada", "password": "correct horse batterx"}),
        json!({"email": "ada@example.com", "username": "ada", "password": "something else entirely"}),
        json!({"email": "ada@example.com", "username": "Ada", "password": "correct horse battery"}),
        json!({"email": "ADA@example.com", "username": "ada", "password": "correct horse battery"}),
    ];
    let mut answers = Vec::new();
    for body in &mismatches {
        let reused = post_user(&env, body, Some("signup-ada")).await;
        assert_eq!(reused.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {}", reused.body);
        assert!(reused.headers.get("location").is_none() && reused.headers.get("idempotent-replayed").is_none());
        answers.push((reused.status, reused.body));
    }
    let expected = json!({"error": {"code": "idempotency_key_reused",
                                    "message": "Idempotency-Key reused with a different request"}});
    for (n, (_, body)) in answers.iter().enumerate() {
        assert_eq!(body, &expected, "mismatch {n}: a wrong password reads like any other difference");
    }
    assert_eq!(all_events(&env).await.len(), appended, "a mismatch appends nothing");
    assert_eq!(metric(&env, "projector_password_hashes_total").await, hashes, "nor verifies a password");
    // The genuine retry still replays.
    let retry = post_user(&env, &user("ada@example.com", "ada"), Some("signup-ada")).await;
    assert_eq!((retry.status, &retry.body), (StatusCode::CREATED, &created.body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_client_using_the_victims_key_does_not_get_the_victims_id() {
    let mut env = HostEnv::start().await;
    // The attacker guesses the key the victim's client will send, and goes first.
    let attacker = post_user(&env, &user("eve@example.com", "eve"), Some("signup-1")).await;
    assert_eq!(attacker.status, StatusCode::CREATED, "{}", attacker.body);
    let victim = post_user(&env, &user("ada@example.com", "ada"), Some("signup-1")).await;
    assert_eq!(victim.status, StatusCode::CREATED, "the victim registers all the same: {}", victim.body);
    assert!(victim.headers.get("idempotent-replayed").is_none());
    assert_ne!(victim.body["id"], attacker.body["id"], "the key alone does not name the id");
    let legacy = uuid::Uuid::new_v5(&uuid::Uuid::from_u128(0x6c0e_2b4a_9f1d_4e7b_8a35_1d2c_7f90_b3e4), b"signup-1");
    assert_ne!(victim.body["id"], legacy.to_string(), "nor does it as UUIDv5(key) did");

    // The victim's retry, after a restart, finds its own registration (the
    // secret the ids are keyed with is kept in the data dir, owner-only).
    env.restart_host().await;
    let retry = post_user(&env, &user("ada@example.com", "ada"), Some("signup-1")).await;
    assert_eq!((retry.status, &retry.body), (StatusCode::CREATED, &victim.body), "{}", retry.body);
    assert_eq!(retry.headers["idempotent-replayed"], "true");
    use std::os::unix::fs::PermissionsExt;
    let secret = std::fs::metadata(env.data.path().join("registration-secret")).expect("the secret file");
    assert_eq!(secret.permissions().mode() & 0o777, 0o600);
    assert_eq!(registrations(&env).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_duplicates_are_refused_without_hashing_and_a_real_registration_beside_them_is_not_queued() {
    let env = HostEnv::start().await;
    assert_eq!(post_user(&env, &user("ada@example.com", "ada"), None).await.status, StatusCode::CREATED);
    let hashes = metric(&env, "projector_password_hashes_total").await;
    assert_eq!(hashes, 1);

    let duplicates: Vec<Value> = (0..60).map(|n| user("Ada@Example.com", &format!("copycat{n}"))).collect();
    let real = user("grace@example.com", "grace");
    let (refused, created) = tokio::join!(
        futures::future::join_all(duplicates.iter().map(|body| post_user(&env, body, None))),
        post_user(&env, &real, None),
    );
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    for (n, answer) in refused.iter().enumerate() {
        assert_eq!(answer.status, StatusCode::CONFLICT, "copycat{n}: {}", answer.body);
        assert_eq!(answer.body["error"]["fields"], json!({"email": "is already registered"}), "copycat{n}");
    }
    // The only hash after the first is the real registration's: no
    // duplicate waited in the hashing queue, so none was ahead of it.
    assert_eq!(metric(&env, "projector_password_hashes_total").await, hashes + 1);
    assert_eq!(registrations(&env).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_hashing_queue_answers_503_with_retry_after_without_doing_anything() {
    // One hashing thread, no waiting room, and a hash slow enough to be seen
    // in progress (about a second in this build).
    let registration = RegistrationConfig {
        argon2: Argon2Settings { memory_kib: 32 * 1024, iterations: 24, parallelism: 1 },
        hash_threads: 1,
        hash_queue: 0,
        ..RegistrationConfig::default()
    };
    let env = HostEnv::start_with_registration(registration).await;
    let slow_body = user("slow@example.com", "slow");
    let slow = post_user(&env, &slow_body, None);
    let refused = async {
        let mut poll = tokio::time::interval(Duration::from_millis(20));
        within("the first registration to be hashing", async {
            while metric(&env, "projector_password_hash_admitted").await != 1 {
                poll.tick().await;
            }
        })
        .await;
        post_user(&env, &user("next@example.com", "next"), Some("signup-next")).await
    };
    let (first, refused) = tokio::join!(slow, refused);
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE, "{}", refused.body);
    assert_eq!(refused.body["error"]["code"], "registration_busy");
    assert_eq!(refused.headers["retry-after"], "1");
    assert_eq!(metric(&env, "projector_registrations_shed_total{reason=\"queue_full\"}").await, 1);

    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    let streams: Vec<String> = all_events(&env).await.into_iter().map(|(stream, ..)| stream).collect();
    assert!(!streams.iter().any(|s| s.contains("next")), "the refused request reserved nothing: {streams:?}");
    assert!(streams.iter().any(|s| s == "unique-email-slow@example.com"), "{streams:?}");
    // Nothing of it is left in the way: sent again, it registers.
    let retried = post_user(&env, &user("next@example.com", "next"), Some("signup-next")).await;
    assert_eq!(retried.status, StatusCode::CREATED, "{}", retried.body);
    assert_eq!(metric(&env, "projector_password_hash_admitted").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_beyond_its_registration_rate_gets_429_with_retry_after_and_others_do_not() {
    let env = HostEnv::start_adjusted(|config| config.users_rate_per_minute = std::num::NonZeroU32::new(3)).await;
    for n in 0..3 {
        let body = if n == 1 {
            json!({"email": "not an email"})
        } else {
            user(&format!("u{n}@example.com"), &format!("u{n}"))
        };
        let answer = post_user(&env, &body, None).await;
        assert_ne!(answer.status, StatusCode::TOO_MANY_REQUESTS, "request {n} is within the rate: {}", answer.body);
    }
    let limited = post_user(&env, &user("u3@example.com", "u3"), None).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS, "{}", limited.body);
    assert_eq!(limited.body["error"]["code"], "rate_limited");
    let seconds: u64 = limited.headers["retry-after"].to_str().expect("ascii").parse().expect("whole seconds");
    assert!((1..=21).contains(&seconds), "a request is replenished every 20 s: {seconds}");
    assert!(!registrations(&env).await.iter().any(|r| r["username"] == "u3"), "nothing was done");
    assert_eq!(metric(&env, "projector_registrations_shed_total{reason=\"rate_limited\"}").await, 1);
    // Only registration is limited: reads go on.
    let (status, _) = env.get("/projections").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_answers_503_while_the_event_store_is_down_and_recovers() {
    let registration = RegistrationConfig { store_timeout: Duration::from_secs(1), ..RegistrationConfig::default() };
    let mut env = HostEnv::start_with_registration(registration).await;
    assert_eq!(post_user(&env, &user("first@example.com", "first"), None).await.status, StatusCode::CREATED);
    let addr = env.store.server().local_addr();
    env.store.stop().await;

    let body = user("ada@example.com", "ada");
    let down = post_user(&env, &body, Some("k-503")).await;
    assert_eq!(down.status, StatusCode::SERVICE_UNAVAILABLE, "{}", down.body);
    assert_eq!(down.body["error"]["code"], "store_unavailable");
    assert_eq!(down.headers["retry-after"], "2");

    env.store.start_at(addr).await;
    let retried = post_user(&env, &body, Some("k-503")).await;
    assert_eq!(retried.status, StatusCode::CREATED, "{}", retried.body);
    let users: Vec<Value> = registrations(&env).await;
    assert_eq!(users.iter().filter(|u| u["email"] == "ada@example.com").count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_user_is_read_back_from_the_directory_at_once() {
    let env = HostEnv::start().await;
    let created = post_user(&env, &user("ada@example.com", "ada"), None).await;
    let id = created.body["id"].as_str().expect("id").to_owned();

    let (status, body) = env.get(&format!("/users/{id}")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "directory_unavailable");
    assert!(body["error"]["message"].as_str().expect("message").contains("'user-directory'"), "{body}");

    let (status, body) = env.deploy("user-directory", env!("WASM_USER_DIRECTORY")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let second = post_user(&env, &user("bob@example.com", "bob"), None).await;
    let (id2, position) =
        (second.body["id"].as_str().expect("id"), second.body["position"].as_u64().expect("position"));
    let (status, read) = env.get(&format!("/users/{id2}?at_least={position}")).await;
    assert_eq!(status, StatusCode::OK, "{read}");
    assert_eq!(read["id"], id2);
    assert_eq!(read["email"], "bob@example.com");
    assert_eq!(read["username"], "bob");
    assert!(read["registeredAt"].is_string());
    assert!(!read.to_string().contains("argon2") && read.get("passwordHash").is_none(), "{read}");

    let (status, read) = env.get(&format!("/users/{id}?at_least={position}")).await;
    assert_eq!((status, read["email"].as_str()), (StatusCode::OK, Some("ada@example.com")));
    let (status, body) = env.get(&format!("/users/{}", uuid::Uuid::new_v4())).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("unknown_user")));
    let (status, body) = env.get(&format!("/users/{id}?at_least=soon")).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_position")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_answers_503_when_the_event_store_does_not_answer() {
    // A listener that accepts connections and never says a word.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = silent.local_addr().expect("addr");
    let held = tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            sockets.push(socket);
        }
    });
    let settings: eventstore::ClientSettings = format!("esdb://{addr}?tls=false").parse().expect("settings");
    let client = eventstore::Client::new(settings).expect("client");
    let data = tempfile::tempdir().expect("tempdir");
    let config = projector::HostConfig {
        registration: RegistrationConfig { store_timeout: Duration::from_millis(500), ..RegistrationConfig::default() },
        ..projector::HostConfig::new(data.path().to_path_buf())
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let host = projector::Host::start(listener, client, config, async move {
        let _ = stopped.await;
    })
    .await
    .expect("host starts");
    let request = reqwest::Client::new()
        .post(format!("http://{}/users", host.local_addr()))
        .json(&user("ada@example.com", "ada"));
    let waited = answer(request).await;
    assert_eq!(waited.status, StatusCode::SERVICE_UNAVAILABLE, "{}", waited.body);
    assert_eq!(waited.body["error"]["code"], "store_unavailable");
    assert_eq!(waited.headers["retry-after"], "2");
    let _ = stop.send(());
    host.stopped().await.expect("host stops");
    held.abort();
}
