//! Request authentication of the Server-Server API: the `X-Matrix`
//! `Authorization` header (spec: Server-Server API, "Request Authentication").
//!
//! The signed object is `{method, uri, origin, destination, content}`, signed
//! with the JSON signing algorithm; the header carries the origin, the
//! destination, the key id and the signature.

use base64::{Engine, engine::general_purpose::STANDARD_NO_PAD};
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedServerName, ServerName,
    signatures::{Ed25519KeyPair, KeyPair, SigningKeyAlgorithm, verify_canonical_json_bytes},
};

use super::Federation;

impl Federation {
    /// Verifies one `X-Matrix` header of an inbound request and returns the
    /// origin. The error is the message of the 401 response.
    pub async fn verify_request(
        &self,
        header: &XMatrix,
        method: &str,
        uri: &str,
        content: Option<CanonicalJsonValue>,
    ) -> Result<OwnedServerName, String> {
        let origin = ServerName::parse(&header.origin)
            .map_err(|_| format!("origin {:?} is not a server name", header.origin))?;
        if let Some(destination) = &header.destination
            && destination != self.inner.server_name.as_str()
        {
            return Err(format!("the request is addressed to {destination}, not to {}", self.inner.server_name));
        }
        if !header.key.starts_with("ed25519:") {
            return Err(format!("key {:?} is not an ed25519 key", header.key));
        }
        let signature = STANDARD_NO_PAD
            .decode(header.sig.trim_end_matches('='))
            .map_err(|_| "sig is not unpadded base64".to_owned())?;
        let public_key = self
            .verify_key(&origin, &header.key)
            .await
            .map_err(|e| format!("cannot check the signature of {origin}: {e}"))?;
        let object = request_object(method, uri, origin.as_str(), header.destination.as_deref(), content);
        let canonical = ruma::signatures::to_canonical_json_string_for_signing(&object).map_err(|e| e.to_string())?;
        verify_canonical_json_bytes(&SigningKeyAlgorithm::Ed25519, &public_key, &signature, canonical.as_bytes())
            .map_err(|_| format!("the signature by {} of {origin} does not match the request", header.key))?;
        Ok(origin)
    }
}

/// The parameters of one `X-Matrix` authorization header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XMatrix {
    pub origin: String,
    /// Absent in requests from servers older than spec v1.3.
    pub destination: Option<String>,
    pub key: String,
    pub sig: String,
}

/// An `Authorization` header that is not a usable `X-Matrix` header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("the Authorization header does not use the X-Matrix scheme")]
    NotXMatrix,
    #[error("the X-Matrix header is malformed: {0}")]
    Malformed(String),
    #[error("the X-Matrix header has no {0} parameter")]
    Missing(&'static str),
}

impl XMatrix {
    /// Parses a header value as RFC 9110 credentials: the scheme, then
    /// comma-separated `name=value` pairs whose values may be quoted with
    /// backslash escapes. Names are case-insensitive; unknown ones are ignored.
    pub fn parse(value: &str) -> Result<Self, ParseError> {
        let (scheme, params) = value.trim().split_once([' ', '\t']).ok_or(ParseError::NotXMatrix)?;
        if !scheme.eq_ignore_ascii_case("X-Matrix") {
            return Err(ParseError::NotXMatrix);
        }
        let (mut origin, mut destination, mut key, mut sig) = (None, None, None, None);
        let mut rest = params.trim_start_matches([' ', '\t']);
        while !rest.is_empty() {
            let (name, after) = rest
                .split_once('=')
                .ok_or_else(|| ParseError::Malformed(format!("expected name=value at {rest:?}")))?;
            let name = name.trim_matches([' ', '\t']).to_ascii_lowercase();
            let after = after.trim_start_matches([' ', '\t']);
            let (value, remainder) = if let Some(quoted) = after.strip_prefix('"') {
                let mut value = String::new();
                let mut chars = quoted.char_indices();
                let mut end = None;
                while let Some((index, c)) = chars.next() {
                    match c {
                        '\\' => match chars.next() {
                            Some((_, escaped)) => value.push(escaped),
                            None => break,
                        },
                        '"' => {
                            end = Some(index + 1);
                            break;
                        }
                        other => value.push(other),
                    }
                }
                let end = end.ok_or_else(|| ParseError::Malformed(format!("unterminated quoted value of {name}")))?;
                (value, &quoted[end..])
            } else {
                // Unquoted: a token, though colons are allowed for older senders.
                let end = after.find(',').unwrap_or(after.len());
                (after[..end].trim_end_matches([' ', '\t']).to_owned(), &after[end..])
            };
            let remainder = remainder.trim_start_matches([' ', '\t']);
            rest = match remainder.strip_prefix(',') {
                Some(next) => next.trim_start_matches([' ', '\t']),
                None if remainder.is_empty() => "",
                None => {
                    return Err(ParseError::Malformed(format!("expected a comma before {remainder:?}")));
                }
            };
            match name.as_str() {
                "origin" => origin = Some(value),
                "destination" => destination = Some(value),
                "key" => key = Some(value),
                "sig" => sig = Some(value),
                _ => {}
            }
        }
        Ok(Self {
            origin: origin.ok_or(ParseError::Missing("origin"))?,
            destination,
            key: key.ok_or(ParseError::Missing("key"))?,
            sig: sig.ok_or(ParseError::Missing("sig"))?,
        })
    }

