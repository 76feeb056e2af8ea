//! REST v1 (DESIGN.md §5), independent of the transport: HTTP/1.1 (Pingora) and HTTP/3
//! (h3) both turn their requests into a [`RestRequest`] and write back the
//! [`RestResponse`]. The router checks the token, parses bodies and maps errors; every
//! decision is the core's, and the hot reads (`/v1/boot`, `/v1/users`) come from the
//! Flannel cache.

use crate::config::WebAssets;
use crate::metrics;
use bytes::Bytes;
use confab_auth::TokenVerifier;
use confab_chat::{Caller, CoreApi};
use confab_flannel_cache::Flannel;
use confab_proto::limits::{DEFAULT_HISTORY_LIMIT, MAX_BODY_BYTES, MAX_HISTORY_LIMIT};
use confab_proto::rest::{
    ChannelResponse, ChannelsResponse, CreateChannelRequest, CreatePushSubscriptionRequest,
    CreateTeamRequest, LoginRequest, MessageResponse, NewUser, OkResponse, PostMessageRequest,
    PushSubscriptionResponse, PushSubscriptionsResponse, UserIdsRequest, UserResponse,
    UsersResponse,
};
use confab_proto::{ApiError, ChannelId, ErrorCode, UserId};
use http::{HeaderMap, Method, StatusCode, header};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt;
use std::sync::Arc;

/// The OpenAPI document of REST v1, served at `/v1/openapi.json`.
pub const OPENAPI_JSON: &str = include_str!("../openapi.json");

/// Most ids one `GET /v1/users?ids=` may name.
pub const MAX_USER_IDS: usize = 1000;

const JSON: &str = "application/json";

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

impl RestResponse {
    /// A JSON body with the given status.
    pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(body) => Self {
                status,
                content_type: JSON,
                body: body.into(),
            },
            Err(e) => Self::error(&ApiError::new(
                ErrorCode::Internal,
                format!("encoding response: {e}"),
            )),
        }
    }

    /// `{"error":{"code","msg"}}` with the code's HTTP status.
    pub fn error(error: &ApiError) -> Self {
        let status = StatusCode::from_u16(error.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Self {
            status,
            content_type: JSON,
            body: error.to_body().to_string().into(),
        }
    }
}

/// The REST v1 router.
pub struct RestApi {
    core: Arc<dyn CoreApi>,
    flannel: Arc<Flannel>,
    verifier: Arc<TokenVerifier>,
    allow_team_creation: bool,
    web_assets: Option<WebAssets>,
}

impl fmt::Debug for RestApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RestApi")
            .field("allow_team_creation", &self.allow_team_creation)
            .field("web_assets", &self.web_assets.is_some())
            .finish_non_exhaustive()
    }
}

