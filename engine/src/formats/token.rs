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
//!
//! **Bound to a client address** (optional, the minter's choice): the HMAC is over `PREFIX "\n" EXPIRES "\n" IP`
//! (`IP` as the player's address reaches strom, e.g. `203.0.113.7` or `2001:db8::7`); the token looks the same
//! and is refused from any other address. `strom sign --ip 203.0.113.7`. Behind a load balancer this needs the
//! client's own address to reach the pods (Kubernetes: `externalTrafficPolicy: Local`).
//!
//! **VOD assets** are covered by `/vod/ID` (their playlists, segments and `/vod/ID.mp4`), signed with the play
//! key of the application `vod` (`[auth.apps.vod] play`, else the node-wide play key).

use std::net::IpAddr;

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

/// An IPv4 client seen on an IPv6 socket (`::ffff:a.b.c.d`) is its IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// What is signed: the prefix, the expiry and, for a bound token, the client's address.
fn message(prefix: &str, expires: u64, ip: Option<IpAddr>) -> String {
    match ip.map(canonical) {
        Some(ip) => format!("{prefix}\n{expires}\n{ip}"),
        None => format!("{prefix}\n{expires}"),
    }
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

/// A token for `prefix` (e.g. `/live/cam`), valid until `expires` (Unix seconds), and only from client address
/// `ip` when one is given.
pub fn sign(key: &[u8], prefix: &str, expires: u64, ip: Option<IpAddr>) -> String {
    let k = hmac::Key::new(hmac::HMAC_SHA256, key);
    format!("{expires}.{}", hex(hmac::sign(&k, message(prefix, expires, ip).as_bytes()).as_ref()))
}

/// The prefixes a request path may be covered by: `/APP/NAME` for `/APP/NAME/...` and `/APP/NAME.flv`, and for a
/// rung `NAME_<height>p` also its source's `/APP/NAME`.
pub fn prefixes_of(path: &str) -> Vec<String> {
    let mut parts = path.trim_start_matches('/').splitn(3, '/');
    let (Some(app), Some(second)) = (parts.next(), parts.next()) else { return Vec::new() };
    let name = if parts.next().is_some() {
        second
    } else if app == "vod" {
        second.strip_suffix(".mp4").unwrap_or(second)
    } else {
        second.strip_suffix(".flv").unwrap_or(second)
    };
    let mut out = vec![format!("/{app}/{name}")];
    if let Some((source, rung)) = name.rsplit_once('_') {
        let height = rung.strip_suffix('p').unwrap_or("");
        if !source.is_empty() && !height.is_empty() && height.bytes().all(|b| b.is_ascii_digit()) {
            out.push(format!("/{app}/{source}"));
        }
    }
    out
}

/// Checks `token` for a request of `path` at `now` (Unix seconds) from client address `client`: an unbound token
/// plays from anywhere, a bound one only from its address.
pub fn verify(key: &[u8], token: Option<&str>, path: &str, now: u64, client: Option<IpAddr>) -> Result<(), TokenError> {
    let token = token.ok_or(TokenError::Missing)?;
    let (exp, sig) = token.split_once('.').ok_or(TokenError::Malformed)?;
    if exp.is_empty() || exp.len() > 20 || !exp.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TokenError::Malformed);
    }
    let expires: u64 = exp.parse().map_err(|_| TokenError::Malformed)?;
    let sig = unhex(sig).ok_or(TokenError::Malformed)?;
    let k = hmac::Key::new(hmac::HMAC_SHA256, key);
    let binds = [None, client];
    let signed = prefixes_of(path).iter().any(|p| {
        binds
            .iter()
            .take(if client.is_some() { 2 } else { 1 })
            .any(|ip| hmac::verify(&k, message(p, expires, *ip).as_bytes(), &sig).is_ok())
    });
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
        let t = sign(KEY, "/live/cam", 1000, None);
        for path in ["/live/cam/index.m3u8", "/live/cam/seg-3.m4s", "/live/cam.flv", "/live/cam_480p/index.m3u8"] {
            assert_eq!(verify(KEY, Some(&t), path, 999, None), Ok(()), "{path}");
            assert_eq!(verify(KEY, Some(&t), path, 1000, None), Ok(()), "{path}: the last second");
        }
        assert_eq!(verify(KEY, Some(&t), "/live/cam/index.m3u8", 1001, None), Err(TokenError::Expired));
    }

    #[test]
    fn other_paths_keys_and_tampering_are_refused() {
        let t = sign(KEY, "/live/cam", 1000, None);
        for path in ["/live/camera/index.m3u8", "/live/ca.flv", "/other/cam/index.m3u8", "/live/cam_x/index.m3u8"] {
            assert_eq!(verify(KEY, Some(&t), path, 0, None), Err(TokenError::BadSignature), "{path}");
        }
        assert_eq!(verify(b"other", Some(&t), "/live/cam.flv", 0, None), Err(TokenError::BadSignature));
        let longer = t.replacen("1000.", "2000.", 1);
        assert_eq!(
            verify(KEY, Some(&longer), "/live/cam.flv", 0, None),
            Err(TokenError::BadSignature),
            "expiry changed"
        );
        let mut flipped = t.clone().into_bytes();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'0' { b'1' } else { b'0' };
        let flipped = String::from_utf8(flipped).unwrap();
        assert_eq!(verify(KEY, Some(&flipped), "/live/cam.flv", 0, None), Err(TokenError::BadSignature));
        for bad in ["", "1000", "x.ab", "1000.zz", "1000.abc", ".ab", "99999999999999999999999.ab"] {
            assert_eq!(verify(KEY, Some(bad), "/live/cam.flv", 0, None), Err(TokenError::Malformed), "{bad:?}");
        }
        assert_eq!(verify(KEY, None, "/live/cam.flv", 0, None), Err(TokenError::Missing));
    }

    #[test]
    fn a_bound_token_plays_only_from_its_address_and_vod_assets_have_their_prefix() {
        let ip: IpAddr = "203.0.113.7".parse().unwrap();
        let t = sign(KEY, "/live/cam", 1000, Some(ip));
        assert_eq!(verify(KEY, Some(&t), "/live/cam/index.m3u8", 0, Some(ip)), Ok(()));
        let mapped: IpAddr = "::ffff:203.0.113.7".parse().unwrap();
        assert_eq!(verify(KEY, Some(&t), "/live/cam.flv", 0, Some(mapped)), Ok(()), "IPv4 on an IPv6 socket");
        let other: IpAddr = "203.0.113.8".parse().unwrap();
        assert_eq!(verify(KEY, Some(&t), "/live/cam.flv", 0, Some(other)), Err(TokenError::BadSignature));
        assert_eq!(verify(KEY, Some(&t), "/live/cam.flv", 0, None), Err(TokenError::BadSignature));
        // An unbound token plays from anywhere.
        let open = sign(KEY, "/live/cam", 1000, None);
        assert_eq!(verify(KEY, Some(&open), "/live/cam.flv", 0, Some(other)), Ok(()));
        // printf '/live/cam\n1000\n203.0.113.7' | openssl dgst -sha256 -hmac play-key
        assert_eq!(t, "1000.7128d94cdf65f79a5e42ec3818d907466327229587dcc7a215047cb21250a027");

        let v = sign(KEY, "/vod/live-cam-20261206T000000000Z", 1000, None);
        for path in [
            "/vod/live-cam-20261206T000000000Z/index.m3u8",
            "/vod/live-cam-20261206T000000000Z/source/seg-1.m4s",
            "/vod/live-cam-20261206T000000000Z.mp4",
        ] {
            assert_eq!(verify(KEY, Some(&v), path, 0, None), Ok(()), "{path}");
        }
        assert_eq!(verify(KEY, Some(&v), "/vod/other/index.m3u8", 0, None), Err(TokenError::BadSignature));
    }

    #[test]
    fn the_documented_shell_recipe_gives_the_same_signature() {
        // printf '/live/cam\n1000' | openssl dgst -sha256 -hmac play-key
        let want = "1000.13180758aa8c249c6b6d624acdb297a61bd400742337992ab55b8a1b592a2cfb";
        assert_eq!(sign(KEY, "/live/cam", 1000, None), want);
    }
}
