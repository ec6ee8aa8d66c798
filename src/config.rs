//! Server configuration: a TOML file, overridden by `LATTICE_*` environment variables.
//!
//! Nested keys use a double underscore in the variable name, so
//! `LATTICE_LISTEN__CLIENT=0.0.0.0:8008` sets `listen.client`.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf};

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The domain in every user id and room alias of this server, e.g. `example.org`.
    pub server_name: String,
    /// Directory of the default SQLite database (`lattice.db`, which also
    /// stores the signing key) and of uploaded media (`media/`).
    pub data_dir: PathBuf,
    /// Base URL that clients use, published in `/.well-known/matrix/client`.
    pub public_baseurl: Option<String>,
    /// Federation endpoint published in `/.well-known/matrix/server` (`host:port`).
    pub well_known_server: Option<String>,
    pub listen: ListenConfig,
    pub database: DatabaseConfig,
    pub registration: RegistrationConfig,
    pub rooms: RoomsConfig,
    pub rate_limits: RateLimitConfig,
    pub limits: RequestLimits,
    pub directory: DirectoryConfig,
    pub policy: PolicyConfig,
    pub media: MediaConfig,
    pub federation: FederationConfig,
    pub web: WebConfig,
    pub appservice: AppServiceConfig,
    pub push: PushConfig,
    pub email: EmailConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListenConfig {
    /// Address of the plain-HTTP Client-Server listener.
    pub client: SocketAddr,
    /// Address of the HTTPS Server-Server listener, usually port 8448. Unset:
    /// no federation listener (the federation endpoints are still served on
    /// the client listener, for a TLS proxy in front of it).
    pub federation: Option<SocketAddr>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://PATH` or `postgres://...`. Empty means `sqlite://<data_dir>/lattice.db`.
    pub url: String,
    /// Maximum number of pooled read connections.
    pub max_connections: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistrationConfig {
    /// Whether `/register` creates accounts for anyone.
    pub enabled: bool,
    /// When non-empty, registration also requires one of these tokens
    /// (`m.login.registration_token`).
    pub tokens: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoomsConfig {
    /// Room version of new rooms when the client names none.
    pub default_version: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    pub enabled: bool,
    /// Sustained requests per second allowed for each user (or IP for unauthenticated requests).
    pub per_second: f64,
    /// Requests allowed in a burst above the sustained rate.
    pub burst: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RequestLimits {
    /// Maximum size of a JSON request body, in bytes.
    pub max_request_body: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DirectoryConfig {
    /// Whether user directory search returns every local user, not only those
    /// who share a room with the searcher or sit in a public room.
    pub search_all_users: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// `open` (plain Matrix) or `professional` (connections first, see `docs/connections.md`).
    pub name: String,
    /// Messages a requester may send in a connection request room before the
    /// invitee joins (`professional` only).
    pub pending_message_limit: u32,
    /// Maximum number of joined plus invited members of a room (`professional` only).
    pub max_group_size: u32,
    /// Messages per user per UTC day; 0 means no limit (`professional` only).
    pub daily_message_limit: u32,
    /// Connection requests per user per week, counted from Monday 00:00 UTC;
    /// 0 means no limit (`professional` only).
    pub weekly_connection_request_limit: u32,
    /// Whether the daily and weekly limits also apply to application service users.
    pub limit_appservice_users: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MediaConfig {
    /// Maximum size of one upload, in bytes; larger uploads get 413 `M_TOO_LARGE`.
    pub max_upload_size: u64,
    /// Bytes of media each user may upload in total; 0 means no quota.
    pub per_user_quota: u64,
    /// Whether the deprecated unauthenticated `/_matrix/media/v3` download,
    /// thumbnail and config endpoints return 404 `M_NOT_FOUND`.
    pub freeze_legacy: bool,
    /// `info_uri` of the quota error, a page that explains the quota. Empty
    /// means `public_baseurl`, or `https://<server_name>/` when that is unset.
    pub quota_info_uri: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FederationConfig {
    /// PEM file with the federation listener's certificate chain.
    pub tls_certificate: Option<PathBuf>,
    /// PEM file with the federation listener's private key.
    pub tls_private_key: Option<PathBuf>,
    /// PEM file of certificate authorities that outbound federation requests
    /// trust, besides the public web roots.
    pub tls_ca_file: Option<PathBuf>,
    /// Accept any certificate on outbound federation requests. For tests only:
    /// it lets anyone on the network path impersonate other servers.
    pub insecure_skip_tls_verify_for_tests: bool,
    /// Server name to `host:port` (or `ip:port`) to connect to, in place of
    /// server discovery. Meant for tests and private deployments; TLS still
    /// expects a certificate for the server name.
    pub host_overrides: BTreeMap<String, String>,
    /// Timeout of one outbound federation request, in seconds.
    pub request_timeout_secs: u64,
    /// Validity period that this server's key responses state for its signing
    /// key, in milliseconds (`valid_until_ts` is now plus this).
    pub key_validity_ms: u64,
    /// Delay before the first retry of a failed transaction, in milliseconds;
    /// it doubles with each further failure.
    pub sender_retry_initial_ms: u64,
    /// Longest delay between retries of a failing destination, in milliseconds.
    pub sender_retry_max_ms: u64,
}

impl Default for FederationConfig {
    fn default() -> Self {
        Self {
            tls_certificate: None,
            tls_private_key: None,
            tls_ca_file: None,
            insecure_skip_tls_verify_for_tests: false,
            host_overrides: BTreeMap::new(),
            request_timeout_secs: 30,
            key_validity_ms: 24 * 60 * 60 * 1000,
            sender_retry_initial_ms: 5_000,
            sender_retry_max_ms: 60 * 60 * 1000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebConfig {
    /// Whether the client listener serves the "My Network" page under `/_lattice/network/`.
    pub network_page: bool,
    /// Prefix of the links that open a conversation: the page appends the
    /// percent-encoded room id and `?via=<server_name>`. Use
    /// `https://element.example.org/#/room/` for an Element Web of your own.
    pub element_url: String,
}

impl Default for WebConfig {
    fn default() -> Self {
        Self { network_page: true, element_url: "https://matrix.to/#/".into() }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct AppServiceConfig {
    /// Paths of application service registration files (YAML), loaded at start.
    pub registrations: Vec<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server_name: "localhost".into(),
            data_dir: PathBuf::from("./data"),
            public_baseurl: None,
            well_known_server: None,
            listen: ListenConfig::default(),
            database: DatabaseConfig::default(),
            registration: RegistrationConfig::default(),
            rooms: RoomsConfig::default(),
            rate_limits: RateLimitConfig::default(),
            limits: RequestLimits::default(),
            directory: DirectoryConfig::default(),
            policy: PolicyConfig::default(),
            media: MediaConfig::default(),
            federation: FederationConfig::default(),
            web: WebConfig::default(),
            appservice: AppServiceConfig::default(),
            push: PushConfig::default(),
            email: EmailConfig::default(),
        }
    }
}

impl Default for ListenConfig {
    fn default() -> Self {
        Self { client: SocketAddr::from(([127, 0, 0, 1], 8008)), federation: None }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self { url: String::new(), max_connections: 8 }
    }
}

impl Default for RegistrationConfig {
    fn default() -> Self {
        Self { enabled: true, tokens: Vec::new() }
    }
}

impl Default for RoomsConfig {
    fn default() -> Self {
        Self { default_version: "12".into() }
    }
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self { enabled: true, per_second: 10.0, burst: 50 }
    }
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self { max_request_body: 1024 * 1024 }
    }
}

impl Default for DirectoryConfig {
    fn default() -> Self {
        Self { search_all_users: false }
    }
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            max_upload_size: 50 * 1024 * 1024,
            per_user_quota: 0,
            freeze_legacy: false,
            quota_info_uri: String::new(),
        }
    }
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            name: "professional".into(),
            pending_message_limit: 1,
            max_group_size: 50,
            daily_message_limit: 500,
            weekly_connection_request_limit: 100,
            limit_appservice_users: false,
        }
    }
}

/// Delivery of notifications to push gateways.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PushConfig {
    /// Whether push rules are evaluated for new events. When false, unread
    /// counts stay 0 and nothing is pushed or emailed.
    pub enabled: bool,
    /// Seconds to wait for a push gateway's response before the attempt counts as failed.
    pub gateway_timeout_secs: u64,
    /// Attempts to deliver one notification before it is dropped.
    pub max_attempts: u32,
    /// Delay before the first retry of a failed delivery, in milliseconds; each
    /// further retry doubles it.
    pub retry_initial_ms: u64,
    /// Maximum delay between two retries, in milliseconds.
    pub retry_max_ms: u64,
    /// Oldest notification, in seconds, that the push gateway sender and the
    /// email notifier still deliver after a restart or an outage.
    pub max_delivery_age_secs: u64,
    /// Seconds a stored push action is kept; older ones leave `/notifications`.
    pub action_retention_secs: u64,
    /// Seconds between two runs of the task that prunes push actions.
    pub prune_interval_secs: u64,
}

impl Default for PushConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            gateway_timeout_secs: 10,
            max_attempts: 8,
            retry_initial_ms: 1_000,
            retry_max_ms: 300_000,
            max_delivery_age_secs: 86_400,
            action_retention_secs: 30 * 86_400,
            prune_interval_secs: 3_600,
        }
    }
}

