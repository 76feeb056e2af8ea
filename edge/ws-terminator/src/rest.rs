//! REST v1, independent of the transport: HTTP/1.1 (Pingora) and HTTP/3 (h3) both turn
//! their requests into a [`RestRequest`] and write back the [`RestResponse`].

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};

/// A request as the router needs it, whatever transport carried it.
#[derive(Debug, Clone)]
pub struct RestRequest {
    pub method: Method,
    /// Path without the query, e.g. `/v1/channels/C1/history`.
    pub path: String,
    /// Raw query string without `?`.
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A complete response.
#[derive(Debug, Clone)]
pub struct RestResponse {
    pub status: StatusCode,
    pub content_type: &'static str,
    pub body: Bytes,
}

/// The REST v1 router. (Filled in by the edge's REST implementation.)
#[derive(Debug, Default)]
pub struct RestApi {}

impl RestApi {
    /// Answers one request.
    pub async fn handle(&self, _req: RestRequest) -> RestResponse {
        RestResponse {
            status: StatusCode::NOT_FOUND,
            content_type: "application/json",
            body: Bytes::from_static(br#"{"error":{"code":"not_found","msg":"no such route"}}"#),
        }
    }
}
