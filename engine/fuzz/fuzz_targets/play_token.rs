//! Signed play tokens and playlist signing on arbitrary input: `token::verify` never panics and accepts only a
//! token it made itself for a covered path (unbound, or bound to the client's address); `jwt::verify` and
//! `Jwks::parse` never panic, and no input plays as a JWT (the fuzzer holds no private key); `playlist::with_query` never panics, never drops a line, and every
//! URI line of its output ends with the query.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strom_engine::formats::playlist::with_query;
use strom_engine::formats::token::{prefixes_of, sign, verify};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (token, path) = text.split_once('|').unwrap_or((&text, "/live/cam/index.m3u8"));
    let now = data.first().map_or(0, |b| u64::from(*b) * 1000);
    let client = data.get(1..5).map(|b| std::net::IpAddr::from([b[0], b[1], b[2], b[3]]));
    if verify(b"fuzz-key", Some(token), path, now, client).is_ok() {
        // Only possible when the input holds a real signature: check it is one for a prefix of the path, unbound
        // or bound to the client's address.
        let (exp, _) = token.split_once('.').expect("a verified token has a dot");
        let exp: u64 = exp.parse().expect("a verified expiry is a number");
        let made = |p: &String| sign(b"fuzz-key", p, exp, None) == token || sign(b"fuzz-key", p, exp, client) == token;
        assert!(prefixes_of(path).iter().any(made));
    }
    let _ = prefixes_of(path);
    let good = sign(b"fuzz-key", "/live/cam", u64::MAX, client);
    assert!(verify(b"fuzz-key", Some(&good), "/live/cam/x.m4s", now, client).is_ok());

    // JWTs: the parser and verifier never panic on any token and path, and garbage never plays.
    let jwks = strom_engine::formats::jwt::Jwks::parse(
        r#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#,
    )
    .expect("a valid set");
    assert!(strom_engine::formats::jwt::verify(&jwks, token, path, now).is_err(), "an unsigned input played");
    let _ = strom_engine::formats::jwt::Jwks::parse(&text);

    let out = with_query(&text, "token=T");
    assert_eq!(out.lines().count(), text.lines().count(), "a line was added or dropped");
    for line in out.lines() {
        if !line.is_empty() && !line.starts_with('#') {
            assert!(line.ends_with("token=T"), "a URI line without the query: {line:?}");
        }
    }
});
