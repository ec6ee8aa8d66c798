//! An in-process Lattice on an ephemeral port with a fresh database, and an
//! HTTP client that speaks to it as a Matrix client would.
//!
//! Every test runs on SQLite. When `LATTICE_TEST_POSTGRES_URL` names a
//! PostgreSQL server (e.g. `postgres://postgres@127.0.0.1:5432`), [`backends`]
//! adds PostgreSQL, with a new database for each server started, dropped again
//! when its [`TestServer`] goes out of scope.
//!
//! [`TestServer::start_federated`] starts several servers that federate with
//! each other over TLS on 127.0.0.1, with certificates from a [`TestCa`] and
//! `federation.host_overrides` in place of DNS.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, time::Duration};

use lattice::{Config, Homeserver, ShutdownHandle};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

#[derive(Debug, Clone)]
pub enum Backend {
    Sqlite,
    Postgres(String),
}

/// The backends to run each test on.
pub fn backends() -> Vec<Backend> {
    let mut list = vec![Backend::Sqlite];
    if let Ok(url) = std::env::var("LATTICE_TEST_POSTGRES_URL")
        && !url.is_empty()
    {
        list.push(Backend::Postgres(url));
    }
    list
}

pub struct TestServer {
    pub base: String,
    pub server_name: String,
    pub homeserver: Homeserver,
    /// The TLS federation listener, for servers started by [`TestServer::start_federated`].
    pub federation_addr: Option<SocketAddr>,
    config: Config,
    shutdown: ShutdownHandle,
    data: tempfile::TempDir,
    database: Option<TestDatabase>,
}

/// A certificate authority for federation tests, and the certificates it issues.
pub struct TestCa {
    pub pem: String,
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    dir: tempfile::TempDir,
}

impl TestCa {
    pub fn new() -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, "Lattice test CA");
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        let key = rcgen::KeyPair::generate().expect("CA key");
        let issuer = rcgen::CertifiedIssuer::self_signed(params, key).expect("self-signed CA");
        let dir = tempfile::tempdir().expect("temporary directory");
        let pem = issuer.pem();
        std::fs::write(dir.path().join("ca.pem"), &pem).expect("write the CA certificate");
        Self { pem, issuer, dir }
    }

    /// Returns the PEM file of the CA certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Issues a certificate for `name` (a DNS name or an IP address) and
    /// returns the paths of the certificate chain and private key PEM files.
    pub fn issue(&self, name: &str) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().expect("server key");
        let params = rcgen::CertificateParams::new(vec![name.to_owned()]).expect("certificate parameters");
        let certificate = params.signed_by(&key, &self.issuer).expect("sign a server certificate");
        let file = name.replace([':', '.'], "_");
        let certificate_path = self.dir.path().join(format!("{file}.crt"));
        let key_path = self.dir.path().join(format!("{file}.key"));
        std::fs::write(&certificate_path, format!("{}{}", certificate.pem(), self.pem)).expect("write certificate");
        std::fs::write(&key_path, key.serialize_pem()).expect("write key");
        (certificate_path, key_path)
    }

    /// Builds an HTTPS client that trusts this CA and reaches each server by
    /// its name on its federation listener, as another homeserver would.
    pub fn client(&self, servers: &[&TestServer]) -> reqwest::Client {
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(self.pem.as_bytes()).expect("CA certificate"));
        for server in servers {
            let addr = server.federation_addr.expect("a server with a federation listener");
            builder = builder.resolve(&server.server_name, addr);
        }
        builder.build().expect("HTTPS client")
    }
}

/// A PostgreSQL database made for one test server. Dropping it drops the
/// database, so that test runs do not fill the disk with their leftovers.
pub struct TestDatabase {
    admin_url: String,
    name: String,
}

