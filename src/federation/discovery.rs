//! Server discovery (spec: Server-Server API, "Resolving server names"): from
//! a server name to the address to connect to, the name its certificate must
//! carry, and the `Host` header. Results are cached.

use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, SocketAddr},
    sync::Mutex,
    time::{Duration, Instant},
};

use hickory_resolver::TokioResolver;
use serde::Deserialize;

/// The port of a server name without one, and of a delegation without one.
pub const DEFAULT_PORT: u16 = 8448;

/// How long a resolved destination is reused.
const DESTINATION_TTL: Duration = Duration::from_secs(60 * 60);
/// Caching of `/.well-known/matrix/server`: the spec's recommended default,
/// maximum, and time for failures.
const WELL_KNOWN_DEFAULT_TTL: Duration = Duration::from_secs(24 * 60 * 60);
const WELL_KNOWN_MAX_TTL: Duration = Duration::from_secs(48 * 60 * 60);
const WELL_KNOWN_ERROR_TTL: Duration = Duration::from_secs(60 * 60);
/// Largest `/.well-known/matrix/server` body read.
const WELL_KNOWN_MAX_BYTES: usize = 64 * 1024;

/// The address, certificate name and `Host` header for reaching a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// The host of the request URL: the name the TLS certificate must carry
    /// (sent as SNI unless it is an IP address).
    pub tls_host: String,
    pub port: u16,
    /// The `Host` header of requests.
    pub host_header: String,
    /// Addresses to connect to instead of resolving `tls_host` (SRV targets
    /// and host overrides); empty means ordinary A/AAAA resolution.
    pub addrs: Vec<SocketAddr>,
}

impl Destination {
    /// `https://host:port` with IPv6 literals bracketed.
    pub fn base_url(&self) -> String {
        match self.tls_host.parse::<IpAddr>() {
            Ok(IpAddr::V6(ip)) => format!("https://[{ip}]:{}", self.port),
            _ => format!("https://{}:{}", self.tls_host, self.port),
        }
    }
}

/// A failure to resolve a server name.
#[derive(Debug, thiserror::Error)]
#[error("could not resolve {server_name}: {reason}")]
pub struct ResolveError {
    pub server_name: String,
    pub reason: String,
}

#[derive(Deserialize)]
struct WellKnown {
    #[serde(rename = "m.server")]
    server: String,
}

pub struct Discovery {
    overrides: BTreeMap<String, String>,
    resolver: Option<TokioResolver>,
    /// Fetches `/.well-known/matrix/server`.
    http: reqwest::Client,
    destinations: Mutex<HashMap<String, (Destination, Instant)>>,
    well_known: Mutex<HashMap<String, (Option<String>, Instant)>>,
}

/// Splits a server name (or delegated name) into host and optional port,
/// keeping IPv6 literals without their brackets.
pub fn split_host_port(name: &str) -> Option<(String, Option<u16>)> {
    if let Some(rest) = name.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        ip.parse::<std::net::Ipv6Addr>().ok()?;
        return match after.strip_prefix(':') {
            Some(port) => Some((ip.to_owned(), Some(port.parse().ok()?))),
            None if after.is_empty() => Some((ip.to_owned(), None)),
            None => None,
        };
    }
    match name.rsplit_once(':') {
        Some((host, port)) => Some((host.to_owned(), Some(port.parse().ok()?))),
        None if !name.is_empty() => Some((name.to_owned(), None)),
        None => None,
    }
}

impl Discovery {
    pub fn new(overrides: BTreeMap<String, String>, http: reqwest::Client) -> Self {
        let resolver = match TokioResolver::builder_tokio() {
            Ok(builder) => Some(builder.build()),
            Err(err) => {
                tracing::warn!(error = %err, "no DNS configuration: SRV lookups for server discovery are off");
                None
            }
        };
        Self {
            overrides,
            resolver,
            http,
            destinations: Mutex::new(HashMap::new()),
            well_known: Mutex::new(HashMap::new()),
        }
    }