/// Outgoing email: verification of email addresses and notification emails.
/// Email is off while `smtp_host` is empty.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmailConfig {
    /// Host name of the SMTP server; empty disables email.
    pub smtp_host: String,
    /// Port of the SMTP server (587 for STARTTLS, 465 for TLS, 25 for plain).
    pub smtp_port: u16,
    /// Connection security: `starttls` (upgrade a plain connection, required),
    /// `tls` (TLS from the first byte) or `plain` (no encryption, for a
    /// server on the same machine only).
    pub smtp_security: String,
    /// User name for SMTP authentication; no authentication when unset.
    pub smtp_username: Option<String>,
    /// Password for SMTP authentication.
    pub smtp_password: Option<String>,
    /// Sender of every email, e.g. `Lattice <noreply@example.org>`.
    pub from: String,
    /// Name of the service in email subjects and texts.
    pub app_name: String,
    /// Seconds a message must stay unread before a notification email is sent.
    pub notification_delay_secs: u64,
    /// Minimum seconds between two notification emails about the same room.
    pub notification_period_secs: u64,
    /// Seconds a verification link stays valid.
    pub token_lifetime_secs: u64,
    /// Attempts to send one email before it is dropped; the delay between
    /// attempts starts at 5 seconds and doubles.
    pub max_attempts: u32,
}

