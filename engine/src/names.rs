//! Well-formedness of keys, ids and names: the vocabulary of SPEC §1.
//!
//! Every string that reaches the context from outside passes through here first. Error messages show at
//! most a short prefix of the offending value, so a hostile megabyte never ends up in a diagnostic.

use thiserror::Error;

/// The key the engine writes failure and violation records under.
pub const DIAGNOSTICS: &str = "diagnostics";
/// The key answers to questions are written under (by humans, through the API).
pub const ANSWERS: &str = "answers";
/// Longest key, in bytes.
pub const MAX_KEY_LEN: usize = 128;
/// Longest fact or question id, in bytes.
pub const MAX_ID_LEN: usize = 256;
/// Longest agent or invariant name, in bytes.
pub const MAX_NAME_LEN: usize = 64;
/// Provenance names the engine uses itself, so no component may take them as its name.
pub const RESERVED_NAMES: [&str; 3] = [SEED, HUMAN, ENGINE];
/// Provenance of a job's seed facts.
pub const SEED: &str = "seed";
/// Provenance of answers.
pub const HUMAN: &str = "human";
/// Provenance of diagnostics.
pub const ENGINE: &str = "engine";

/// A string that is not a well-formed key, id or name.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum NameError {
    /// Not 1–128 characters of `[a-z0-9._/-]`.
    #[error("key {0} is not 1-128 characters of [a-z0-9._/-]")]
    Key(String),
    /// Not 1–256 bytes without control characters.
    #[error("id {0} is not 1-256 bytes without control characters")]
    Id(String),
    /// Not 1–64 characters of `[a-z0-9_-]` starting with a letter or digit.
    #[error("name {0} is not 1-64 characters of [a-z0-9_-] starting with [a-z0-9]")]
    Name(String),
    /// One of the names the engine uses for provenance.
    #[error("name {0} is reserved")]
    ReservedName(String),
}

/// Quote `s` for a message, cut to a short prefix.
pub(crate) fn shown(s: &str) -> String {
    const MAX: usize = 64;
    if s.len() <= MAX {
        return format!("{s:?}");
    }
    format!("{:?}… ({} bytes)", clip(s, MAX), s.len())
}

/// `s` cut to at most `max` bytes on a character boundary: how untrusted text is bounded before it is shown.
pub fn clip(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Check that `key` is 1–128 characters of `[a-z0-9._/-]`.
///
/// # Errors
/// [`NameError::Key`] naming the key.
pub fn check_key(key: &str) -> Result<(), NameError> {
    let ok = !key.is_empty()
        && key.len() <= MAX_KEY_LEN
        && key.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'/' | b'-'));
    if ok { Ok(()) } else { Err(NameError::Key(shown(key))) }
}

/// Whether `key` belongs to the engine or to humans: `diagnostics`, `answers`, or anything below them
/// (`diagnostics/...`, `answers/...`).
pub fn is_reserved_key(key: &str) -> bool {
    [DIAGNOSTICS, ANSWERS]
        .iter()
        .any(|r| key.strip_prefix(r).is_some_and(|rest| rest.is_empty() || rest.starts_with('/')))
}

/// Check that `id` is 1–256 bytes of UTF-8 without control characters.
///
/// # Errors
/// [`NameError::Id`] naming the id.
pub fn check_id(id: &str) -> Result<(), NameError> {
    let ok = !id.is_empty() && id.len() <= MAX_ID_LEN && !id.chars().any(char::is_control);
    if ok { Ok(()) } else { Err(NameError::Id(shown(id))) }
}

/// Check that `name` (of an agent or invariant) is 1–64 characters of `[a-z0-9_-]`, starts with a letter or
/// digit and is not one of [`RESERVED_NAMES`].
///
/// # Errors
/// [`NameError::Name`] or [`NameError::ReservedName`].
pub fn check_name(name: &str) -> Result<(), NameError> {
    let ok = name.len() <= MAX_NAME_LEN
        && name.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-'));
    if !ok {
        return Err(NameError::Name(shown(name)));
    }
    if RESERVED_NAMES.contains(&name) {
        return Err(NameError::ReservedName(shown(name)));
    }
    Ok(())
}

/// Cut `s` to at most `max` bytes on a character boundary.
pub(crate) fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let end = clip(&s, max).len();
        s.truncate(end);
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert!(check_key("market/signals-1.x_y").is_ok());
        assert!(check_key("").is_err());
        assert!(check_key("Upper").is_err());
        assert!(check_key(&"a".repeat(129)).is_err());
        assert!(check_key(&"a".repeat(128)).is_ok());
    }

    #[test]
    fn reserved() {
        assert!(is_reserved_key("diagnostics"));
        assert!(is_reserved_key("answers/x"));
        assert!(!is_reserved_key("answersheet"));
        assert!(!is_reserved_key("my/diagnostics"));
    }

    #[test]
    fn ids_and_names() {
        assert!(check_id("Q1 — ünïcode ok").is_ok());
        assert!(check_id("a\nb").is_err());
        assert!(check_id(&"x".repeat(257)).is_err());
        assert!(check_name("strategy-synth_2").is_ok());
        assert!(check_name("-x").is_err());
        assert!(check_name("engine").is_err());
        assert!(shown(&"y".repeat(1000)).len() < 100);
        assert_eq!(truncate("héllo".into(), 2), "h…");
    }
}