impl TestDatabase {
    /// Creates an empty database and returns it with its URL.
    async fn create(admin_url: &str) -> (Self, String) {
        use sqlx::Connection;
        let name = format!("lattice_test_{}", lattice::rooms::random_localpart(12).to_lowercase());
        let mut conn = sqlx::PgConnection::connect(admin_url).await.expect("connect to PostgreSQL");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create a test database");
        let mut url = url::Url::parse(admin_url).expect("valid PostgreSQL URL");
        url.set_path(&name);
        (Self { admin_url: admin_url.to_owned(), name }, url.to_string())
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let statement = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        // A destructor cannot await, and blocking on the test's own runtime
        // would stall it. A thread with a runtime of its own can do both.
        let dropped = std::thread::spawn(move || {
            use sqlx::Connection;
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            runtime.block_on(async {
                let mut conn = sqlx::PgConnection::connect(&admin_url).await.ok()?;
                sqlx::raw_sql(sqlx::AssertSqlSafe(statement)).execute(&mut conn).await.ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(_))) {
            eprintln!("failed to drop the test database {}: drop it with psql", self.name);
        }
    }
}

impl TestServer {
    pub async fn start(backend: &Backend) -> Self {
        Self::start_with(backend, |_| {}).await
    }

    /// Starts a server after `configure` adjusted its configuration.
    pub async fn start_with(backend: &Backend, configure: impl FnOnce(&mut Config)) -> Self {
        Self::start_configured(backend, None, configure).await
    }

    /// Starts a server with a fresh data directory and database, and the
    /// federation listener `federation` when given.
    async fn start_configured(
        backend: &Backend,
        federation: Option<tokio::net::TcpListener>,
        configure: impl FnOnce(&mut Config),
    ) -> Self {
        let data = tempfile::tempdir().expect("temporary directory");
        let mut config = Config::default();
        config.data_dir = data.path().to_path_buf();
        config.rate_limits.enabled = false;
        // Most tests exercise plain Matrix; the policy's own tests select `professional`.
        config.policy.name = "open".into();
        let mut database = None;
        if let Backend::Postgres(admin_url) = backend {
            let (created, url) = TestDatabase::create(admin_url).await;
            config.database.url = url;
            database = Some(created);
        }
        configure(&mut config);
        Self::launch(config, data, database, federation).await
    }

    async fn launch(
        config: Config,
        data: tempfile::TempDir,
        database: Option<TestDatabase>,
        federation: Option<tokio::net::TcpListener>,
    ) -> Self {
        let server_name = config.server_name.clone();
        let homeserver = Homeserver::new(config.clone()).await.expect("homeserver starts");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind an ephemeral port");
        let addr: SocketAddr = listener.local_addr().expect("local address");
        let app = homeserver.router().into_make_service_with_connect_info::<SocketAddr>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let federation_addr = match federation {
            Some(listener) => {
                let addr = listener.local_addr().expect("federation address");
                homeserver.spawn_federation_listener(listener).expect("federation listener starts");
                Some(addr)
            }
            None => None,
        };
        let shutdown = homeserver.shutdown_handle();
        Self {
            base: format!("http://{addr}"),
            server_name,
            homeserver,
            federation_addr,
            config,
            shutdown,
            data,
            database,
        }
    }

    /// Starts one server per name, each with a TLS federation listener on
    /// 127.0.0.1 and a certificate from `ca`, and with host overrides that
    /// lead each server to the others. `configure` adjusts every config.
    pub async fn start_federated(
        backend: &Backend,
        ca: &TestCa,
        names: &[&str],
        configure: impl Fn(&mut Config),
    ) -> Vec<TestServer> {
        let mut listeners = Vec::new();
        let mut overrides = BTreeMap::new();
        for name in names {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a federation port");
            overrides.insert((*name).to_owned(), listener.local_addr().expect("address").to_string());
            listeners.push(listener);
        }
        let mut servers = Vec::new();
        for (name, listener) in names.iter().zip(listeners) {
            let (certificate, key) = ca.issue(name);
            let overrides = overrides.clone();
            let server = Self::start_configured(backend, Some(listener), |config| {
                config.server_name = (*name).to_owned();
                config.federation.tls_certificate = Some(certificate);
                config.federation.tls_private_key = Some(key);
                config.federation.tls_ca_file = Some(ca.ca_file());
                config.federation.host_overrides = overrides;
                config.federation.request_timeout_secs = 20;
                configure(config);
            })
            .await;
            servers.push(server);
        }
        servers
    }

    /// Starts a server named by its IP literal and port (`127.0.0.1:PORT`),
    /// which other servers reach without host overrides, with a certificate
    /// for the IP address from `ca`.
    pub async fn start_ip_literal(backend: &Backend, ca: &TestCa) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a federation port");
        let port = listener.local_addr().expect("address").port();
        let (certificate, key) = ca.issue("127.0.0.1");
        Self::start_configured(backend, Some(listener), |config| {
            config.server_name = format!("127.0.0.1:{port}");
            config.federation.tls_certificate = Some(certificate);
            config.federation.tls_private_key = Some(key);
            config.federation.tls_ca_file = Some(ca.ca_file());
        })
        .await
    }

    /// Stops the server and starts it again on the same data directory and
    /// database, with a new client listener (and no federation listener).
    pub async fn restart(self) -> Self {
        self.shutdown.shutdown().await;
        Self::launch(self.config, self.data, self.database, None).await
    }

    /// Stops the server, runs `between` on a connection pool to its database,
    /// and starts it again on the same data, as after a crash that left the
    /// database in the state `between` makes.
    pub async fn restart_with_database<F, Fut>(self, between: F) -> Self
    where
        F: FnOnce(sqlx::AnyPool) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        self.shutdown.shutdown().await;
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&self.config.database_url()).await.expect("open the test database");
        between(pool.clone()).await;
        pool.close().await;
        Self::launch(self.config, self.data, self.database, None).await
    }

    /// Returns the `https://name:port` base of the federation listener.
    pub fn federation_base(&self) -> String {
        let addr = self.federation_addr.expect("a server with a federation listener");
        format!("https://{}:{}", self.server_name, addr.port())
    }

    pub fn client(&self) -> Client {
        Client::new(&self.base, None)
    }

    /// Registers `localpart` with password `password` and returns a logged-in client.
    pub async fn register(&self, localpart: &str) -> Client {
        let anonymous = self.client();
        let (status, body) = anonymous
            .post(
                "/_matrix/client/v3/register",
                json!({ "username": localpart, "password": "correct horse", "auth": { "type": "m.login.dummy" } }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "registering {localpart}: {body}");
        let mut client = Client::new(&self.base, body["access_token"].as_str().map(str::to_owned));
        client.user_id = body["user_id"].as_str().unwrap_or_default().to_owned();
        client.device_id = body["device_id"].as_str().unwrap_or_default().to_owned();
        client
    }

    pub fn user_id(&self, localpart: &str) -> String {
        format!("@{localpart}:{}", self.server_name)
    }

    /// Stops the server. Its PostgreSQL database stays until the returned
    /// value is dropped, so that a test can start another server on it and
    /// hand the database over with [`TestServer::adopt_database`].
    pub async fn stop(self) -> Option<TestDatabase> {
        self.shutdown.shutdown().await;
        self.database
    }

    /// Makes this server own a database that a stopped server left, so that
    /// the database is dropped with this server.
    pub fn adopt_database(&mut self, database: Option<TestDatabase>) {
        if database.is_some() {
            self.database = database;
        }
    }
}

