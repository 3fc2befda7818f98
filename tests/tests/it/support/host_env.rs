//! [`HostEnv`]: the embedded event store and the host in-process on
//! loopback ports, in a temporary data directory, restartable on the same
//! data; the test reaches the host's API over HTTP and its deployments directly.
//!
//! It starts and stops hosts and waits for them; it does not deploy anything
//! or append events by itself.

use std::time::Duration;

use projector::status::LaneStatus;
use projector::users::RegistrationConfig;
use projector::{Host, HostConfig};
use projector_tests::{within, TestEnv};
use reqwest::StatusCode;
use serde_json::Value;
use tokio::sync::oneshot;

use super::Api;

/// Runs an async test body `fn NAME(backend: Backend)` once on SQLite
/// (`NAME::sqlite`) and once on PostgreSQL (`NAME::postgres`).
macro_rules! on_both_backends {
    ($($test:ident),* $(,)?) => {$(
        mod $test {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$test(crate::support::Backend::new(false)).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$test(crate::support::Backend::new(true)).await
            }
        }
    )*};
}
pub(crate) use on_both_backends;

/// A host running in the test, over an event store running in the test.
pub(crate) struct HostEnv {
    pub(crate) store: TestEnv,
    /// One client for the whole test: each new client pays for connection set-up.
    pub(crate) events: eventstore::Client,
    pub(crate) host: Option<Host>,
    stop: Option<oneshot::Sender<()>>,
    pub(crate) http: reqwest::Client,
    pub(crate) data: tempfile::TempDir,
    /// The running host's API (a restart moves it to a new port).
    api: Option<Api>,
    /// The token reads need, if any.
    query_token: Option<String>,
    /// How the host registers users.
    registration: RegistrationConfig,
    /// Other settings of the host, applied at every start.
    adjust: fn(&mut HostConfig),
    /// Where its read models live.
    backend: Backend,
}

/// Where a test host keeps its read models, registry and modules: each
/// read-model test runs on both (see [`on_both_backends`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Backend {
    /// SQLite files under the data directory (the default).
    Sqlite,
    /// A fresh database on the test binary's PostgreSQL server.
    Postgres(String),
}

impl Backend {
    /// SQLite, or a new database on the shared PostgreSQL server.
    pub(crate) fn new(postgres: bool) -> Backend {
        if postgres {
            Backend::Postgres(projector_tests::fresh_database())
        } else {
            Backend::Sqlite
        }
    }

    fn storage(&self, listen: std::net::SocketAddr) -> projector::Storage {
        match self {
            Backend::Sqlite => projector::Storage::Sqlite,
            Backend::Postgres(url) => {
                projector::Storage::parse(url, Some(format!("test-{}", listen.port())), listen, 3000)
                    .expect("a PostgreSQL URL")
            }
        }
    }
}

impl HostEnv {
    pub(crate) async fn start() -> HostEnv {
        HostEnv::start_with_query_token(None).await
    }

    /// A host keeping its read models on `backend`.
    pub(crate) async fn start_on(backend: Backend) -> HostEnv {
        HostEnv::start_with_backend(None, RegistrationConfig::default(), |_| {}, backend).await
    }

    /// A host whose reads need `query_token` (when given).
    pub(crate) async fn start_with_query_token(query_token: Option<&str>) -> HostEnv {
        HostEnv::start_with(query_token, RegistrationConfig::default(), |_| {}).await
    }

    /// A host registering users with `registration`.
    pub(crate) async fn start_with_registration(registration: RegistrationConfig) -> HostEnv {
        HostEnv::start_with(None, registration, |_| {}).await
    }

    /// A host whose settings `adjust` changes from the defaults.
    pub(crate) async fn start_adjusted(adjust: fn(&mut HostConfig)) -> HostEnv {
        HostEnv::start_with(None, RegistrationConfig::default(), adjust).await
    }

    async fn start_with(
        query_token: Option<&str>,
        registration: RegistrationConfig,
        adjust: fn(&mut HostConfig),
    ) -> HostEnv {
        HostEnv::start_with_backend(query_token, registration, adjust, Backend::Sqlite).await
    }

    async fn start_with_backend(
        query_token: Option<&str>,
        registration: RegistrationConfig,
        adjust: fn(&mut HostConfig),
        backend: Backend,
    ) -> HostEnv {
        let store = TestEnv::start().await;
        let data = tempfile::tempdir().expect("tempdir");
        let events = store.client();
        let query_token = query_token.map(str::to_owned);
        let http = reqwest::Client::new();
        let mut env = HostEnv {
            store,
            events,
            host: None,
            stop: None,
            http,
            data,
            api: None,
            query_token,
            registration,
            adjust,
            backend,
        };
        env.start_host().await;
        env
    }

