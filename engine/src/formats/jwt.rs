//! JWT play tokens (pure): for setups with an identity provider, a JSON Web Token signed by a key of a JWKS file
//! (`auth.jwks_file`) plays the streams its claims name, passed like a signed URL's token (`?token=JWT`).
//!
//! Claims: `exp` (required, Unix seconds), `nbf` (optional), and the paths it covers: `path` (one) or `paths`
//! (several), each `/APP/NAME` (that stream, its rungs, and a VOD asset as `/vod/ID`) or `/APP/*` (every stream
//! of the application). Keys: RSA (RS256/384/512, PS256/384/512), EC (ES256/384) or Ed25519 (EdDSA), chosen by
//! the token's `kid` when it has one; the token's `alg` must be one its key can make (an RSA key is never
//! taken as an HMAC secret). `jsonwebtoken` (over ring) checks the signatures.

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use super::token::{prefixes_of, TokenError};

/// The verification keys of a JWKS file.
pub struct Jwks {
    keys: Vec<Key>,
}

struct Key {
    kid: Option<String>,
    key: DecodingKey,
    algorithms: Vec<Algorithm>,
}

#[derive(serde::Deserialize)]
struct Claims {
    exp: u64,
    #[serde(default)]
    nbf: Option<u64>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    paths: Vec<String>,
}

impl Jwks {
    /// Parses a JWKS document (`{"keys": [...]}`); keys of an unknown type are skipped; none usable is an error.
    pub fn parse(json: &str) -> Result<Jwks, String> {
        let set: JwkSet = serde_json::from_str(json).map_err(|e| format!("not a JWKS document: {e}"))?;
        let mut keys = Vec::new();
        for jwk in &set.keys {
            let algorithms = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => vec![
                    Algorithm::RS256,
                    Algorithm::RS384,
                    Algorithm::RS512,
                    Algorithm::PS256,
                    Algorithm::PS384,
                    Algorithm::PS512,
                ],
                AlgorithmParameters::EllipticCurve(_) => vec![Algorithm::ES256, Algorithm::ES384],
                AlgorithmParameters::OctetKeyPair(_) => vec![Algorithm::EdDSA],
                // A symmetric key in a public key set is refused: anyone who can read the file could sign.
                AlgorithmParameters::OctetKey(_) => continue,
            };
            let Ok(key) = DecodingKey::from_jwk(jwk) else { continue };
            keys.push(Key { kid: jwk.common.key_id.clone(), key, algorithms });
        }
        if keys.is_empty() {
            return Err("the JWKS holds no usable public key (RSA, EC or Ed25519)".into());
        }
        Ok(Jwks { keys })
    }

    /// Keys in the set.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// The set holds no key (never true for a parsed set).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// A token that looks like a JWT (three dot-separated parts), as opposed to a signed URL's `EXPIRES.HEX`.
pub fn looks_like_jwt(token: &str) -> bool {
    token.bytes().filter(|b| *b == b'.').count() == 2
}

