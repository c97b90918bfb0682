//! The web console at `/console/`: plain HTML, CSS and ES modules from `engine/console/`, embedded in the binary
//! (building strom needs no Node). hls.js and mpegts.js are vendored under `engine/console/vendor/` with pinned
//! versions whose hashes `vendor.sh check` verifies. The page reads the cluster from `/api/v1/events` (see
//! [`super::events`]) with the admin token, which it keeps in `sessionStorage` only.
//!
//! | route | what |
//! |---|---|
//! | `GET /console` | redirect to `/console/` |
//! | `GET /console/` | the page |
//! | `GET /console/{file}` | its script, style sheet, icon and vendored players |

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};

/// The console's files: path under `/console/`, content type, bytes.
const FILES: &[(&str, &str, &[u8])] = &[
    ("index.html", "text/html; charset=utf-8", include_bytes!("../../../console/index.html")),
    ("app.js", "text/javascript; charset=utf-8", include_bytes!("../../../console/app.js")),
    ("style.css", "text/css; charset=utf-8", include_bytes!("../../../console/style.css")),
    ("favicon.svg", "image/svg+xml", include_bytes!("../../../console/favicon.svg")),
    ("vendor/hls.min.js", "text/javascript; charset=utf-8", include_bytes!("../../../console/vendor/hls.min.js")),
    ("vendor/mpegts.min.js", "text/javascript; charset=utf-8", include_bytes!("../../../console/vendor/mpegts.min.js")),
];

/// The page may load its own files and play media from this origin (the players use blob URLs and workers);
/// it cannot be framed.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; \
                   media-src 'self' blob:; worker-src 'self' blob:; connect-src 'self'; frame-ancestors 'none'; \
                   base-uri 'none'; form-action 'self'";

/// `GET /console`.
pub async fn redirect() -> Response {
    Redirect::permanent("/console/").into_response()
}

/// `GET /console/`.
pub async fn index() -> Response {
    file("index.html")
}

/// `GET /console/{*file}`.
pub async fn asset(Path(path): Path<String>) -> Response {
    file(&path)
}

fn file(path: &str) -> Response {
    let Some((_, mime, bytes)) = FILES.iter().find(|(p, _, _)| *p == path) else {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    };
    // Everything changes with strom's release (the vendored players' names carry no version): the players, the
    // heavy part, are kept five minutes; the page, its script and style are revalidated.
    let cache = if path.starts_with("vendor/") { "public, max-age=300" } else { "no-cache" };
    let mut r = ([(header::CONTENT_TYPE, *mime), (header::CACHE_CONTROL, cache)], *bytes).into_response();
    let h = r.headers_mut();
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    if path.ends_with(".html") {
        h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_is_embedded_and_the_page_loads_only_what_is_served() {
        for (path, _, bytes) in FILES {
            assert!(!bytes.is_empty(), "{path} is empty");
        }
        let page = std::str::from_utf8(FILES[0].2).unwrap();
        for reference in page.split(['"', '\'']).filter(|s| s.starts_with("./")) {
            let path = reference.trim_start_matches("./");
            assert!(FILES.iter().any(|(p, _, _)| *p == path), "index.html refers to {reference}, which is not served");
        }
        assert!(!page.contains("<script>"), "inline scripts are refused by the page's CSP");
    }
}
