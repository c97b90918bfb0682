//! [`StreamKey`]: the validated `app/name` of a live stream.

use std::fmt;

/// A stream's identity: application and stream name, each 1–128 characters of `[A-Za-z0-9_.-]`, not starting
/// with a dot. Validation happens once at the edge (RTMP command, HTTP path); everything inside trusts it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamKey {
    app: String,
    name: String,
}

/// Why a stream key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid stream {part} {value:?}: use 1-128 characters of A-Z a-z 0-9 _ . - (not starting with '.')")]
pub struct KeyError {
    /// "app" or "name".
    pub part: &'static str,
    /// The refused value (truncated to 64 characters).
    pub value: String,
}

fn valid(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && !s.starts_with('.')
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

impl StreamKey {
    /// Validates `app` and `name`. A query string on the name (`KEY?token=...`, as some encoders send) is dropped.
    pub fn new(app: &str, name: &str) -> Result<StreamKey, KeyError> {
        let name = name.split('?').next().unwrap_or_default();
        let app = app.trim_end_matches('/');
        for (part, value) in [("app", app), ("name", name)] {
            if !valid(value) {
                return Err(KeyError { part, value: value.chars().take(64).collect() });
            }
        }
        Ok(StreamKey { app: app.to_string(), name: name.to_string() })
    }

    /// The value of `param` in the query string of a publish or play name (`KEY?secret=S&x=y`), percent-decoding
    /// not applied (secrets and tokens are URL-safe).
    pub fn query_value<'a>(name: &'a str, param: &str) -> Option<&'a str> {
        let (_, query) = name.split_once('?')?;
        query.split('&').find_map(|kv| kv.split_once('=').filter(|(k, _)| *k == param).map(|(_, v)| v))
    }

    /// Parses `app/name`.
    pub fn parse(s: &str) -> Result<StreamKey, KeyError> {
        let (app, name) = s.split_once('/').unwrap_or((s, ""));
        StreamKey::new(app, name)
    }

    /// The application (e.g. `live`).
    pub fn app(&self) -> &str {
        &self.app
    }

    /// The stream name (e.g. the OBS stream key).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key of this stream's ABR rung at `height`: `app/NAME_<height>p` (see `transcode::ladder`), if the
    /// name fits the rules.
    pub fn rung(&self, height: u32) -> Option<StreamKey> {
        StreamKey::new(&self.app, &format!("{}_{height}p", self.name)).ok()
    }

    /// Whether this names a rung (`NAME_<h>p`, NAME not empty) at one of `heights`.
    pub fn is_rung_at(&self, mut heights: impl Iterator<Item = u32>) -> bool {
        heights.any(|h| self.name.strip_suffix(&format!("_{h}p")).is_some_and(|base| !base.is_empty()))
    }
}

impl fmt::Display for StreamKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.app, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_refuses() {
        assert_eq!(StreamKey::new("live", "test").unwrap().to_string(), "live/test");
        assert_eq!(StreamKey::new("live", "k?secret=1").unwrap().name(), "k");
        assert_eq!(StreamKey::query_value("k?secret=1", "secret"), Some("1"));
        assert_eq!(StreamKey::query_value("k?a=b&secret=s%2F&c", "secret"), Some("s%2F"));
        assert_eq!(StreamKey::query_value("k?secretx=1", "secret"), None);
        assert_eq!(StreamKey::query_value("k", "secret"), None);
        assert_eq!(StreamKey::parse("live/a.b-c_d").unwrap().name(), "a.b-c_d");
        for bad in ["", "..", ".x", "a/b", "a b", "%2e%2e", &"x".repeat(129)] {
            assert!(StreamKey::new("live", bad).is_err(), "{bad}");
        }
        assert!(StreamKey::parse("live").is_err());
        assert!(StreamKey::new("", "x").is_err());
    }
}
