//! The HTTP listener's sniffer (`http::listener::classify`) on any bytes a client could send first: never panics;
//! a verdict for a fast path is a complete `GET` head of `/{app}/{name}.flv` with the key it names, or of
//! `/{app}/{name}/{file}` (live HLS) with a valid key; and the verdict does not depend on how the bytes arrived (a
//! prefix of a complete head is `Partial` or `Other`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use strom_engine::servers::http::listener::{classify, Sniffed};

fuzz_target!(|data: &[u8]| {
    let verdict = classify(data, 1024);
    let path = match &verdict {
        Sniffed::Flv { key, .. } => Some(format!("/{}/{}.flv", key.app(), key.name())),
        Sniffed::Hls(req) => {
            assert!(strom_engine::stream::StreamKey::new(&req.app, &req.name).is_ok(), "{req:?}");
            assert!(!["api", "vod", "console"].contains(&req.app.as_str()), "{req:?}");
            Some(format!("/{}/{}/{}", req.app, req.name, req.file))
        }
        _ => None,
    };
    if let Some(path) = path {
        // Header values may carry obs-text (bytes >= 0x80): compare as lossy text.
        let text = String::from_utf8_lossy(data);
        // Empty lines before the request line are allowed (RFC 9112 §2.2), by hyper too.
        assert!(text.trim_start_matches(['\r', '\n']).starts_with("GET /"), "{text:?}");
        assert!(text.ends_with('\n'), "{text:?}");
        assert!(text.contains(&path), "{text:?} names {path}");
        for cut in [1, data.len() / 2, data.len() - 1] {
            if cut > 0 && cut < data.len() {
                let early = classify(&data[..cut], 1024);
                assert!(matches!(early, Sniffed::Partial | Sniffed::Other), "prefix {cut}: {early:?}");
            }
        }
    }
});