    async fn start_host(&mut self) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let (stop, stopped) = oneshot::channel::<()>();
        let mut config = HostConfig {
            query_token: self.query_token.clone(),
            registration: self.registration.clone(),
            storage: self.backend.storage(listener.local_addr().expect("address")),
            ..HostConfig::new(self.data.path().to_path_buf())
        };
        (self.adjust)(&mut config);
        let host = Host::start(listener, self.store.client(), config, async move {
            let _ = stopped.await;
        })
        .await
        .expect("host starts");
        self.api = Some(Api::new(self.http.clone(), host.local_addr(), host.admin_token()));
        self.host = Some(host);
        self.stop = Some(stop);
    }

    pub(crate) async fn restart_host(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(host) = self.host.take() {
            host.stopped().await.expect("host stops");
        }
        self.start_host().await;
    }

    /// How many read models of `name` are stored: SQLite files, or PostgreSQL rows with their tables.
    pub(crate) async fn stored_readmodels(&self, name: &str) -> usize {
        match &self.backend {
            Backend::Sqlite => match std::fs::read_dir(self.data.path().join("readmodels").join(name)) {
                Ok(files) => files
                    .filter(|f| f.as_ref().expect("entry").path().extension().is_some_and(|e| e == "sqlite"))
                    .count(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
                Err(e) => panic!("read models of {name}: {e}"),
            },
            Backend::Postgres(url) => {
                let sql = "SELECT count(*) FROM projector.readmodels r
                           WHERE projection = $1 AND to_regclass('projector.documents_' || r.id) IS NOT NULL";
                let rows: i64 = self.postgres(url).await.query_one(sql, &[&name]).await.expect("count").get(0);
                rows as usize
            }
        }
    }

    /// How many modules are stored.
    pub(crate) async fn stored_modules(&self) -> usize {
        match &self.backend {
            Backend::Sqlite => std::fs::read_dir(self.data.path().join("modules")).expect("modules").count(),
            Backend::Postgres(url) => {
                let sql = "SELECT count(*) FROM projector.modules";
                let rows: i64 = self.postgres(url).await.query_one(sql, &[]).await.expect("count").get(0);
                rows as usize
            }
        }
    }

    async fn postgres(&self, url: &str) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.expect("connect");
        tokio::spawn(connection);
        client
    }

    /// The running host.
    pub(crate) fn host(&self) -> &Host {
        self.host.as_ref().expect("host")
    }

    /// The running host's API.
    pub(crate) fn api(&self) -> &Api {
        self.api.as_ref().expect("host")
    }

    pub(crate) fn url(&self, path: &str) -> String {
        self.api().url(path)
    }

    /// The admin token the running host accepts.
    pub(crate) fn token(&self) -> String {
        self.api().token().to_owned()
    }

    pub(crate) async fn deploy(&self, name: &str, module: &str) -> (StatusCode, Value) {
        self.api().deploy(name, module).await
    }

    /// Deploys with query parameters, e.g. `mode=rebuild`.
    pub(crate) async fn deploy_with(&self, name: &str, module: &str, query: &str) -> (StatusCode, Value) {
        self.api().deploy_with(name, module, query).await
    }

    /// POSTs a lifecycle action (`stop`, `rollback`, ...) with the admin token.
    pub(crate) async fn act(&self, name: &str, action: &str) -> (StatusCode, Value) {
        self.api().act(name, action).await
    }

    pub(crate) async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.api().get(path).await
    }

    /// Waits until the status of the lane serving `name` satisfies `done`,
    /// then returns the status the API answers. Woken by the lane's status
    /// watch; a blue/green switch replaces the serving lane (the old one's
    /// watch may say nothing more), so the serving lane is looked up again
    /// at least every 20 ms.
    pub(crate) async fn wait_status(&self, name: &str, what: &str, mut done: impl FnMut(&LaneStatus) -> bool) -> Value {
        within(what, async {
            loop {
                let deployment = self.host().deployments().get(name).expect("deployed");
                let mut status = deployment.serving().subscribe();
                if done(&status.borrow_and_update()) {
                    break;
                }
                let _ = tokio::time::timeout(Duration::from_millis(20), status.changed()).await;
            }
        })
        .await;
        let (code, status) = self.get(&format!("/projections/{name}")).await;
        assert_eq!(code, StatusCode::OK, "{status}");
        status
    }
}