#[derive(Clone)]
pub struct Client {
    pub base: String,
    pub token: Option<String>,
    pub user_id: String,
    pub device_id: String,
    http: reqwest::Client,
}

impl Client {
    pub fn new(base: &str, token: Option<String>) -> Self {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().expect("HTTP client");
        Self { base: base.to_owned(), token, user_id: String::new(), device_id: String::new(), http }
    }

    /// Sends a request with an optional JSON body; returns the status and the JSON body
    /// (`Null` when the body is not JSON).
    pub async fn request(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request reaches the server");
        let status = response.status();
        let bytes = response.bytes().await.expect("response body");
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    /// Sends raw bytes as the body, for malformed-input tests.
    pub async fn request_raw(&self, method: Method, path: &str, body: Vec<u8>) -> (StatusCode, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base)).body(body);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("request reaches the server");
        let status = response.status();
        let bytes = response.bytes().await.expect("response body");
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.request(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.request(Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.request(Method::PUT, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.request(Method::DELETE, path, Some(body)).await
    }

    /// Creates a room and returns its id, failing the test on error.
    pub async fn create_room(&self, body: Value) -> String {
        let (status, response) = self.post("/_matrix/client/v3/createRoom", body).await;
        assert_eq!(status, StatusCode::OK, "createRoom: {response}");
        response["room_id"].as_str().expect("room_id in createRoom response").to_owned()
    }

    pub async fn join(&self, room_id: &str) {
        let (status, response) = self.post(&format!("/_matrix/client/v3/join/{}", encode(room_id)), json!({})).await;
        assert_eq!(status, StatusCode::OK, "join {room_id}: {response}");
    }

    /// Sends an `m.text` message and returns its event id.
    pub async fn send_text(&self, room_id: &str, body: &str) -> String {
        let txn = lattice::rooms::random_localpart(16);
        let (status, response) = self
            .put(
                &format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}", encode(room_id)),
                json!({ "msgtype": "m.text", "body": body }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "send to {room_id}: {response}");
        response["event_id"].as_str().expect("event_id").to_owned()
    }

    /// `/sync` with the given query string (without the leading `?`).
    pub async fn sync(&self, query: &str) -> Value {
        let (status, body) = self.get(&format!("/_matrix/client/v3/sync?{query}")).await;
        assert_eq!(status, StatusCode::OK, "sync: {body}");
        body
    }
}

/// Percent-encodes a path segment such as a room id or alias.
pub fn encode(segment: &str) -> String {
    percent_encoding::utf8_percent_encode(segment, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Asserts the spec's error JSON: status, `errcode`, and a non-empty `error`.
#[track_caller]
pub fn assert_error(response: &(StatusCode, Value), status: StatusCode, errcode: &str) {
    assert_eq!(response.0, status, "unexpected status; body: {}", response.1);
    assert_eq!(response.1["errcode"], errcode, "unexpected errcode; body: {}", response.1);
    assert!(response.1["error"].as_str().is_some_and(|e| !e.is_empty()), "error message missing: {}", response.1);
}

/// The timeline events of a room in a sync response.
pub fn timeline<'a>(sync: &'a Value, room_id: &str) -> &'a Vec<Value> {
    sync["rooms"]["join"][room_id]["timeline"]["events"].as_array().expect("room timeline in sync")
}
