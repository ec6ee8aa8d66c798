//! Requests from the homeserver to application services, each with
//! `Authorization: Bearer <hs_token>` (spec: Application Service API,
//! "Authorisation").

use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::Method;
use serde_json::Value;

use super::Registration;

/// Characters escaped in a path segment: everything but the unreserved set.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Time allowed for one transaction push.
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(30);
/// Time allowed for a query or ping, during which a client request waits.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// A failed request to an application service.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("the registration has no url")]
    NoUrl,
    #[error("timed out")]
    Timeout,
    #[error("connection failed: {0}")]
    Connect(String),
    #[error("answered HTTP {status}")]
    Status { status: u16, body: String },
    #[error("answered with an invalid body: {0}")]
    Body(String),
}

/// The HTTP client that talks to every application service.
#[derive(Clone)]
pub struct AppServiceClient {
    http: reqwest::Client,
}

impl Default for AppServiceClient {
    fn default() -> Self {
        Self::new()
    }
}

/// Percent-encodes one path segment.
pub fn segment(value: &str) -> String {
    utf8_percent_encode(value, SEGMENT).to_string()
}

impl AppServiceClient {
    pub fn new() -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            // Registrations point at the operator's own bridges; a redirect elsewhere is a misconfiguration.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Self { http }
    }

    /// Sends one request and returns the JSON body of a 2xx response.
    async fn call(
        &self,
        registration: &Registration,
        method: Method,
        path: &str,
        query: Option<&str>,
        body: Option<String>,
        timeout: Duration,
    ) -> Result<Value, CallError> {
        let base = registration.url.as_ref().ok_or(CallError::NoUrl)?;
        let mut url = format!("{}{path}", base.as_str().trim_end_matches('/'));
        if let Some(query) = query.filter(|q| !q.is_empty()) {
            url.push('?');
            url.push_str(query);
        }
        let mut request = self.http.request(method, url).bearer_auth(&registration.hs_token).timeout(timeout);
        if let Some(body) = body {
            request = request.header(reqwest::header::CONTENT_TYPE, "application/json").body(body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| if e.is_timeout() { CallError::Timeout } else { CallError::Connect(without_url(&e)) })?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| if e.is_timeout() { CallError::Timeout } else { CallError::Connect(without_url(&e)) })?;
        if !status.is_success() {
            return Err(CallError::Status {
                status: status.as_u16(),
                body: String::from_utf8_lossy(&bytes).into_owned(),
            });
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Object(Default::default()));
        }
        serde_json::from_slice(&bytes).map_err(|e| CallError::Body(e.to_string()))
    }

    /// PUT /_matrix/app/v1/transactions/{txnId}
    pub async fn push_transaction(
        &self,
        registration: &Registration,
        txn_id: i64,
        body: &str,
    ) -> Result<(), CallError> {
        let path = format!("/_matrix/app/v1/transactions/{txn_id}");
        self.call(registration, Method::PUT, &path, None, Some(body.to_owned()), TRANSACTION_TIMEOUT).await?;
        Ok(())
    }

    /// POST /_matrix/app/v1/ping
    pub async fn ping(&self, registration: &Registration, transaction_id: Option<&str>) -> Result<(), CallError> {
        let body = match transaction_id {
            Some(id) => serde_json::json!({ "transaction_id": id }),
            None => serde_json::json!({}),
        };
        self.call(registration, Method::POST, "/_matrix/app/v1/ping", None, Some(body.to_string()), QUERY_TIMEOUT)
            .await?;
        Ok(())
    }

    /// GET /_matrix/app/v1/users/{userId}: whether the application service created the user.
    pub async fn query_user(&self, registration: &Registration, user_id: &str) -> Result<bool, CallError> {
        let path = format!("/_matrix/app/v1/users/{}", segment(user_id));
        exists(self.call(registration, Method::GET, &path, None, None, QUERY_TIMEOUT).await)
    }

    /// GET /_matrix/app/v1/rooms/{roomAlias}: whether the application service created the alias.
    pub async fn query_alias(&self, registration: &Registration, alias: &str) -> Result<bool, CallError> {
        let path = format!("/_matrix/app/v1/rooms/{}", segment(alias));
        exists(self.call(registration, Method::GET, &path, None, None, QUERY_TIMEOUT).await)
    }

    /// GET /_matrix/app/v1/thirdparty/{path} with the client's query string.
    pub async fn thirdparty(
        &self,
        registration: &Registration,
        path: &str,
        query: Option<&str>,
    ) -> Result<Value, CallError> {
        let path = format!("/_matrix/app/v1/thirdparty/{path}");
        self.call(registration, Method::GET, &path, query, None, QUERY_TIMEOUT).await
    }
}

/// A 404 means "no such entity"; other failures stay errors.
fn exists(result: Result<Value, CallError>) -> Result<bool, CallError> {
    match result {
        Ok(_) => Ok(true),
        Err(CallError::Status { status: 404, .. }) => Ok(false),
        Err(err) => Err(err),
    }
}

/// reqwest's message without the URL, which may carry a path the operator considers private.
fn without_url(err: &reqwest::Error) -> String {
    let mut message = err.to_string();
    if let Some(url) = err.url() {
        message = message.replace(url.as_str(), "<appservice url>");
    }
    if let Some(source) = std::error::Error::source(err) {
        message = format!("{message}: {source}");
    }
    message
}
