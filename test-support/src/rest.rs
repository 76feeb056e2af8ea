//! A small HTTPS (HTTP/1.1) JSON client trusting the node's local CA, and the usual
//! setup steps (team, users, channels) as one-liners.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use tokio_rustls::TlsConnector;

/// Talks REST v1 to one node.
#[derive(Clone)]
pub struct RestClient {
    pub addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
}

/// A logged-in user.
#[derive(Clone, Debug)]
pub struct Session {
    pub token: String,
    pub user_id: String,
    pub team_id: String,
    pub domain: String,
    pub email: String,
}

/// The password every test user gets.
pub const PASSWORD: &str = "correct horse battery";

impl RestClient {
    pub fn new(addr: SocketAddr, ca_path: &Path) -> Self {
        let tls =
            confab_ws_terminator::tls::client_config_trusting(ca_path, &[b"http/1.1".to_vec()])
                .expect("client TLS config");
        Self { addr, tls }
    }

    /// The TLS configuration trusting the node's CA (for WSS too).
    pub fn tls_config(&self) -> Arc<rustls::ClientConfig> {
        Arc::clone(&self.tls)
    }

    /// One request on a fresh connection; returns status and JSON body (`Null` if empty
    /// or not JSON). Raw `body` bytes are sent as they are, to test malformed input.
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Bytes>,
    ) -> (u16, Value) {
        let (status, bytes) = self.raw_bytes(method, path, token, body).await;
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// Like [`RestClient::raw`] but returns the body bytes.
    pub async fn raw_bytes(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Bytes>,
    ) -> (u16, Bytes) {
        let tcp = tokio::net::TcpStream::connect(self.addr)
            .await
            .expect("connect");
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let tls = TlsConnector::from(Arc::clone(&self.tls))
            .connect(name, tcp)
            .await
            .expect("TLS handshake");
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .expect("HTTP/1.1 handshake");
        tokio::spawn(connection);
        let mut request = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost")
            .header("content-type", "application/json");
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let request = request.body(Full::new(body.unwrap_or_default())).unwrap();
        let response = sender.send_request(request).await.expect("response");
        let status = response.status().as_u16();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (status, bytes)
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        self.raw("GET", path, token, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        self.raw("POST", path, token, Some(Bytes::from(body.to_string())))
            .await
    }

    /// A new team; returns its admin's session.
    pub async fn create_team(&self) -> Session {
        let domain = crate::unique("t");
        let email = format!("owner@{domain}.example");
        let (status, body) = self
            .post(
                "/v1/teams",
                None,
                json!({"name": "Team", "domain": domain, "owner": {"email": email, "name": "Owner", "password": PASSWORD}}),
            )
            .await;
        assert_eq!(status, 201, "create team: {body}");
        Session {
            token: body["token"].as_str().unwrap().to_owned(),
            user_id: body["user"]["id"].as_str().unwrap().to_owned(),
            team_id: body["team"]["id"].as_str().unwrap().to_owned(),
            domain,
            email,
        }
    }

    /// A new member of the admin's team, logged in.
    pub async fn create_user(&self, admin: &Session, name: &str) -> Session {
        let email = format!("{}@{}.example", crate::unique(name), admin.domain);
        let (status, body) = self
            .post(
                "/v1/users",
                Some(&admin.token),
                json!({"email": email, "name": name, "password": PASSWORD}),
            )
            .await;
        assert_eq!(status, 201, "create user: {body}");
        self.login(&admin.domain, &email).await
    }

    pub async fn login(&self, domain: &str, email: &str) -> Session {
        let (status, body) = self
            .post(
                "/v1/auth/login",
                None,
                json!({"team": domain, "email": email, "password": PASSWORD}),
            )
            .await;
        assert_eq!(status, 200, "login: {body}");
        Session {
            token: body["token"].as_str().unwrap().to_owned(),
            user_id: body["user"]["id"].as_str().unwrap().to_owned(),
            team_id: body["user"]["team"].as_str().unwrap_or_default().to_owned(),
            domain: domain.to_owned(),
            email: email.to_owned(),
        }
    }

    /// A channel created by `owner`; returns its id.
    pub async fn create_channel(&self, owner: &Session, name: &str, private: bool) -> String {
        let (status, body) = self
            .post(
                "/v1/channels",
                Some(&owner.token),
                json!({"name": name, "private": private}),
            )
            .await;
        assert_eq!(status, 201, "create channel: {body}");
        body["channel"]["id"].as_str().unwrap().to_owned()
    }

    /// `member` joins (public) or is added by `by` (private).
    pub async fn add_member(&self, by: &Session, channel: &str, member: &Session) {
        let (status, body) = self
            .post(
                &format!("/v1/channels/{channel}/members"),
                Some(&by.token),
                json!({"user_ids": [member.user_id]}),
            )
            .await;
        assert_eq!(status, 200, "add member: {body}");
    }

    /// Posts over REST; returns the message.
    pub async fn post_message(
        &self,
        by: &Session,
        channel: &str,
        text: &str,
        client_msg_id: &str,
    ) -> (u16, Value) {
        self.post(
            "/v1/messages",
            Some(&by.token),
            json!({"channel": channel, "text": text, "client_msg_id": client_msg_id}),
        )
        .await
    }

    /// Every message of a channel, newest first, paging with `before` `page` at a time;
    /// checks that no page holds more than `page`.
    pub async fn full_history(&self, by: &Session, channel: &str, page: usize) -> Vec<Value> {
        let mut all = Vec::new();
        let mut before: Option<u64> = None;
        loop {
            let path = match before {
                Some(b) => format!("/v1/channels/{channel}/history?limit={page}&before={b}"),
                None => format!("/v1/channels/{channel}/history?limit={page}"),
            };
            let (status, body) = self.get(&path, Some(&by.token)).await;
            assert_eq!(status, 200, "{body}");
            let messages = body["messages"].as_array().unwrap().clone();
            assert!(messages.len() <= page, "{body}");
            before = messages.last().and_then(|m| m["seq"].as_u64());
            all.extend(messages);
            if !body["has_more"].as_bool().unwrap() {
                return all;
            }
        }
    }
}
