//! A client for one host's HTTP API, whether the host runs in the test or
//! in a process of its own: its address, its admin token and a connection
//! pool, with the requests the tests make again and again.
//!
//! It returns what the host answered (status and JSON body) and asserts
//! nothing about it, apart from the body being JSON; the tests judge the answers.

use std::time::Duration;

use projector_tests::within;
use reqwest::StatusCode;
use serde_json::Value;

/// The API of one running host.
#[derive(Debug, Clone)]
pub(crate) struct Api {
    /// The connection pool requests go through.
    pub(crate) http: reqwest::Client,
    /// `http://<address>`.
    base: String,
    /// The admin token.
    token: String,
}

impl Api {
    /// The API at `addr`, changed with `token`.
    pub(crate) fn new(http: reqwest::Client, addr: impl std::fmt::Display, token: &str) -> Api {
        Api { http, base: format!("http://{addr}"), token: token.to_owned() }
    }

    /// The URL of `path` (which starts with `/`, or is empty for the root).
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The admin token the host accepts.
    pub(crate) fn token(&self) -> &str {
        &self.token
    }

    /// `GET path` without a token.
    pub(crate) async fn get(&self, path: &str) -> (StatusCode, Value) {
        let response = self.http.get(self.url(path)).send().await.expect("get");
        (response.status(), response.json().await.expect("json body"))
    }

    /// `GET path` (a query with `at_least`) again for as long as the host
    /// answers 504: each request waits on the server for the position, and a
    /// debug build may need longer than one such wait to get there.
    pub(crate) async fn get_caught_up(&self, path: &str) -> (StatusCode, Value) {
        within(&format!("GET {path} to be answered"), async {
            loop {
                let (status, body) = self.get(path).await;
                if status != StatusCode::GATEWAY_TIMEOUT {
                    break (status, body);
                }
            }
        })
        .await
    }

    /// Deploys the module at `module` as `name` with the admin token.
    pub(crate) async fn deploy(&self, name: &str, module: &str) -> (StatusCode, Value) {
        self.deploy_with(name, module, "").await
    }

    /// Deploys with query parameters, e.g. `mode=rebuild`.
    pub(crate) async fn deploy_with(&self, name: &str, module: &str, query: &str) -> (StatusCode, Value) {
        let bytes = std::fs::read(module).expect("module");
        let url = self.url(&format!("/projections/{name}?{query}"));
        let response = self.http.put(url).bearer_auth(&self.token).body(bytes).send().await.expect("put");
        (response.status(), response.json().await.expect("json body"))
    }

    /// POSTs a lifecycle action (`stop`, `rollback`, ...) with the admin token.
    pub(crate) async fn act(&self, name: &str, action: &str) -> (StatusCode, Value) {
        let url = self.url(&format!("/projections/{name}/{action}"));
        let response = self.http.post(url).bearer_auth(&self.token).send().await.expect("post");
        (response.status(), response.json().await.expect("json body"))
    }

    /// Polls the status of `name` every 20 ms until `done` says so, and
    /// returns it. For a host in another process; a test whose host runs
    /// in-process waits on the status watch instead ([`super::HostEnv::wait_status`]).
    pub(crate) async fn poll_status(&self, name: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let mut poll = tokio::time::interval(Duration::from_millis(20));
        let last = std::sync::Mutex::new(Value::Null);
        let polled = tokio::time::timeout(projector_tests::PATIENCE, async {
            loop {
                poll.tick().await;
                let (_, status) = self.get(&format!("/projections/{name}")).await;
                if done(&status) {
                    break status;
                }
                *last.lock().expect("last status") = status;
            }
        })
        .await;
        polled.unwrap_or_else(|_| {
            panic!("timed out waiting for {what}; the last status: {}", last.lock().expect("last status"))
        })
    }
}
