//! Registration files: the YAML that bridges generate and the operator lists
//! in `appservice.registrations` (spec: Application Service API, "Registration").

use std::path::Path;

use ruma::{OwnedUserId, ServerName, UserId};
use serde::Deserialize;

use super::namespace::{Namespace, NamespaceError};

/// A registration file as written on disk. Unknown keys (bridges add their own,
/// such as `de.sorunome.msc2409.push_ephemeral`) are ignored.
#[derive(Deserialize)]
pub struct RegistrationFile {
    pub id: String,
    /// `null` means the application service receives no traffic.
    pub url: Option<String>,
    pub as_token: String,
    pub hs_token: String,
    pub sender_localpart: String,
    pub namespaces: NamespacesFile,
    /// Whether requests from masqueraded users are rate-limited; the sender never is.
    /// The spec gives no default; like Synapse, a missing key means `true`.
    pub rate_limited: Option<bool>,
    #[serde(default)]
    pub protocols: Vec<String>,
    #[serde(default)]
    pub receive_ephemeral: bool,
    /// The unstable name of `receive_ephemeral` that older bridges write.
    #[serde(default, rename = "de.sorunome.msc2409.push_ephemeral")]
    pub push_ephemeral_unstable: bool,
}

#[derive(Deserialize, Default)]
pub struct NamespacesFile {
    #[serde(default, deserialize_with = "null_as_empty")]
    pub users: Vec<NamespaceFile>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub aliases: Vec<NamespaceFile>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub rooms: Vec<NamespaceFile>,
}

#[derive(Deserialize)]
pub struct NamespaceFile {
    pub exclusive: bool,
    pub regex: String,
}

/// Bridges write `rooms: []` or leave the list out, and some write `rooms:` with no value.
fn null_as_empty<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<NamespaceFile>, D::Error> {
    Ok(Option::<Vec<NamespaceFile>>::deserialize(deserializer)?.unwrap_or_default())
}

/// A registration that failed to load: the file and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("application service registration {path}: {message}")]
pub struct RegistrationError {
    pub path: String,
    pub message: String,
}

/// A loaded, checked registration.
pub struct Registration {
    pub id: String,
    pub url: Option<url::Url>,
    pub as_token: String,
    pub hs_token: String,
    pub sender: OwnedUserId,
    pub users: Vec<Namespace>,
    pub aliases: Vec<Namespace>,
    pub rooms: Vec<Namespace>,
    pub rate_limited: bool,
    pub protocols: Vec<String>,
    pub receive_ephemeral: bool,
    /// The file it was loaded from, for error messages.
    pub path: String,
}

/// Tokens stay out of logs and debug output.
impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("id", &self.id)
            .field("url", &self.url.as_ref().map(url::Url::as_str))
            .field("sender", &self.sender)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Registration {
    /// Reads and checks the registration file at `path`.
    pub fn load(path: &Path, server_name: &ServerName) -> Result<Self, RegistrationError> {
        let display = path.display().to_string();
        let error = |message: String| RegistrationError { path: display.clone(), message };
        let text = std::fs::read_to_string(path).map_err(|e| error(format!("could not read the file: {e}")))?;
        Self::parse(&text, &display, server_name)
    }

    /// Parses and checks registration YAML; `path` names the source in errors.
    pub fn parse(text: &str, path: &str, server_name: &ServerName) -> Result<Self, RegistrationError> {
        let error = |message: String| RegistrationError { path: path.to_owned(), message };
        let deserializer = serde_norway::Deserializer::from_str(text);
        let file: RegistrationFile = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let field = e.path().to_string();
            if field == "." {
                error(format!("invalid YAML: {}", e.inner()))
            } else {
                error(format!("field {field}: {}", e.inner()))
            }
        })?;

        if file.id.trim().is_empty() {
            return Err(error("field id: must not be empty".into()));
        }
        for (field, token) in [("as_token", &file.as_token), ("hs_token", &file.hs_token)] {
            if token.trim().is_empty() {
                return Err(error(format!("field {field}: must not be empty")));
            }
        }
        if file.as_token == file.hs_token {
            return Err(error(
                "fields as_token and hs_token: must differ, so that neither side can act as the other".into(),
            ));
        }
        let url = match file.url.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(raw) => {
                let parsed =
                    url::Url::parse(raw).map_err(|e| error(format!("field url: {raw:?} is not a URL: {e}")))?;
                if !matches!(parsed.scheme(), "http" | "https") {
                    return Err(error(format!("field url: {raw:?} must start with http:// or https://")));
                }
                Some(parsed)
            }
        };
        let sender = UserId::parse_with_server_name(file.sender_localpart.as_str(), server_name).map_err(|e| {
            error(format!("field sender_localpart: {:?} is not a valid localpart: {e}", file.sender_localpart))
        })?;

        let compile = |kind: &str, list: &[NamespaceFile]| -> Result<Vec<Namespace>, RegistrationError> {
            list.iter()
                .enumerate()
                .map(|(index, entry)| {
                    Namespace::new(&entry.regex, entry.exclusive).map_err(|NamespaceError(message)| {
                        error(format!("field namespaces.{kind}[{index}].regex: {message}"))
                    })
                })
                .collect()
        };
        Ok(Self {
            users: compile("users", &file.namespaces.users)?,
            aliases: compile("aliases", &file.namespaces.aliases)?,
            rooms: compile("rooms", &file.namespaces.rooms)?,
            id: file.id,
            url,
            as_token: file.as_token,
            hs_token: file.hs_token,
            sender,
            rate_limited: file.rate_limited.unwrap_or(true),
            protocols: file.protocols,
            receive_ephemeral: file.receive_ephemeral || file.push_ephemeral_unstable,
            path: path.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> &'static ServerName {
        <&ServerName>::try_from("example.org").unwrap()
    }

    const IRC: &str = r##"
id: "IRC Bridge"
url: "http://127.0.0.1:1234"
as_token: "as-secret"
hs_token: "hs-secret"
sender_localpart: "_irc_bot"
namespaces:
  users:
    - exclusive: true
      regex: "@_irc_bridge_.*"
  aliases:
    - exclusive: false
      regex: "#_irc_bridge_.*"
  rooms: []
"##;

    #[test]
    fn spec_example_loads() {
        let registration = Registration::parse(IRC, "irc.yaml", server()).unwrap();
        assert_eq!(registration.id, "IRC Bridge");
        assert_eq!(registration.sender.as_str(), "@_irc_bot:example.org");
        assert_eq!(registration.users.len(), 1);
        assert!(registration.users[0].exclusive);
        assert!(registration.rate_limited);
        assert!(!registration.receive_ephemeral);
    }

    #[test]
    fn missing_field_is_named() {
        let text = IRC.replace("hs_token: \"hs-secret\"\n", "");
        let err = Registration::parse(&text, "irc.yaml", server()).unwrap_err();
        assert!(err.to_string().contains("irc.yaml"), "{err}");
        assert!(err.to_string().contains("hs_token"), "{err}");
    }

    #[test]
    fn bad_regex_is_named() {
        let text = IRC.replace("@_irc_bridge_.*", "@_irc_(");
        let err = Registration::parse(&text, "irc.yaml", server()).unwrap_err();
        assert!(err.to_string().contains("namespaces.users[0].regex"), "{err}");
    }

    #[test]
    fn wrong_type_is_named() {
        let text = IRC.replace("exclusive: true", "exclusive: maybe");
        let err = Registration::parse(&text, "irc.yaml", server()).unwrap_err();
        assert!(err.to_string().contains("namespaces.users[0].exclusive"), "{err}");
    }
}
