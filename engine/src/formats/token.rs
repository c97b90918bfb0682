//! Signed play URLs (pure): a token that lets its holder play one stream until it expires.
//!
//! ## Format (any backend can mint tokens)
//!
//! `token = EXPIRES "." HEX(HMAC-SHA256(KEY, PREFIX "\n" EXPIRES))`, passed as `?token=...`:
//!
//! - `EXPIRES`: Unix time in seconds (decimal) after which the token is refused.
//! - `PREFIX`: the path prefix it covers: `/APP/NAME` for stream `APP/NAME`. It covers that stream's every URL:
//!   `/APP/NAME/index.m3u8` and its segments, parts and init segments (`/APP/NAME/...`), `/APP/NAME.flv`, RTMP
//!   play of `NAME` in `APP`, and the stream's ABR rungs (`/APP/NAME_480p/...`).
//! - `KEY`: the play key of the application (`auth.apps.<app>.play`, else `auth.play_key` or
//!   `auth.play_key_file`).
//!
//! Shell: `printf '%s\n%s' /live/cam $EXP | openssl dgst -sha256 -hmac "$KEY"` gives the hex part;
//! `strom sign --path /live/cam --ttl 3600` prints the whole query string.

use ring::hmac;

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// No token where one is needed.
    #[error("a signed token is needed (?token=...)")]
    Missing,
    /// Not `EXPIRES.HEX`.
    #[error("malformed token")]
    Malformed,
    /// Past its expiry.
    #[error("the token has expired")]
    Expired,
    /// Signed with another key or for another path.
    #[error("the token is not valid for this path")]
    BadSignature,
}

fn mac(key: &[u8], prefix: &str, expires: u64) -> hmac::Tag {
    let k = hmac::Key::new(hmac::HMAC_SHA256, key);
    hmac::sign(&k, format!("{prefix}\n{expires}").as_bytes())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 || s.len() > 128 {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// A token for `prefix` (e.g. `/live/cam`), valid until `expires` (Unix seconds).
pub fn sign(key: &[u8], prefix: &str, expires: u64) -> String {
    format!("{expires}.{}", hex(mac(key, prefix, expires).as_ref()))
}

/// The prefixes a request path may be covered by: `/APP/NAME` for `/APP/NAME/...` and `/APP/NAME.flv`, and for a
/// rung `NAME_<height>p` also its source's `/APP/NAME`.
pub fn prefixes_of(path: &str) -> Vec<String> {
    let mut parts = path.trim_start_matches('/').splitn(3, '/');
    let (Some(app), Some(second)) = (parts.next(), parts.next()) else { return Vec::new() };
    let name = if parts.next().is_some() { second } else { second.strip_suffix(".flv").unwrap_or(second) };
    let mut out = vec![format!("/{app}/{name}")];
    if let Some((source, rung)) = name.rsplit_once('_') {
        let height = rung.strip_suffix('p').unwrap_or("");
        if !source.is_empty() && !height.is_empty() && height.bytes().all(|b| b.is_ascii_digit()) {
            out.push(format!("/{app}/{source}"));
        }
    }
    out
}

/// Checks `token` for a request of `path` at `now` (Unix seconds).
pub fn verify(key: &[u8], token: Option<&str>, path: &str, now: u64) -> Result<(), TokenError> {
    let token = token.ok_or(TokenError::Missing)?;
    let (exp, sig) = token.split_once('.').ok_or(TokenError::Malformed)?;
    if exp.is_empty() || exp.len() > 20 || !exp.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TokenError::Malformed);
    }
    let expires: u64 = exp.parse().map_err(|_| TokenError::Malformed)?;
    let sig = unhex(sig).ok_or(TokenError::Malformed)?;
    let k = hmac::Key::new(hmac::HMAC_SHA256, key);
    let signed = prefixes_of(path).iter().any(|p| hmac::verify(&k, format!("{p}\n{expires}").as_bytes(), &sig).is_ok());
    if !signed {
        return Err(TokenError::BadSignature);
    }
    if now > expires {
        return Err(TokenError::Expired);
    }
    Ok(())
}

/// The value of `param` in a URL's query string.
pub fn query_param<'a>(path_and_query: &'a str, param: &str) -> Option<&'a str> {
    crate::formats::key::StreamKey::query_value(path_and_query, param)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"play-key";

    #[test]
    fn a_token_plays_its_stream_and_rungs_until_it_expires() {
        let t = sign(KEY, "/live/cam", 1000);
        for path in ["/live/cam/index.m3u8", "/live/cam/seg-3.m4s", "/live/cam.flv", "/live/cam_480p/index.m3u8"] {
            assert_eq!(verify(KEY, Some(&t), path, 999), Ok(()), "{path}");
            assert_eq!(verify(KEY, Some(&t), path, 1000), Ok(()), "{path}: the last second");
        }
        assert_eq!(verify(KEY, Some(&t), "/live/cam/index.m3u8", 1001), Err(TokenError::Expired));
    }

    #[test]
    fn other_paths_keys_and_tampering_are_refused() {
        let t = sign(KEY, "/live/cam", 1000);
        for path in ["/live/camera/index.m3u8", "/live/ca.flv", "/other/cam/index.m3u8", "/live/cam_x/index.m3u8"] {
            assert_eq!(verify(KEY, Some(&t), path, 0), Err(TokenError::BadSignature), "{path}");
        }
        assert_eq!(verify(b"other", Some(&t), "/live/cam.flv", 0), Err(TokenError::BadSignature));
        let longer = t.replacen("1000.", "2000.", 1);
        assert_eq!(verify(KEY, Some(&longer), "/live/cam.flv", 0), Err(TokenError::BadSignature), "expiry changed");
        let mut flipped = t.clone().into_bytes();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'0' { b'1' } else { b'0' };
        let flipped = String::from_utf8(flipped).unwrap();
        assert_eq!(verify(KEY, Some(&flipped), "/live/cam.flv", 0), Err(TokenError::BadSignature));
        for bad in ["", "1000", "x.ab", "1000.zz", "1000.abc", ".ab", "99999999999999999999999.ab"] {
            assert_eq!(verify(KEY, Some(bad), "/live/cam.flv", 0), Err(TokenError::Malformed), "{bad:?}");
        }
        assert_eq!(verify(KEY, None, "/live/cam.flv", 0), Err(TokenError::Missing));
    }

    #[test]
    fn the_documented_shell_recipe_gives_the_same_signature() {
        // printf '/live/cam\n1000' | openssl dgst -sha256 -hmac play-key
        let want = "1000.13180758aa8c249c6b6d624acdb297a61bd400742337992ab55b8a1b592a2cfb";
        assert_eq!(sign(KEY, "/live/cam", 1000), want);
    }
}