    /// Resolves `server_name`, from the cache when a recent result exists.
    pub async fn resolve(&self, server_name: &str) -> Result<Destination, ResolveError> {
        if let Some((destination, expires)) = self.destinations.lock().expect("lock").get(server_name)
            && *expires > Instant::now()
        {
            return Ok(destination.clone());
        }
        let destination = self.resolve_uncached(server_name).await?;
        tracing::debug!(server_name, host = %destination.tls_host, port = destination.port, "resolved server name");
        self.destinations
            .lock()
            .expect("lock")
            .insert(server_name.to_owned(), (destination.clone(), Instant::now() + DESTINATION_TTL));
        Ok(destination)
    }

    /// Forgets the cached destination of `server_name`, after a connection failure.
    pub fn forget(&self, server_name: &str) {
        self.destinations.lock().expect("lock").remove(server_name);
    }

    async fn resolve_uncached(&self, server_name: &str) -> Result<Destination, ResolveError> {
        let fail = |reason: String| ResolveError { server_name: server_name.to_owned(), reason };
        let (host, port) = split_host_port(server_name).ok_or_else(|| fail("not a valid server name".into()))?;

        // Configured overrides, for tests and private deployments.
        if let Some(target) = self.overrides.get(server_name) {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host(target.as_str())
                .await
                .map_err(|e| fail(format!("host override {target}: {e}")))?
                .collect();
            let port = addrs.first().map(SocketAddr::port).unwrap_or(DEFAULT_PORT);
            return Ok(Destination { tls_host: host, port, host_header: server_name.to_owned(), addrs });
        }

        // 1. An IP literal, with its port or 8448.
        // 2. A hostname with an explicit port.
        if host.parse::<IpAddr>().is_ok() || port.is_some() {
            return Ok(Destination {
                tls_host: host,
                port: port.unwrap_or(DEFAULT_PORT),
                host_header: server_name.to_owned(),
                addrs: Vec::new(),
            });
        }

        // 3. /.well-known/matrix/server delegates to another name.
        if let Some(delegated) = self.well_known(&host).await {
            let Some((delegated_host, delegated_port)) = split_host_port(&delegated) else {
                return Err(fail(format!("/.well-known/matrix/server names an invalid server {delegated:?}")));
            };
            // 3.1 and 3.2: an IP literal or an explicit port.
            if delegated_host.parse::<IpAddr>().is_ok() || delegated_port.is_some() {
                return Ok(Destination {
                    tls_host: delegated_host,
                    port: delegated_port.unwrap_or(DEFAULT_PORT),
                    host_header: delegated,
                    addrs: Vec::new(),
                });
            }
            // 3.3 and 3.4: SRV records of the delegated name.
            if let Some((port, addrs)) = self.srv(&delegated_host).await {
                return Ok(Destination { tls_host: delegated_host.clone(), port, host_header: delegated_host, addrs });
            }
            // 3.5: the delegated name on port 8448.
            return Ok(Destination {
                tls_host: delegated_host.clone(),
                port: DEFAULT_PORT,
                host_header: delegated_host,
                addrs: Vec::new(),
            });
        }

        // 4 and 5: SRV records of the server name itself.
        if let Some((port, addrs)) = self.srv(&host).await {
            return Ok(Destination { tls_host: host.clone(), port, host_header: host, addrs });
        }
        // 6: the hostname on port 8448.
        Ok(Destination { tls_host: host.clone(), port: DEFAULT_PORT, host_header: host, addrs: Vec::new() })
    }

    /// Fetches the `m.server` of `https://host/.well-known/matrix/server`, cached
    /// (failures too) for the time the spec recommends.
    async fn well_known(&self, host: &str) -> Option<String> {
        if let Some((answer, expires)) = self.well_known.lock().expect("lock").get(host)
            && *expires > Instant::now()
        {
            return answer.clone();
        }
        let (answer, ttl) = match self.fetch_well_known(host).await {
            Ok((server, ttl)) => (Some(server), ttl),
            Err(reason) => {
                tracing::debug!(host, reason, "no usable /.well-known/matrix/server");
                (None, WELL_KNOWN_ERROR_TTL)
            }
        };
        self.well_known.lock().expect("lock").insert(host.to_owned(), (answer.clone(), Instant::now() + ttl));
        answer
    }

