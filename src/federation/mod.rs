//! The Server-Server API's machinery: server discovery, TLS, signed outbound
//! requests, verification of inbound ones, and the signing-key cache and
//! notary. The HTTP endpoints live in `api::federation`.

pub mod auth;
pub mod discovery;
pub mod keys;
pub mod media;
pub mod sender;
pub mod tls;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use http::{HeaderValue, Method, StatusCode};
use ruma::{CanonicalJsonValue, OwnedServerName, ServerName};
use serde_json::Value;

use self::discovery::{Destination, Discovery, read_limited};
use crate::{
    config::FederationConfig,
    error::{Error, ErrorKind},
    signing_key::SigningKey,
    storage::Db,
};

/// Largest JSON response read from another server.
const MAX_JSON_RESPONSE: usize = 4 * 1024 * 1024;

/// A failed outbound federation request.
#[derive(Debug, thiserror::Error)]
pub enum FederationError {
    #[error(transparent)]
    Resolve(#[from] discovery::ResolveError),
    #[error("could not reach {server_name}: {reason}")]
    Unreachable { server_name: String, reason: String },
    #[error("{server_name} responded {status}: {errcode} {message}")]
    Status { server_name: String, status: StatusCode, errcode: String, message: String },
    #[error("{server_name} sent an invalid response: {reason}")]
    BadResponse { server_name: String, reason: String },
}

impl FederationError {
    /// Whether the remote server responded that the requested resource does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Status { status, .. } if *status == StatusCode::NOT_FOUND)
    }

    /// Whether the remote server does not serve the endpoint (404 or 405 `M_UNRECOGNIZED`).
    pub fn is_unrecognized(&self) -> bool {
        matches!(self, Self::Status { errcode, .. } if errcode == "M_UNRECOGNIZED")
    }
}

impl From<FederationError> for Error {
    fn from(err: FederationError) -> Self {
        match &err {
            FederationError::Status { status, errcode, message, .. } if *status == StatusCode::NOT_FOUND => {
                let kind = if errcode == "M_UNRECOGNIZED" { ErrorKind::Unrecognized } else { ErrorKind::NotFound };
                Error::new(kind, format!("the remote server responded: {message}"))
            }
            _ => Error::new(ErrorKind::Unknown, err.to_string()).with_status(StatusCode::BAD_GATEWAY),
        }
    }
}

/// The federation service. Cloning is cheap.
#[derive(Clone)]
pub struct Federation {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    server_name: OwnedServerName,
    key: Arc<SigningKey>,
    config: FederationConfig,
    tls: rustls::ClientConfig,
    discovery: Discovery,
    /// One HTTP client per destination, built for its resolved address.
    clients: Mutex<HashMap<String, (Destination, reqwest::Client)>>,
}

