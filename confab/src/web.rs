//! The web client, embedded at build time (see `build.rs`) and served by the edge at `/`
//! and `/static/...`.

use bytes::Bytes;
use confab_ws_terminator::config::WebAssets;
use std::sync::Arc;

mod files {
    include!(concat!(env!("OUT_DIR"), "/web_files.rs"));
}

/// Looks up an embedded file by URL path; `/index.html` is an alias of `/`.
pub fn lookup(path: &str) -> Option<(&'static str, Bytes)> {
    let path = if path == "/index.html" { "/" } else { path };
    files::FILES
        .iter()
        .find(|(url, _, _)| *url == path)
        .map(|(_, content_type, bytes)| (*content_type, Bytes::from_static(bytes)))
}

/// The embedded files as the edge's asset hook, or `None` when this build has none.
pub fn assets() -> Option<WebAssets> {
    if files::FILES.is_empty() {
        return None;
    }
    Some(Arc::new(lookup))
}
