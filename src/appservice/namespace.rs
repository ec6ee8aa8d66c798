//! Namespaces: the regular expressions of user ids, room aliases and room ids
//! that an application service claims.

use regex::Regex;

/// One namespace of a registration.
#[derive(Debug, Clone)]
pub struct Namespace {
    pub regex: Regex,
    pub exclusive: bool,
}

#[derive(Debug)]
pub struct NamespaceError(pub String);

impl Namespace {
    /// Compiles `pattern`. A namespace matches an id when the pattern matches
    /// from the id's first character, as Synapse does (Synapse 1.x, `re.match`),
    /// so bridges written for it keep their meaning: `@_irc_.*` and
    /// `@_irc_.*:example.org` both cover `@_irc_alice:example.org`.
    pub fn new(pattern: &str, exclusive: bool) -> Result<Self, NamespaceError> {
        if pattern.is_empty() {
            return Err(NamespaceError("must not be empty".into()));
        }
        let regex = Regex::new(&format!("^(?:{pattern})"))
            .map_err(|e| NamespaceError(format!("{pattern:?} is not a valid regular expression: {e}")))?;
        Ok(Self { regex, exclusive })
    }

    pub fn matches(&self, id: &str) -> bool {
        self.regex.is_match(id)
    }

    /// The pattern as written in the registration.
    pub fn pattern(&self) -> &str {
        let anchored = self.regex.as_str();
        &anchored["^(?:".len()..anchored.len() - 1]
    }
}

/// Whether any namespace in `list` matches `id`.
pub fn any_match(list: &[Namespace], id: &str) -> bool {
    list.iter().any(|namespace| namespace.matches(id))
}

/// Whether an exclusive namespace in `list` matches `id`.
pub fn exclusive_match(list: &[Namespace], id: &str) -> bool {
    list.iter().any(|namespace| namespace.exclusive && namespace.matches(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_from_the_start() {
        let namespace = Namespace::new("@_irc_.*", true).unwrap();
        assert!(namespace.matches("@_irc_alice:example.org"));
        assert!(!namespace.matches("@bob_irc_alice:example.org"));
        assert_eq!(namespace.pattern(), "@_irc_.*");
    }

    #[test]
    fn alternation_stays_anchored() {
        let namespace = Namespace::new("@a.*|@b.*", false).unwrap();
        assert!(namespace.matches("@bob:example.org"));
        assert!(!namespace.matches("@carol_b:example.org"));
    }
}
