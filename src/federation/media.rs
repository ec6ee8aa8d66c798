//! Federation media (spec: Server-Server API, "Content Repository"): the
//! `multipart/mixed` response of `/_matrix/federation/v1/media/download` and
//! `/thumbnail`, built for other servers and read from them.

use bytes::Bytes;
use http::{Method, header};
use ruma::ServerName;

use super::{Federation, FederationError, check_status, discovery::read_limited};

/// Remote media content read from a federation media response.
#[derive(Debug)]
pub struct RemoteContent {
    pub content_type: String,
    pub filename: Option<String>,
    pub bytes: Bytes,
}

/// Formats the opening of a federation media response: the boundary, the JSON
/// metadata part, and the headers of the content part. The content and [`closing`]
/// follow it.
pub fn opening(boundary: &str, content_type: &str, content_disposition: &str) -> String {
    format!(
        "--{boundary}\r\nContent-Type: application/json\r\n\r\n{{}}\r\n--{boundary}\r\nContent-Type: {content_type}\r\nContent-Disposition: {content_disposition}\r\n\r\n"
    )
}

/// Formats the closing delimiter of a federation media response.
pub fn closing(boundary: &str) -> String {
    format!("\r\n--{boundary}--\r\n")
}

impl Federation {
    /// Downloads media (or a thumbnail) from `origin` over federation. `path`
    /// is the federation media path with its query; answers larger than
    /// `max_size` bytes are refused.
    #[tracing::instrument(skip(self), fields(origin = %origin))]
    pub async fn fetch_media(
        &self,
        origin: &ServerName,
        path: &str,
        max_size: u64,
    ) -> Result<RemoteContent, FederationError> {
        let bad = |reason: String| FederationError::BadResponse { server_name: origin.to_string(), reason };
        let response = self.send(origin, Method::GET, path, None, true).await?;
        let response = check_status(origin, response).await?;
        let content_type = header_text(response.headers(), header::CONTENT_TYPE);
        let boundary = boundary(&content_type)
            .ok_or_else(|| bad(format!("expected a multipart/mixed answer, got {content_type:?}")))?;
        // The JSON part and the part headers come on top of the content.
        let limit = usize::try_from(max_size).unwrap_or(usize::MAX).saturating_add(64 * 1024);
        let body = read_limited(response, limit).await.map_err(bad)?;
        let parts = split_multipart(&body, &boundary).ok_or_else(|| bad("malformed multipart body".into()))?;
        let [_metadata, content, ..] = parts.as_slice() else {
            return Err(bad("the multipart body has fewer than two parts".into()));
        };
        let (headers, bytes) = content;
        if let Some(location) = find_header(headers, "location") {
            return self.fetch_location(origin, &location, limit).await;
        }
        Ok(RemoteContent {
            content_type: find_header(headers, "content-type").unwrap_or_else(|| "application/octet-stream".into()),
            filename: find_header(headers, "content-disposition").as_deref().and_then(disposition_filename),
            bytes: Bytes::copy_from_slice(bytes),
        })
    }

    /// Downloads media from `origin` through its unauthenticated
    /// `/_matrix/media/v3` endpoint (`path` with its query), for servers that
    /// do not serve the federation media endpoints yet.
    pub async fn fetch_media_legacy(
        &self,
        origin: &ServerName,
        path: &str,
        max_size: u64,
    ) -> Result<RemoteContent, FederationError> {
        let bad = |reason: String| FederationError::BadResponse { server_name: origin.to_string(), reason };
        let response = self.send(origin, Method::GET, path, None, false).await?;
        let response = check_status(origin, response).await?;
        let content_type = header_text(response.headers(), header::CONTENT_TYPE);
        let disposition = header_text(response.headers(), header::CONTENT_DISPOSITION);
        let limit = usize::try_from(max_size).unwrap_or(usize::MAX);
        let bytes = read_limited(response, limit).await.map_err(bad)?;
        Ok(RemoteContent {
            content_type: if content_type.is_empty() { "application/octet-stream".into() } else { content_type },
            filename: disposition_filename(&disposition),
            bytes: Bytes::from(bytes),
        })
    }

    /// Follows the `Location` that a content part may give instead of content.
    async fn fetch_location(
        &self,
        origin: &ServerName,
        location: &str,
        limit: usize,
    ) -> Result<RemoteContent, FederationError> {
        let bad = |reason: String| FederationError::BadResponse { server_name: origin.to_string(), reason };
        let url = url::Url::parse(location).map_err(|e| bad(format!("invalid Location {location:?}: {e}")))?;
        if url.scheme() != "https" {
            return Err(bad("the Location of the media is not an https URL".into()));
        }
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(self.inner.tls.clone())
            .timeout(std::time::Duration::from_secs(self.inner.config.request_timeout_secs))
            .redirect(reqwest::redirect::Policy::limited(5))
            .build()
            .map_err(|e| bad(e.to_string()))?;
        let response = client.get(url).send().await.map_err(|e| FederationError::Unreachable {
            server_name: origin.to_string(),
            reason: format!("media Location: {e}"),
        })?;
        let response = check_status(origin, response).await?;
        let content_type = header_text(response.headers(), header::CONTENT_TYPE);
        let disposition = header_text(response.headers(), header::CONTENT_DISPOSITION);
        let bytes = read_limited(response, limit).await.map_err(bad)?;
        Ok(RemoteContent {
            content_type: if content_type.is_empty() { "application/octet-stream".into() } else { content_type },
            filename: disposition_filename(&disposition),
            bytes: Bytes::from(bytes),
        })
    }
}