/// Checks JWT `token` for a request of `path` at `now` (Unix seconds).
pub fn verify(jwks: &Jwks, token: &str, path: &str, now: u64) -> Result<(), TokenError> {
    if token.len() > 8192 {
        return Err(TokenError::Malformed);
    }
    let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
    let candidates = jwks.keys.iter().filter(|k| {
        k.algorithms.contains(&header.alg) && (header.kid.is_none() || k.kid.is_none() || k.kid == header.kid)
    });
    let mut validation = Validation::new(header.alg);
    // Time is checked below against `now`; audiences are not used.
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let claims = candidates
        .filter_map(|k| jsonwebtoken::decode::<Claims>(token, &k.key, &validation).ok())
        .map(|d| d.claims)
        .next()
        .ok_or(TokenError::BadSignature)?;
    let covers = |claim: &str| match claim.strip_suffix("/*") {
        Some(app) => !app.is_empty() && path.starts_with(app) && path[app.len()..].starts_with('/'),
        None => prefixes_of(path).iter().any(|p| p == claim),
    };
    if !claims.path.iter().chain(claims.paths.iter()).any(|c| covers(c)) {
        return Err(TokenError::BadSignature);
    }
    if now > claims.exp || claims.nbf.is_some_and(|nbf| now < nbf) {
        return Err(TokenError::Expired);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};

    // An Ed25519 key pair (RFC 8037 appendix A.1).
    const D: &str = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A";
    const X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";

    fn jwks() -> Jwks {
        Jwks::parse(&format!(r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","x":"{X}","kid":"k1"}}]}}"#)).unwrap()
    }

    fn token(claims: serde_json::Value, kid: Option<&str>) -> String {
        // ring wants the key as PKCS#8: the RFC's seed behind the fixed Ed25519 PKCS#8 v1 prefix.
        let seed = base64_url(D);
        let mut der =
            vec![0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
        der.extend(seed);
        let mut h = Header::new(Algorithm::EdDSA);
        h.kid = kid.map(str::to_string);
        encode(&h, &claims, &EncodingKey::from_ed_der(&der)).unwrap()
    }

    fn base64_url(s: &str) -> Vec<u8> {
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut bits = 0u32;
        let mut n = 0;
        let mut out = Vec::new();
        for c in s.bytes() {
            bits = (bits << 6) | alphabet.iter().position(|a| *a == c).unwrap() as u32;
            n += 6;
            if n >= 8 {
                n -= 8;
                out.push((bits >> n) as u8);
            }
        }
        out
    }

    #[test]
    fn a_token_from_the_set_plays_the_paths_it_names_until_it_expires() {
        let j = jwks();
        let t = token(serde_json::json!({ "exp": 1000, "path": "/live/cam" }), Some("k1"));
        assert!(looks_like_jwt(&t));
        for path in ["/live/cam/index.m3u8", "/live/cam.flv", "/live/cam_480p/seg-1.m4s"] {
            assert_eq!(verify(&j, &t, path, 999), Ok(()), "{path}");
        }
        assert_eq!(verify(&j, &t, "/live/other/index.m3u8", 0), Err(TokenError::BadSignature));
        assert_eq!(verify(&j, &t, "/live/cam.flv", 1001), Err(TokenError::Expired));
        let app = token(serde_json::json!({ "exp": 1000, "paths": ["/vod/a1", "/live/*"] }), None);
        assert_eq!(verify(&j, &app, "/live/anything/index.m3u8", 0), Ok(()));
        assert_eq!(verify(&j, &app, "/vod/a1/index.m3u8", 0), Ok(()));
        assert_eq!(verify(&j, &app, "/lively/x/index.m3u8", 0), Err(TokenError::BadSignature));
        let early = token(serde_json::json!({ "exp": 1000, "nbf": 500, "path": "/live/cam" }), None);
        assert_eq!(verify(&j, &early, "/live/cam.flv", 499), Err(TokenError::Expired));
    }

    #[test]
    fn other_keys_kids_algorithms_and_garbage_are_refused() {
        let j = jwks();
        let t = token(serde_json::json!({ "exp": 1000, "path": "/live/cam" }), Some("other-kid"));
        assert_eq!(verify(&j, &t, "/live/cam.flv", 0), Err(TokenError::BadSignature), "a kid the set lacks");
        // Signed with HMAC using the public key as the secret: the classic confusion, refused.
        let hs = encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({ "exp": 1000, "path": "/live/cam" }),
            &EncodingKey::from_secret(X.as_bytes()),
        )
        .unwrap();
        assert_eq!(verify(&j, &hs, "/live/cam.flv", 0), Err(TokenError::BadSignature));
        let mut tampered = token(serde_json::json!({ "exp": 1000, "path": "/live/cam" }), None);
        tampered.push('A');
        assert_eq!(verify(&j, &tampered, "/live/cam.flv", 0), Err(TokenError::BadSignature));
        for bad in ["a.b.c", "..", "x", ""] {
            assert!(verify(&j, bad, "/live/cam.flv", 0).is_err(), "{bad:?}");
        }
        assert!(Jwks::parse(r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#).is_err(), "a symmetric key is refused");
        assert!(Jwks::parse("not json").is_err());
    }
}