/// Which endpoint a path names; the label doubles as the metrics route.
enum Route<'a> {
    Healthz,
    Metrics,
    OpenApi,
    Web,
    Rtm,
    Teams,
    Login,
    Users,
    Channels,
    ChannelJoin(&'a str),
    ChannelLeave(&'a str),
    ChannelMembers(&'a str),
    ChannelHistory(&'a str),
    Dms,
    Messages,
    Boot,
    PushSubscriptions,
    PushSubscription(&'a str),
}

impl Route<'_> {
    fn label(&self) -> &'static str {
        match self {
            Self::Healthz => "/healthz",
            Self::Metrics => "/metrics",
            Self::OpenApi => "/v1/openapi.json",
            Self::Web => "/static",
            Self::Rtm => "/v1/rtm",
            Self::Teams => "/v1/teams",
            Self::Login => "/v1/auth/login",
            Self::Users => "/v1/users",
            Self::Channels => "/v1/channels",
            Self::ChannelJoin(_) => "/v1/channels/{id}/join",
            Self::ChannelLeave(_) => "/v1/channels/{id}/leave",
            Self::ChannelMembers(_) => "/v1/channels/{id}/members",
            Self::ChannelHistory(_) => "/v1/channels/{id}/history",
            Self::Dms => "/v1/dms",
            Self::Messages => "/v1/messages",
            Self::Boot => "/v1/boot",
            Self::PushSubscriptions => "/v1/push/subscriptions",
            Self::PushSubscription(_) => "/v1/push/subscriptions/{id}",
        }
    }

    fn parse(path: &str) -> Option<Route<'_>> {
        if path == "/" || path.starts_with("/static/") {
            return Some(Route::Web);
        }
        let rest = path.strip_prefix('/')?;
        let segments: Vec<&str> = rest.split('/').collect();
        let route = match segments.as_slice() {
            ["healthz"] => Route::Healthz,
            ["metrics"] => Route::Metrics,
            ["v1", "openapi.json"] => Route::OpenApi,
            ["v1", "rtm"] => Route::Rtm,
            ["v1", "teams"] => Route::Teams,
            ["v1", "auth", "login"] => Route::Login,
            ["v1", "users"] => Route::Users,
            ["v1", "channels"] => Route::Channels,
            ["v1", "channels", id, "join"] if !id.is_empty() => Route::ChannelJoin(id),
            ["v1", "channels", id, "leave"] if !id.is_empty() => Route::ChannelLeave(id),
            ["v1", "channels", id, "members"] if !id.is_empty() => Route::ChannelMembers(id),
            ["v1", "channels", id, "history"] if !id.is_empty() => Route::ChannelHistory(id),
            ["v1", "dms"] => Route::Dms,
            ["v1", "messages"] => Route::Messages,
            ["v1", "boot"] => Route::Boot,
            ["v1", "push", "subscriptions"] => Route::PushSubscriptions,
            ["v1", "push", "subscriptions", id] if !id.is_empty() => Route::PushSubscription(id),
            _ => return None,
        };
        Some(route)
    }
}

impl RestApi {
    /// A router over the core, the edge cache and the token verifier.
    pub fn new(
        core: Arc<dyn CoreApi>,
        flannel: Arc<Flannel>,
        verifier: Arc<TokenVerifier>,
        allow_team_creation: bool,
    ) -> Self {
        metrics::init();
        Self {
            core,
            flannel,
            verifier,
            allow_team_creation,
            web_assets: None,
        }
    }

    /// Serves `/` and `/static/...` from `assets` (the web client).
    pub fn with_web_assets(mut self, assets: Option<WebAssets>) -> Self {
        self.web_assets = assets;
        self
    }

    /// The verifier RTM upgrades are checked with, so both paths agree on who is authed.
    pub fn verifier(&self) -> &TokenVerifier {
        &self.verifier
    }

    /// Answers one request.
    pub async fn handle(&self, req: RestRequest) -> RestResponse {
        let route = Route::parse(&req.path);
        let label = route.as_ref().map_or("unmatched", Route::label);
        let response = match route {
            None => RestResponse::error(&ApiError::new(ErrorCode::NotFound, "no such route")),
            Some(route) => match self.route(route, &req).await {
                Ok(response) => response,
                Err(error) => RestResponse::error(&error),
            },
        };
        metrics::REST_REQUESTS
            .with_label_values(&[label, response.status.as_str()])
            .inc();
        response
    }

    async fn route(&self, route: Route<'_>, req: &RestRequest) -> Result<RestResponse, ApiError> {
        use Method as M;
        let method = &req.method;
        let ok = |value: &dyn erased::Json| Ok(value.respond(StatusCode::OK));
        let created = |value: &dyn erased::Json| Ok(value.respond(StatusCode::CREATED));
        match (route, method) {
            (Route::Healthz, &M::GET) => ok(&OkResponse { ok: true }),
            (Route::Metrics, &M::GET) => Ok(RestResponse {
                status: StatusCode::OK,
                content_type: prometheus::TEXT_FORMAT,
                body: metrics::render().into(),
            }),
            (Route::OpenApi, &M::GET) => Ok(RestResponse {
                status: StatusCode::OK,
                content_type: JSON,
                body: Bytes::from_static(OPENAPI_JSON.as_bytes()),
            }),
            (Route::Web, &M::GET) => {
                let asset = self
                    .web_assets
                    .as_ref()
                    .and_then(|assets| assets(&req.path));
                match asset {
                    Some((content_type, body)) => Ok(RestResponse {
                        status: StatusCode::OK,
                        content_type,
                        body,
                    }),
                    None => Err(ApiError::new(ErrorCode::NotFound, "no such file")),
                }
            }
            (Route::Rtm, &M::GET) => Err(ApiError::new(
                ErrorCode::InvalidArgument,
                "RTM needs a WebSocket upgrade over HTTP/1.1",
            )),
            (Route::Teams, &M::POST) => {
                if !self.allow_team_creation {
                    return Err(ApiError::new(
                        ErrorCode::TeamCreationDisabled,
                        "team creation is turned off on this deployment",
                    ));
                }
                let body: CreateTeamRequest = parse_body(req)?;
                created(&self.core.create_team(body).await?)
            }
            (Route::Login, &M::POST) => {
                let body: LoginRequest = parse_body(req)?;
                ok(&self.core.login(body).await?)
            }
            (Route::Users, &M::POST) => {
                let caller = self.authenticate(req)?;
                let body: NewUser = parse_body(req)?;
                let user = self.core.create_user(&caller, body).await?;
                created(&UserResponse { user })
            }
            (Route::Users, &M::GET) => {
                let caller = self.authenticate(req)?;
                let ids = user_ids_param(req.query.as_deref())?;
                let users = self.flannel.users(&caller, &ids).await?;
                ok(&UsersResponse { users })
            }
            (Route::Channels, &M::POST) => {
                let caller = self.authenticate(req)?;
                let body: CreateChannelRequest = parse_body(req)?;
                let channel = self.core.create_channel(&caller, body).await?;
                created(&ChannelResponse { channel })
            }
            (Route::Channels, &M::GET) => {
                let caller = self.authenticate(req)?;
                let channels = self.core.list_channels(&caller).await?;
                ok(&ChannelsResponse { channels })
            }
            (Route::ChannelJoin(id), &M::POST) => {
                let caller = self.authenticate(req)?;
                let channel = self.core.join_channel(&caller, &id.into()).await?;
                ok(&ChannelResponse { channel })
            }
            (Route::ChannelLeave(id), &M::POST) => {
                let caller = self.authenticate(req)?;
                self.core.leave_channel(&caller, &id.into()).await?;
                ok(&OkResponse { ok: true })
            }
            (Route::ChannelMembers(id), &M::POST) => {
                let caller = self.authenticate(req)?;
                let body: UserIdsRequest = parse_body(req)?;
                self.core
                    .add_members(&caller, &id.into(), &body.user_ids)
                    .await?;
                ok(&OkResponse { ok: true })
            }
            (Route::ChannelHistory(id), &M::GET) => {
                let caller = self.authenticate(req)?;
                let (before, limit) = history_params(req.query.as_deref())?;
                let channel = ChannelId::from(id);
                ok(&self.core.history(&caller, &channel, before, limit).await?)
            }
            (Route::Dms, &M::POST) => {
                let caller = self.authenticate(req)?;
                let body: UserIdsRequest = parse_body(req)?;
                let channel = self.core.open_dm(&caller, &body.user_ids).await?;
                ok(&ChannelResponse { channel })
            }
            (Route::Messages, &M::POST) => {
                let caller = self.authenticate(req)?;
                let body: PostMessageRequest = parse_body(req)?;
                let message = self.core.post_message(&caller, body).await?;
                created(&MessageResponse { message })
            }
            (Route::Boot, &M::GET) => {
                let caller = self.authenticate(req)?;
                ok(&self.flannel.boot(&caller).await?)
            }
            (Route::PushSubscriptions, &M::POST) => {
                let caller = self.authenticate(req)?;
                let body: CreatePushSubscriptionRequest = parse_body(req)?;
                let subscription = self.core.create_push_subscription(&caller, body).await?;
                created(&PushSubscriptionResponse { subscription })
            }
            (Route::PushSubscriptions, &M::GET) => {
                let caller = self.authenticate(req)?;
                let subscriptions = self.core.push_subscriptions(&caller).await?;
                ok(&PushSubscriptionsResponse { subscriptions })
            }
            (Route::PushSubscription(id), &M::DELETE) => {
                let caller = self.authenticate(req)?;
                self.core.delete_push_subscription(&caller, id).await?;
                ok(&OkResponse { ok: true })
            }
            (_, method) => Err(ApiError::new(
                ErrorCode::MethodNotAllowed,
                format!("{method} is not served on this route"),
            )),
        }
    }

    /// The caller named by the request's `Authorization: Bearer` token.
    pub fn authenticate(&self, req: &RestRequest) -> Result<Caller, ApiError> {
        let token = bearer_token(&req.headers).ok_or_else(missing_token)?;
        verify_token(&self.verifier, token)
    }
}

fn missing_token() -> ApiError {
    ApiError::new(
        ErrorCode::NotAuthed,
        "send a token as Authorization: Bearer TOKEN",
    )
}

/// The token of an `Authorization: Bearer TOKEN` header, if there is one.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Checks a token; every failure looks the same to the client (`not_authed`), the reason
/// goes to the log only.
pub fn verify_token(verifier: &TokenVerifier, token: &str) -> Result<Caller, ApiError> {
    match verifier.verify(token) {
        Ok(claims) => Ok(Caller {
            team: claims.team,
            user: claims.user,
        }),
        Err(e) => {
            tracing::debug!(error = %e, "token rejected");
            Err(ApiError::new(
                ErrorCode::NotAuthed,
                "the token is invalid or expired",
            ))
        }
    }
}

fn parse_body<T: DeserializeOwned>(req: &RestRequest) -> Result<T, ApiError> {
    if req.body.len() > MAX_BODY_BYTES {
        return Err(body_too_large());
    }
    serde_json::from_slice(&req.body).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidJson,
            format!("request body is not the expected JSON: {e}"),
        )
    })
}