    /// Formats the header value as the spec recommends for senders: lower-case
    /// names, one space after the scheme, no whitespace around commas.
    pub fn to_header_value(&self) -> String {
        format!(
            "X-Matrix origin=\"{}\",destination=\"{}\",key=\"{}\",sig=\"{}\"",
            self.origin,
            self.destination.as_deref().unwrap_or_default(),
            self.key,
            self.sig
        )
    }
}

/// Builds the object whose signature authenticates a request.
pub fn request_object(
    method: &str,
    uri: &str,
    origin: &str,
    destination: Option<&str>,
    content: Option<CanonicalJsonValue>,
) -> CanonicalJsonObject {
    let mut object = CanonicalJsonObject::new();
    object.insert("method".into(), CanonicalJsonValue::String(method.to_owned()));
    object.insert("uri".into(), CanonicalJsonValue::String(uri.to_owned()));
    object.insert("origin".into(), CanonicalJsonValue::String(origin.to_owned()));
    if let Some(destination) = destination {
        object.insert("destination".into(), CanonicalJsonValue::String(destination.to_owned()));
    }
    if let Some(content) = content {
        object.insert("content".into(), content);
    }
    object
}

/// Signs a request and returns its `Authorization` header value. `uri` is the
/// path with the query string, as sent.
pub fn authorization_header(
    key: &Ed25519KeyPair,
    origin: &str,
    destination: &str,
    method: &str,
    uri: &str,
    content: Option<CanonicalJsonValue>,
) -> Result<String, ruma::signatures::JsonError> {
    let object = request_object(method, uri, origin, Some(destination), content);
    let canonical = ruma::signatures::to_canonical_json_string_for_signing(&object)?;
    let signature = key.sign(canonical.as_bytes());
    let header = XMatrix {
        origin: origin.to_owned(),
        destination: Some(destination.to_owned()),
        key: signature.id(),
        sig: signature.base64(),
    };
    Ok(header.to_header_value())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_spec_example() {
        let header = XMatrix::parse(
            r#"X-Matrix origin="origin.hs.example.com",destination="destination.hs.example.com",key="ed25519:key1",sig="ABCDEF...""#,
        )
        .unwrap();
        assert_eq!(header.origin, "origin.hs.example.com");
        assert_eq!(header.destination.as_deref(), Some("destination.hs.example.com"));
        assert_eq!(header.key, "ed25519:key1");
        assert_eq!(header.sig, "ABCDEF...");
    }

    #[test]
    fn parses_unquoted_values_spaces_case_and_escapes() {
        let header =
            XMatrix::parse("x-matrix  Origin=old.example.org:8448 , KEY=\"ed25519:a\\\"b\",sig=abc,extra=\"x,y\"")
                .unwrap();
        assert_eq!(header.origin, "old.example.org:8448");
        assert_eq!(header.destination, None);
        assert_eq!(header.key, "ed25519:a\"b");
        assert_eq!(header.sig, "abc");
    }

    #[test]
    fn rejects_other_schemes_and_missing_parameters() {
        assert_eq!(XMatrix::parse("Bearer abc"), Err(ParseError::NotXMatrix));
        assert_eq!(XMatrix::parse("X-Matrix origin=a,key=b"), Err(ParseError::Missing("sig")));
        assert!(matches!(XMatrix::parse("X-Matrix origin=\"a"), Err(ParseError::Malformed(_))));
    }
}