impl Default for EmailConfig {
    fn default() -> Self {
        Self {
            smtp_host: String::new(),
            smtp_port: 587,
            smtp_security: "starttls".into(),
            smtp_username: None,
            smtp_password: None,
            from: "Lattice <noreply@localhost>".into(),
            app_name: "Lattice".into(),
            notification_delay_secs: 600,
            notification_period_secs: 3_600,
            token_lifetime_secs: 86_400,
            max_attempts: 5,
        }
    }
}

/// Top-level keys of [`Config`], the only ones read from the environment.
const CONFIG_KEYS: &[&str] = &[
    "server_name",
    "data_dir",
    "public_baseurl",
    "well_known_server",
    "listen",
    "database",
    "registration",
    "rooms",
    "rate_limits",
    "limits",
    "directory",
    "policy",
    "media",
    "federation",
    "web",
    "appservice",
    "push",
    "email",
];

/// An invalid or unreadable configuration.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(String);

impl Config {
    /// Loads the defaults, then the TOML file (if any), then `LATTICE_*` variables.
    pub fn load(path: Option<&std::path::Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = path {
            if !path.exists() {
                return Err(ConfigError(format!("config file {} not found", path.display())));
            }
            figment = figment.merge(Toml::file(path));
        }
        // Other tools share the LATTICE_ prefix (LATTICE_BIN, LATTICE_TEST_POSTGRES_URL, ...),
        // so only variables that name a configuration section are read.
        figment = figment.merge(
            Env::prefixed("LATTICE_")
                .filter(|key| {
                    let section = key.as_str().split("__").next().unwrap_or_default().to_ascii_lowercase();
                    CONFIG_KEYS.contains(&section.as_str())
                })
                .split("__"),
        );
        let config: Config = figment.extract().map_err(|e| ConfigError(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if ruma::ServerName::parse(&self.server_name).is_err() {
            return Err(ConfigError(format!("server_name {:?} is not a valid Matrix server name", self.server_name)));
        }
        if !matches!(self.email.smtp_security.as_str(), "starttls" | "tls" | "plain") {
            return Err(ConfigError(format!(
                "email.smtp_security {:?} is unknown; expected \"starttls\", \"tls\" or \"plain\"",
                self.email.smtp_security
            )));
        }
        if !self.email.smtp_host.is_empty() && self.email.from.parse::<lettre::message::Mailbox>().is_err() {
            return Err(ConfigError(format!(
                "email.from {:?} is not a valid mailbox; expected e.g. \"Lattice <noreply@example.org>\"",
                self.email.from
            )));
        }
        if !matches!(self.policy.name.as_str(), "open" | "professional") {
            return Err(ConfigError(format!(
                "policy.name {:?} is unknown; expected \"open\" or \"professional\"",
                self.policy.name
            )));
        }
        if self.policy.max_group_size < 2 {
            return Err(ConfigError(format!(
                "policy.max_group_size must be at least 2 so that two people can talk, got {}",
                self.policy.max_group_size
            )));
        }
        let version = ruma::RoomVersionId::try_from(self.rooms.default_version.as_str())
            .map_err(|_| ConfigError("rooms.default_version is not a room version".into()))?;
        if !crate::rooms::version::is_supported(&version) {
            return Err(ConfigError(format!(
                "rooms.default_version {} is not supported by this server",
                self.rooms.default_version
            )));
        }
        if self.media.max_upload_size == 0 {
            return Err(ConfigError("media.max_upload_size must be above 0".into()));
        }
        if self.listen.federation.is_some()
            && (self.federation.tls_certificate.is_none() || self.federation.tls_private_key.is_none())
        {
            return Err(ConfigError(
                "listen.federation needs federation.tls_certificate and federation.tls_private_key".into(),
            ));
        }
        if self.federation.request_timeout_secs == 0 {
            return Err(ConfigError("federation.request_timeout_secs must be above 0".into()));
        }
        if self.federation.key_validity_ms < 60_000 {
            return Err(ConfigError("federation.key_validity_ms must be at least 60000 (one minute)".into()));
        }
        if self.federation.sender_retry_initial_ms == 0
            || self.federation.sender_retry_max_ms < self.federation.sender_retry_initial_ms
        {
            return Err(ConfigError(
                "federation.sender_retry_initial_ms must be above 0 and at most federation.sender_retry_max_ms".into(),
            ));
        }
        for (name, target) in &self.federation.host_overrides {
            if ruma::ServerName::parse(name).is_err() {
                return Err(ConfigError(format!("federation.host_overrides: {name:?} is not a server name")));
            }
            if !target.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok()) {
                return Err(ConfigError(format!("federation.host_overrides.{name:?}: {target:?} is not host:port")));
            }
        }
        if !self.web.element_url.starts_with("https://") && !self.web.element_url.starts_with("http://") {
            return Err(ConfigError(format!(
                "web.element_url {:?} must start with https:// or http://",
                self.web.element_url
            )));
        }
        if self.rate_limits.enabled && self.rate_limits.per_second <= 0.0 {
            return Err(ConfigError("rate_limits.per_second must be above 0".into()));
        }
        Ok(())
    }

    /// The database URL, with the SQLite default under `data_dir` filled in.
    pub fn database_url(&self) -> String {
        if self.database.url.is_empty() {
            format!("sqlite://{}/lattice.db", self.data_dir.display())
        } else {
            self.database.url.clone()
        }
    }
}

/// The commented default configuration printed by `lattice generate-config`.
pub const DEFAULT_CONFIG_TOML: &str = r#"# Lattice configuration. Every key can also be set by an environment variable:
# LATTICE_ followed by the key, with "__" between nested keys
# (for example LATTICE_LISTEN__CLIENT=0.0.0.0:8008).

# The domain in every user id and room alias, e.g. "example.org". Changing it
# later orphans every existing account and room.
server_name = "localhost"

# Directory for the default SQLite database (lattice.db, which also stores the
# server's signing key) and for uploaded media (media/).
data_dir = "./data"

# Base URL published to clients in /.well-known/matrix/client.
# public_baseurl = "https://matrix.example.org/"

# host:port published in /.well-known/matrix/server for federation.
# well_known_server = "matrix.example.org:443"

[listen]
# Plain-HTTP Client-Server listener. Put a TLS proxy in front of it for public use.
client = "127.0.0.1:8008"
# HTTPS Server-Server listener (needs federation.tls_certificate and
# federation.tls_private_key). Unset: none.
# federation = "0.0.0.0:8448"

[database]
# sqlite://PATH or postgres://USER@HOST/DB. Empty: sqlite under data_dir.
url = ""
# Maximum number of pooled read connections.
max_connections = 8

[registration]
# Whether anyone may create an account through /register.
enabled = true
# Registration tokens (m.login.registration_token); when set, one is required.
tokens = []

[rooms]
# Room version of new rooms when the client names none.
default_version = "12"

[rate_limits]
# Flood control per user (or per IP before login): 429 M_LIMIT_EXCEEDED.
enabled = true
per_second = 10.0
burst = 50

[limits]
# Maximum size of a JSON request body, in bytes.
max_request_body = 1048576

[directory]
# Search every local user, not only those sharing a room or in public rooms.
search_all_users = false

[policy]
# "open" is plain Matrix. "professional" lets people message only their
# connections, treats a new direct room with one invitee as a connection
# request, and enforces the limits below. The limits apply only to "professional".
name = "professional"
# Messages a requester may send before the invitee accepts the request.
pending_message_limit = 1
# Joined plus invited members of a room, at most.
max_group_size = 50
# Messages per user per UTC day (0: no limit).
daily_message_limit = 500
# Connection requests per user per week, from Monday 00:00 UTC (0: no limit).
weekly_connection_request_limit = 100
# Whether application service users are held to the daily and weekly limits.
limit_appservice_users = false

[media]
# Files are stored under data_dir/media. Maximum size of one upload, in bytes
# (50 MiB); larger uploads get 413 M_TOO_LARGE.
max_upload_size = 52428800
# Bytes of media each user may upload in total (0: no quota). An upload past
# the quota gets 403 M_USER_LIMIT_EXCEEDED.
per_user_quota = 0
# Answer the deprecated unauthenticated /_matrix/media/v3 download, thumbnail
# and config endpoints with 404 M_NOT_FOUND, so that clients must use the
# authenticated /_matrix/client/v1/media endpoints.
freeze_legacy = false
# Page that explains the quota, sent as info_uri with the quota error. Empty:
# public_baseurl, or https://<server_name>/ when that is unset.
quota_info_uri = ""

[federation]
# Certificate chain and private key (PEM) of the federation listener.
# tls_certificate = "/etc/lattice/fullchain.pem"
# tls_private_key = "/etc/lattice/privkey.pem"
# Extra certificate authorities (PEM) trusted for outbound federation.
# tls_ca_file = "/etc/lattice/federation-ca.pem"
# For tests only: accept any certificate on outbound federation requests.
insecure_skip_tls_verify_for_tests = false
# Timeout of one outbound federation request, in seconds.
request_timeout_secs = 30
# Validity of this server's published signing key, in milliseconds.
key_validity_ms = 86400000
# Backoff of the transaction sender after a failed delivery: the first retry
# waits sender_retry_initial_ms, each further failure doubles the delay, up to
# sender_retry_max_ms.
sender_retry_initial_ms = 5000
sender_retry_max_ms = 3600000

# Server name -> host:port, used instead of server discovery. For tests and
# private deployments; certificates must still match the server name.
[federation.host_overrides]
# "other.example.org" = "10.0.0.5:8448"

[web]
# Serve the "My Network" page (requests, connections, degrees and messaging
# metrics) at /_lattice/network/ on the client listener.
network_page = true
# Prefix of the page's "open conversation" links; the page appends the room id
# and ?via=<server_name>. For your own Element Web use
# "https://element.example.org/#/room/".
element_url = "https://matrix.to/#/"

[appservice]
# Application service (bridge) registration files, in YAML as bridges
# generate them. See docs/appservices.md.
registrations = []

[push]
# Whether push rules are evaluated for new events. When false, unread counts
# stay 0 and nothing is pushed or emailed.
enabled = true
# Seconds to wait for a push gateway's response before the attempt fails.
gateway_timeout_secs = 10
# Attempts to deliver one notification to a push gateway before it is dropped.
max_attempts = 8
# Delay before the first retry of a failed push, in milliseconds; each retry
# doubles it, up to retry_max_ms.
retry_initial_ms = 1000
retry_max_ms = 300000
# Oldest notification, in seconds, that the push gateway sender and the email
# notifier still deliver after a restart or an outage.
max_delivery_age_secs = 86400
# Seconds a push action is kept (30 days); older ones leave /notifications.
action_retention_secs = 2592000
# Seconds between two runs of the task that prunes push actions.
prune_interval_secs = 3600

[email]
# SMTP server for verification and notification emails. Empty: email is off.
smtp_host = ""
smtp_port = 587
# "starttls" (plain connection upgraded to TLS, required), "tls" (TLS from the
# start, usually port 465) or "plain" (no encryption: same machine only).
smtp_security = "starttls"
# SMTP credentials. Unset: no authentication.
# smtp_username = "lattice"
# smtp_password = "change-me"
# Sender of every email.
from = "Lattice <noreply@localhost>"
# Name of the service in email subjects and texts.
app_name = "Lattice"
# Seconds a message must stay unread before an email pusher sends a
# notification email.
notification_delay_secs = 600
# At most one notification email per user and room in this many seconds.
notification_period_secs = 3600
# Seconds a verification link stays valid.
token_lifetime_secs = 86400
# Attempts to send one email; the delay between attempts starts at 5 seconds
# and doubles.
max_attempts = 5
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_text_parses_to_defaults() {
        let parsed: Config = Figment::from(Toml::string(DEFAULT_CONFIG_TOML)).extract().unwrap();
        let defaults = Config::default();
        assert_eq!(parsed.server_name, defaults.server_name);
        assert_eq!(parsed.listen.client, defaults.listen.client);
        assert_eq!(parsed.rooms.default_version, defaults.rooms.default_version);
        assert_eq!(parsed.limits.max_request_body, defaults.limits.max_request_body);
        assert_eq!(parsed.policy.name, defaults.policy.name);
        assert_eq!(parsed.policy.pending_message_limit, defaults.policy.pending_message_limit);
        assert_eq!(parsed.policy.max_group_size, defaults.policy.max_group_size);
        assert_eq!(parsed.policy.daily_message_limit, defaults.policy.daily_message_limit);
        assert_eq!(parsed.policy.weekly_connection_request_limit, defaults.policy.weekly_connection_request_limit);
        assert_eq!(parsed.policy.limit_appservice_users, defaults.policy.limit_appservice_users);
        assert_eq!(parsed.media.max_upload_size, defaults.media.max_upload_size);
        assert_eq!(parsed.media.per_user_quota, defaults.media.per_user_quota);
        assert_eq!(parsed.media.freeze_legacy, defaults.media.freeze_legacy);
        assert_eq!(parsed.media.quota_info_uri, defaults.media.quota_info_uri);
        assert_eq!(parsed.listen.federation, defaults.listen.federation);
        assert_eq!(
            parsed.federation.insecure_skip_tls_verify_for_tests,
            defaults.federation.insecure_skip_tls_verify_for_tests
        );
        assert_eq!(parsed.federation.request_timeout_secs, defaults.federation.request_timeout_secs);
        assert_eq!(parsed.federation.key_validity_ms, defaults.federation.key_validity_ms);
        assert_eq!(parsed.federation.sender_retry_initial_ms, defaults.federation.sender_retry_initial_ms);
        assert_eq!(parsed.federation.sender_retry_max_ms, defaults.federation.sender_retry_max_ms);
        assert!(parsed.federation.host_overrides.is_empty());
        assert_eq!(parsed.web.network_page, defaults.web.network_page);
        assert_eq!(parsed.web.element_url, defaults.web.element_url);
        assert_eq!(parsed.appservice.registrations, defaults.appservice.registrations);
        assert_eq!(parsed.push.enabled, defaults.push.enabled);
        assert_eq!(parsed.push.gateway_timeout_secs, defaults.push.gateway_timeout_secs);
        assert_eq!(parsed.push.max_attempts, defaults.push.max_attempts);
        assert_eq!(parsed.push.retry_initial_ms, defaults.push.retry_initial_ms);
        assert_eq!(parsed.push.retry_max_ms, defaults.push.retry_max_ms);
        assert_eq!(parsed.push.max_delivery_age_secs, defaults.push.max_delivery_age_secs);
        assert_eq!(parsed.push.action_retention_secs, defaults.push.action_retention_secs);
        assert_eq!(parsed.push.prune_interval_secs, defaults.push.prune_interval_secs);
        assert_eq!(parsed.email.smtp_host, defaults.email.smtp_host);
        assert_eq!(parsed.email.smtp_port, defaults.email.smtp_port);
        assert_eq!(parsed.email.smtp_security, defaults.email.smtp_security);
        assert_eq!(parsed.email.smtp_username, defaults.email.smtp_username);
        assert_eq!(parsed.email.smtp_password, defaults.email.smtp_password);
        assert_eq!(parsed.email.from, defaults.email.from);
        assert_eq!(parsed.email.app_name, defaults.email.app_name);
        assert_eq!(parsed.email.notification_delay_secs, defaults.email.notification_delay_secs);
        assert_eq!(parsed.email.notification_period_secs, defaults.email.notification_period_secs);
        assert_eq!(parsed.email.token_lifetime_secs, defaults.email.token_lifetime_secs);
        assert_eq!(parsed.email.max_attempts, defaults.email.max_attempts);
    }

    #[test]
    fn config_text_has_push_and_email() {
        let lines: Vec<&str> = DEFAULT_CONFIG_TOML.lines().collect();
        assert!(lines.contains(&"[push]"));
        assert!(lines.contains(&"[email]"));
    }
}

impl ConfigError {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}