/// The error for a body above `limits::MAX_BODY_BYTES` (413).
pub fn body_too_large() -> ApiError {
    ApiError::new(
        ErrorCode::FrameTooLarge,
        format!("request bodies are limited to {MAX_BODY_BYTES} bytes"),
    )
}

/// `(name, value)` pairs of a query string, percent-decoded.
pub fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(name), percent_decode(value))
        })
        .collect()
}

/// The first value of a query parameter.
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query_pairs(query)
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v)
}

fn percent_decode(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn user_ids_param(query: Option<&str>) -> Result<Vec<UserId>, ApiError> {
    let raw = query_param(query, "ids")
        .ok_or_else(|| ApiError::new(ErrorCode::InvalidArgument, "name users as ?ids=U1,U2"))?;
    let ids: Vec<UserId> = raw
        .split(',')
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .map(UserId::from)
        .collect();
    if ids.len() > MAX_USER_IDS {
        return Err(ApiError::new(
            ErrorCode::InvalidArgument,
            format!("at most {MAX_USER_IDS} ids per request"),
        ));
    }
    Ok(ids)
}

fn history_params(query: Option<&str>) -> Result<(Option<u64>, usize), ApiError> {
    let mut before = None;
    let mut limit = DEFAULT_HISTORY_LIMIT;
    for (name, value) in query_pairs(query) {
        match name.as_str() {
            "before" => {
                before = Some(value.parse::<u64>().map_err(|_| {
                    ApiError::new(ErrorCode::InvalidArgument, "before must be a seq number")
                })?);
            }
            "limit" => {
                let n = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| {
                        ApiError::new(
                            ErrorCode::InvalidArgument,
                            "limit must be a positive integer",
                        )
                    })?;
                // Above the maximum the client still gets a useful page, as Slack does.
                limit = n.min(MAX_HISTORY_LIMIT);
            }
            _ => {}
        }
    }
    Ok((before, limit))
}

/// Lets the route table hand differently typed bodies to one response helper.
mod erased {
    use super::RestResponse;
    use http::StatusCode;
    use serde::Serialize;

    pub trait Json {
        fn respond(&self, status: StatusCode) -> RestResponse;
    }

    impl<T: Serialize> Json for T {
        fn respond(&self, status: StatusCode) -> RestResponse {
            RestResponse::json(status, self)
        }
    }
}