    async fn fetch_well_known(&self, host: &str) -> Result<(String, Duration), String> {
        let url = format!("https://{host}/.well-known/matrix/server");
        let response = self.http.get(&url).send().await.map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("status {}", response.status()));
        }
        let ttl = response
            .headers()
            .get(http::header::CACHE_CONTROL)
            .and_then(|value| value.to_str().ok())
            .and_then(max_age)
            .unwrap_or(WELL_KNOWN_DEFAULT_TTL)
            .min(WELL_KNOWN_MAX_TTL);
        let body = read_limited(response, WELL_KNOWN_MAX_BYTES).await?;
        let parsed: WellKnown = serde_json::from_slice(&body).map_err(|e| format!("invalid JSON: {e}"))?;
        Ok((parsed.server, ttl))
    }

    /// Looks up `_matrix-fed._tcp.<host>`, then the deprecated `_matrix._tcp.<host>`,
    /// and returns the port and addresses of the first target that resolves.
    async fn srv(&self, host: &str) -> Option<(u16, Vec<SocketAddr>)> {
        let resolver = self.resolver.as_ref()?;
        for service in ["_matrix-fed._tcp", "_matrix._tcp"] {
            let Ok(lookup) = resolver.srv_lookup(format!("{service}.{host}.")).await else {
                continue;
            };
            let mut records: Vec<_> = lookup.iter().cloned().collect();
            records.sort_by_key(|record| (record.priority(), std::cmp::Reverse(record.weight())));
            for record in records {
                let target = record.target().to_utf8();
                let Ok(ips) = resolver.lookup_ip(target.as_str()).await else {
                    continue;
                };
                let addrs: Vec<SocketAddr> = ips.iter().map(|ip| SocketAddr::new(ip, record.port())).collect();
                if !addrs.is_empty() {
                    return Some((record.port(), addrs));
                }
            }
        }
        None
    }
}

/// Parses the `max-age` of a `Cache-Control` header.
fn max_age(value: &str) -> Option<Duration> {
    value.split(',').find_map(|directive| {
        let (name, seconds) = directive.trim().split_once('=')?;
        name.eq_ignore_ascii_case("max-age").then(|| seconds.trim().parse().ok().map(Duration::from_secs))?
    })
}

/// Reads a response body, failing once it passes `limit` bytes.
pub async fn read_limited(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > limit {
            return Err(format!("response body larger than {limit} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_server_names() {
        assert_eq!(split_host_port("example.org"), Some(("example.org".into(), None)));
        assert_eq!(split_host_port("example.org:8080"), Some(("example.org".into(), Some(8080))));
        assert_eq!(split_host_port("1.2.3.4:1"), Some(("1.2.3.4".into(), Some(1))));
        assert_eq!(split_host_port("[::1]:8448"), Some(("::1".into(), Some(8448))));
        assert_eq!(split_host_port("[::1]"), Some(("::1".into(), None)));
        assert_eq!(split_host_port("example.org:port"), None);
    }

    #[test]
    fn reads_max_age() {
        assert_eq!(max_age("public, max-age=600"), Some(Duration::from_secs(600)));
        assert_eq!(max_age("no-store"), None);
    }

    #[tokio::test]
    async fn ip_literals_and_ports_skip_lookups() {
        let discovery = Discovery::new(BTreeMap::new(), reqwest::Client::new());
        let ip = discovery.resolve("127.0.0.1").await.unwrap();
        assert_eq!((ip.tls_host.as_str(), ip.port, ip.host_header.as_str()), ("127.0.0.1", 8448, "127.0.0.1"));
        let v6 = discovery.resolve("[::1]:9000").await.unwrap();
        assert_eq!(v6.base_url(), "https://[::1]:9000");
        assert_eq!(v6.host_header, "[::1]:9000");
        let named = discovery.resolve("matrix.invalid:8443").await.unwrap();
        assert_eq!((named.tls_host.as_str(), named.port), ("matrix.invalid", 8443));
        assert!(named.addrs.is_empty());
    }

    #[tokio::test]
    async fn overrides_replace_discovery() {
        let overrides = BTreeMap::from([("b.example".to_owned(), "127.0.0.1:4567".to_owned())]);
        let discovery = Discovery::new(overrides, reqwest::Client::new());
        let destination = discovery.resolve("b.example").await.unwrap();
        assert_eq!(destination.tls_host, "b.example");
        assert_eq!(destination.port, 4567);
        assert_eq!(destination.host_header, "b.example");
        assert_eq!(destination.addrs, vec![SocketAddr::from(([127, 0, 0, 1], 4567))]);
    }
}