fn header_text(headers: &http::HeaderMap, name: header::HeaderName) -> String {
    headers.get(name).and_then(|value| value.to_str().ok()).unwrap_or_default().to_owned()
}

/// Parses the boundary parameter of a `multipart/mixed` content type.
pub fn boundary(content_type: &str) -> Option<String> {
    let mut params = content_type.split(';');
    if !params.next()?.trim().eq_ignore_ascii_case("multipart/mixed") {
        return None;
    }
    params.find_map(|param| {
        let (name, value) = param.trim().split_once('=')?;
        name.trim().eq_ignore_ascii_case("boundary").then(|| value.trim().trim_matches('"').to_owned())
    })
}

type Part<'a> = (Vec<(String, String)>, &'a [u8]);

/// Splits a multipart body (RFC 2046) into parts: headers (lower-case names)
/// and body bytes. `None` when the delimiters are malformed.
pub fn split_multipart<'a>(body: &'a [u8], boundary: &str) -> Option<Vec<Part<'a>>> {
    let delimiter = format!("--{boundary}");
    let inner_delimiter = format!("\r\n--{boundary}");
    let mut position = find(body, delimiter.as_bytes())? + delimiter.len();
    let mut parts = Vec::new();
    loop {
        let rest = &body[position..];
        if rest.starts_with(b"--") {
            return Some(parts);
        }
        // Transport padding, then the line break after the delimiter.
        let line_end = find(rest, b"\r\n")?;
        let start = position + line_end + 2;
        let length = find(&body[start..], inner_delimiter.as_bytes())?;
        let part = &body[start..start + length];
        let (head, content) = if part.starts_with(b"\r\n") {
            (&part[..0], &part[2..])
        } else {
            let split = find(part, b"\r\n\r\n")?;
            (&part[..split], &part[split + 4..])
        };
        let headers = std::str::from_utf8(head)
            .ok()?
            .split("\r\n")
            .filter_map(|line| {
                let (name, value) = line.split_once(':')?;
                Some((name.trim().to_ascii_lowercase(), value.trim().to_owned()))
            })
            .collect();
        parts.push((headers, content));
        position = start + length + inner_delimiter.len();
    }
}

fn find_header(headers: &[(String, String)], name: &str) -> Option<String> {
    headers.iter().find(|(key, _)| key == name).map(|(_, value)| value.clone())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

/// Parses the file name of a `Content-Disposition` value: `filename*=utf-8''…`
/// (percent-decoded) when present, else `filename="…"`.
pub fn disposition_filename(value: &str) -> Option<String> {
    let mut plain = None;
    for param in value.split(';').skip(1) {
        let Some((name, raw)) = param.trim().split_once('=') else {
            continue;
        };
        match name.trim().to_ascii_lowercase().as_str() {
            "filename*" => {
                let encoded = raw.trim();
                let (charset, rest) = encoded.split_once('\'')?;
                let (_, text) = rest.split_once('\'')?;
                if charset.eq_ignore_ascii_case("utf-8") {
                    return percent_encoding::percent_decode_str(text).decode_utf8().ok().map(|name| name.into_owned());
                }
            }
            "filename" => plain = Some(raw.trim().trim_matches('"').to_owned()),
            _ => {}
        }
    }
    plain.filter(|name| !name.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_answers_split_back() {
        let mut body = opening("xyz", "image/png", "inline; filename=\"a.png\"").into_bytes();
        body.extend_from_slice(b"\x89PNG\r\n--not-a-delimiter");
        body.extend_from_slice(closing("xyz").as_bytes());
        let parts = split_multipart(&body, "xyz").unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].1, b"{}");
        assert_eq!(find_header(&parts[1].0, "content-type").as_deref(), Some("image/png"));
        assert_eq!(parts[1].1, b"\x89PNG\r\n--not-a-delimiter");
    }

    #[test]
    fn reads_boundaries_and_filenames() {
        assert_eq!(boundary("multipart/mixed; boundary=\"abc\"").as_deref(), Some("abc"));
        assert_eq!(boundary("application/json"), None);
        assert_eq!(disposition_filename("attachment; filename=\"cat.png\"").as_deref(), Some("cat.png"));
        assert_eq!(
            disposition_filename("inline; filename*=utf-8''r%C3%A9sum%C3%A9.pdf").as_deref(),
            Some("résumé.pdf")
        );
        assert_eq!(disposition_filename("inline"), None);
    }

    #[test]
    fn parts_without_headers_and_with_location() {
        let body = b"preamble\r\n--b\r\n\r\n{}\r\n--b\r\nLocation: https://cdn.example/x\r\n\r\n\r\n--b--";
        let parts = split_multipart(body, "b").unwrap();
        assert_eq!(parts[0].1, b"{}");
        assert_eq!(find_header(&parts[1].0, "location").as_deref(), Some("https://cdn.example/x"));
    }
}