impl Federation {
    pub fn new(
        db: Db,
        server_name: OwnedServerName,
        key: Arc<SigningKey>,
        config: FederationConfig,
    ) -> Result<Self, String> {
        let tls = tls::client_config(&config)?;
        let timeout = Duration::from_secs(config.request_timeout_secs);
        let well_known_client = reqwest::Client::builder()
            .use_preconfigured_tls(tls.clone())
            .timeout(timeout.min(Duration::from_secs(10)))
            .redirect(reqwest::redirect::Policy::limited(5))
            .build()
            .map_err(|e| format!("could not build the federation HTTP client: {e}"))?;
        let discovery = Discovery::new(config.host_overrides.clone(), well_known_client);
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                server_name,
                key,
                config,
                tls,
                discovery,
                clients: Mutex::new(HashMap::new()),
            }),
        })
    }

    pub fn server_name(&self) -> &ServerName {
        &self.inner.server_name
    }

    pub fn config(&self) -> &FederationConfig {
        &self.inner.config
    }

    /// Resolves a server name (see [`discovery`]).
    pub async fn resolve(&self, server_name: &str) -> Result<Destination, FederationError> {
        Ok(self.inner.discovery.resolve(server_name).await?)
    }

    /// Returns an HTTP client that connects to the address discovery found for `destination`.
    fn client_for(&self, destination: &Destination) -> Result<reqwest::Client, String> {
        let key = format!("{}|{}|{:?}", destination.tls_host, destination.port, destination.addrs);
        if let Some((cached, client)) = self.inner.clients.lock().expect("lock").get(&key)
            && cached == destination
        {
            return Ok(client.clone());
        }
        let mut builder = reqwest::Client::builder()
            .use_preconfigured_tls(self.inner.tls.clone())
            .timeout(Duration::from_secs(self.inner.config.request_timeout_secs))
            .redirect(reqwest::redirect::Policy::none());
        if !destination.addrs.is_empty() {
            builder = builder.resolve_to_addrs(&destination.tls_host, &destination.addrs);
        }
        let client = builder.build().map_err(|e| format!("could not build an HTTP client: {e}"))?;
        self.inner.clients.lock().expect("lock").insert(key, (destination.clone(), client.clone()));
        Ok(client)
    }

    /// Sends a request to another server. `path` starts with `/_matrix/` and
    /// carries the query string. With `signed`, the request carries this
    /// server's `X-Matrix` authorization.
    #[tracing::instrument(skip_all, fields(destination = %server_name, %method, path))]
    pub async fn send(
        &self,
        server_name: &ServerName,
        method: Method,
        path: &str,
        body: Option<&Value>,
        signed: bool,
    ) -> Result<reqwest::Response, FederationError> {
        let unreachable =
            |reason: String| FederationError::Unreachable { server_name: server_name.to_string(), reason };
        let destination = self.resolve(server_name.as_str()).await?;
        let client = self.client_for(&destination).map_err(unreachable)?;
        let mut request = client.request(method.clone(), format!("{}{path}", destination.base_url()));
        request = request.header(
            http::header::HOST,
            HeaderValue::from_str(&destination.host_header).map_err(|e| unreachable(e.to_string()))?,
        );
        if signed {
            let content = body
                .map(|value| CanonicalJsonValue::try_from(value.clone()))
                .transpose()
                .map_err(|e| unreachable(format!("the request body is not canonical JSON: {e}")))?;
            let header = auth::authorization_header(
                &self.inner.key.pair,
                self.inner.server_name.as_str(),
                server_name.as_str(),
                method.as_str(),
                path,
                content,
            )
            .map_err(|e| unreachable(format!("could not sign the request: {e}")))?;
            request = request.header(http::header::AUTHORIZATION, header);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        match request.send().await {
            Ok(response) => Ok(response),
            Err(err) => {
                self.inner.discovery.forget(server_name.as_str());
                tracing::info!(error = %err, "federation request failed");
                Err(unreachable(error_chain(&err)))
            }
        }
    }

    /// Sends a request and reads a JSON object from a successful response. An
    /// error response becomes [`FederationError::Status`].
    pub async fn send_json(
        &self,
        server_name: &ServerName,
        method: Method,
        path: &str,
        body: Option<&Value>,
        signed: bool,
    ) -> Result<Value, FederationError> {
        let response = self.send(server_name, method, path, body, signed).await?;
        let response = check_status(server_name, response).await?;
        let bad = |reason: String| FederationError::BadResponse { server_name: server_name.to_string(), reason };
        let bytes = read_limited(response, MAX_JSON_RESPONSE).await.map_err(bad)?;
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| bad(format!("invalid JSON: {e}")))?;
        if !value.is_object() {
            return Err(bad("the body is not a JSON object".into()));
        }
        Ok(value)
    }
}

/// Turns an error status into [`FederationError::Status`], with the errcode
/// and message of the spec's error JSON when the body has them.
pub async fn check_status(
    server_name: &ServerName,
    response: reqwest::Response,
) -> Result<reqwest::Response, FederationError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body = read_limited(response, 64 * 1024).await.unwrap_or_default();
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    Err(FederationError::Status {
        server_name: server_name.to_string(),
        status,
        errcode: json["errcode"].as_str().unwrap_or("M_UNKNOWN").to_owned(),
        message: json["error"].as_str().unwrap_or("no error message").to_owned(),
    })
}

/// Formats an error with its sources, for logs and messages (reqwest's own message
/// hides the cause, such as a certificate problem).
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}
