//! The browser dashboard: one page (`/`) and its assets (`/assets/{file}`),
//! all compiled into the binary so the server needs no files beside it and
//! the dashboard works without any other host.
//!
//! The page links its assets as `/assets/NAME?v=VERSION`, VERSION being a
//! hash of every asset: a browser may keep an asset forever under that URL,
//! and a new build changes the URL. The page itself is always revalidated.

use std::sync::LazyLock;

use axum::extract::RawQuery;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, IF_NONE_MATCH, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sha2::{Digest, Sha256};

use super::extract::Path;
use super::query_params;
use crate::error::{Error, Result};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/assets/{file}", get(asset))
}

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: [Asset; 5] = [
    Asset {
        name: "theme.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../dashboard/theme.js"),
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../dashboard/app.js"),
    },
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../dashboard/app.css"),
    },
    // uPlot, installed from npm by build.rs (see there).
    Asset {
        name: "uplot.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!(concat!(env!("OUT_DIR"), "/uplot/uPlot.iife.min.js")),
    },
    Asset {
        name: "uplot.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!(concat!(env!("OUT_DIR"), "/uplot/uPlot.min.css")),
    },
];

const INDEX_TEMPLATE: &str = include_str!("../../dashboard/index.html");

/// Changes whenever any asset does; 16 hex digits are plenty to tell builds
/// apart.
static VERSION: LazyLock<String> = LazyLock::new(|| {
    let mut hash = Sha256::new();
    for asset in &ASSETS {
        hash.update(asset.name.as_bytes());
        hash.update((asset.body.len() as u64).to_le_bytes());
        hash.update(asset.body);
    }
    hash.finalize()[..8]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
});

static INDEX: LazyLock<String> =
    LazyLock::new(|| INDEX_TEMPLATE.replace("__ASSET_VERSION__", &VERSION));

/// Everything the page loads comes from this server: scripts and styles
/// from `/assets`, data from the API and its WebSockets. uPlot positions
/// its elements through `element.style`, which CSP does not restrict.
const CONTENT_SECURITY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; \
     frame-ancestors 'none'";

async fn index() -> Response {
    (
        [
            (CONTENT_TYPE, "text/html; charset=utf-8"),
            // A new build must reach browsers at once: they ask each time
            // (and the page is small).
            (CACHE_CONTROL, "no-cache"),
            (CONTENT_SECURITY_POLICY, CONTENT_SECURITY),
            (X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (X_FRAME_OPTIONS, "DENY"),
            (REFERRER_POLICY, "same-origin"),
        ],
        INDEX.as_str(),
    )
        .into_response()
}

async fn asset(
    Path(file): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response> {
    let asset = ASSETS
        .iter()
        .find(|asset| asset.name == file)
        .ok_or(Error::NotFound)?;
    let version = VERSION.as_str();
    // Only the URL the current page links is immutable; any other (an old
    // page's, or one typed by hand) is revalidated against the ETag.
    let versioned = query_params(query.as_deref())
        .ok()
        .and_then(|params| params.get("v").map(|v| v == version))
        .unwrap_or(false);
    let cache = if versioned {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let etag = format!("\"{version}\"");
    let matches = headers
        .get(IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.split(',').any(|tag| tag.trim() == etag));
    let common = [
        (CACHE_CONTROL, cache.to_owned()),
        (ETAG, etag),
        (X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
    ];
    if matches {
        return Ok((StatusCode::NOT_MODIFIED, common).into_response());
    }
    Ok((common, [(CONTENT_TYPE, asset.content_type)], asset.body).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_links_every_asset_by_version() {
        assert!(INDEX.contains("sysmon"));
        assert!(!INDEX.contains("__ASSET_VERSION__"));
        for asset in &ASSETS {
            let link = format!("/assets/{}?v={}", asset.name, *VERSION);
            assert!(INDEX.contains(&link), "index.html links {link}");
            assert!(!asset.body.is_empty());
        }
    }
}
