//! The server under test and lean clients for it: a keep-alive HTTPS connection and a WSS
//! RTM connection. They return errors instead of panicking (unlike test-support's) so a
//! benchmark can count failures, and they reuse one connection per worker so a request's
//! latency is the server's work, not a TLS handshake per request.

use bytes::Bytes;
use confab::dev::{DevNode, DevOptions};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::AsyncBufReadExt;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Any failure while setting up or driving a scenario.
pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T> = std::result::Result<T, Error>;

/// The password of every benchmark user.
pub const PASSWORD: &str = "bench password 1234";

/// The edge's default per-connection RTM rate (EdgeSettings::rate_per_sec); a sender
/// above it would measure the rate limiter, not the server.
pub const MAX_RATE_PER_SENDER: f64 = 100.0;

/// Open files a process needs besides its sockets (store files, listeners, std streams).
const FD_HEADROOM: u64 = 256;

/// Raises this process's soft open-files limit to its hard limit (children started later,
/// such as a `--server-bin` server, inherit it); returns the limit now in force.
pub fn raise_open_files_limit() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            return limit.maximum;
        }
    }
    limit.current
}

/// Refuses a run whose `connections` cannot fit under the open-files limit: in-process,
/// client and server ends of every connection live in this process (two descriptors each).
pub fn check_open_files(connections: usize, in_process: bool) -> Result<()> {
    let Some(limit) = rustix::process::getrlimit(rustix::process::Resource::Nofile).current else {
        return Ok(());
    };
    let per_connection = if in_process { 2 } else { 1 };
    let needed = connections as u64 * per_connection + FD_HEADROOM;
    if needed > limit {
        return Err(format!(
            "{connections} connections need about {needed} open files in this process{}, \
             but the limit is {limit}: {}",
            if in_process {
                " (in-process: client and server end of each)"
            } else {
                ""
            },
            if in_process {
                "use --server-bin or fewer connections"
            } else {
                "raise the hard limit (ulimit -Hn) or use fewer connections"
            }
        )
        .into());
    }
    Ok(())
}

/// Where the server runs. A separate process keeps the load generator's CPU use out of the
/// server's runtime (though on one box they still share cores); in-process needs no build
/// of the `confab` binary and is what `--quick` runs in CI use.
pub enum Server {
    InProcess {
        node: DevNode,
        _dir: tempfile::TempDir,
    },
    Process {
        child: tokio::process::Child,
        _dir: tempfile::TempDir,
    },
}

/// How clients reach the server.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
}

impl Server {
    /// Starts `confab dev` on a fresh temporary directory: in this process, or by running
    /// `server_bin` and reading the address it prints.
    pub async fn start(server_bin: Option<&Path>) -> Result<(Self, Target)> {
        let dir = tempfile::tempdir()?;
        let (server, addr, ca_path) = match server_bin {
            None => {
                let options =
                    DevOptions::new(dir.path().to_path_buf(), "127.0.0.1:0".parse().unwrap());
                let node = DevNode::start(options).await?;
                let (addr, ca_path) = (node.addr, node.ca_path.clone());
                (Self::InProcess { node, _dir: dir }, addr, ca_path)
            }
            Some(bin) => {
                let mut child = tokio::process::Command::new(bin)
                    .args(["dev", "--listen", "127.0.0.1:0", "--data-dir"])
                    .arg(dir.path())
                    .stdout(std::process::Stdio::piped())
                    .kill_on_drop(true)
                    .spawn()
                    .map_err(|e| format!("run {}: {e}", bin.display()))?;
                let stdout = child.stdout.take().ok_or("no stdout")?;
                let addr = tokio::time::timeout(Duration::from_secs(30), listening_addr(stdout))
                    .await
                    .map_err(|_| "the server printed no address within 30 s")??;
                let ca_path: PathBuf = dir.path().join("tls").join("ca.pem");
                (Self::Process { child, _dir: dir }, addr, ca_path)
            }
        };
        let tls =
            confab_ws_terminator::tls::client_config_trusting(&ca_path, &[b"http/1.1".to_vec()])?;
        Ok((server, Target { addr, tls }))
    }

    /// The server's process id when it runs as its own process.
    pub fn pid(&self) -> Option<u32> {
        match self {
            Self::InProcess { .. } => None,
            Self::Process { child, .. } => child.id(),
        }
    }

    /// Graceful stop of an in-process node; a child is killed (its data is thrown away).
    pub async fn stop(self) {
        match self {
            Self::InProcess { node, .. } => node.shutdown(Duration::from_secs(5)).await,
            Self::Process { mut child, .. } => {
                let _ = child.kill().await;
            }
        }
    }
}

/// Reads the child's stdout until `confab dev listening on https://ADDR ...`; the rest of
/// its output is drained in the background so the child never blocks on a full pipe.
async fn listening_addr(stdout: tokio::process::ChildStdout) -> Result<SocketAddr> {
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    while let Some(line) = lines.next_line().await? {
        if let Some(rest) = line.strip_prefix("confab dev listening on https://") {
            let addr = rest.split_whitespace().next().unwrap_or_default().parse()?;
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            return Ok(addr);
        }
    }
    Err("the server exited before listening".into())
}

impl Target {
    /// A target at `addr` whose certificate chains to the CA in `ca_path`.
    pub fn trusting(addr: SocketAddr, ca_path: &Path) -> Result<Self> {
        let tls =
            confab_ws_terminator::tls::client_config_trusting(ca_path, &[b"http/1.1".to_vec()])?;
        Ok(Self { addr, tls })
    }

    async fn tls_stream(&self) -> Result<TlsStream<tokio::net::TcpStream>> {
        let tcp = tokio::net::TcpStream::connect(self.addr).await?;
        tcp.set_nodelay(true)?;
        let name = rustls_pki_types::ServerName::try_from("localhost")?;
        Ok(TlsConnector::from(Arc::clone(&self.tls))
            .connect(name, tcp)
            .await?)
    }
}

/// One keep-alive HTTP/1.1 connection; requests on it run one at a time.
pub struct Http {
    sender: SendRequest<Full<Bytes>>,
}

impl Http {
    pub async fn connect(target: &Target) -> Result<Self> {
        let tls = target.tls_stream().await?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(connection);
        Ok(Self { sender })
    }

    /// Status and raw body of one request.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<(u16, Bytes)> {
        self.sender.ready().await?;
        let mut request = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost")
            .header("content-type", "application/json");
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let response = self
            .sender
            .send_request(request.body(Full::new(body))?)
            .await?;
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await?.to_bytes();
        Ok((status, bytes))
    }

    /// A request that must answer 2xx; returns the JSON body.
    pub async fn call(
        &mut self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Value> {
        let (status, bytes) = self.request(method, path, token, body).await?;
        if !(200..300).contains(&status) {
            return Err(format!(
                "{method} {path}: {status} {}",
                String::from_utf8_lossy(&bytes)
            )
            .into());
        }
        Ok(serde_json::from_slice(&bytes)?)
    }
}

/// A logged-in user.
#[derive(Clone, Debug)]
pub struct Session {
    pub token: String,
    pub user_id: String,
    pub domain: String,
}

/// A team domain unlikely to exist already (a reused `--server-bin` data dir is fresh
/// anyway, but domains must also be valid across runs against one server).
fn unique_domain() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("bench{}x{nanos}", std::process::id())
}

/// A new team; returns its owner (an admin) logged in.
pub async fn create_team(target: &Target) -> Result<Session> {
    let domain = unique_domain();
    let mut http = Http::connect(target).await?;
    let body = json!({"name": "Bench", "domain": domain,
        "owner": {"email": format!("owner@{domain}.example"), "name": "owner", "password": PASSWORD}});
    let answer = http.call("POST", "/v1/teams", None, Some(&body)).await?;
    Ok(Session {
        token: answer["token"].as_str().ok_or("no token")?.to_owned(),
        user_id: answer["user"]["id"]
            .as_str()
            .ok_or("no user id")?
            .to_owned(),
        domain,
    })
}

/// Runs `job(i)` for `i in 0..count` on `concurrency` workers, each with its own
/// connection; results come back in index order. Bounded because user creation and login
/// hash passwords (argon2): more parallelism than the server has cores only queues.
pub async fn for_each_indexed<T, F, Fut>(
    target: &Target,
    count: usize,
    concurrency: usize,
    job: F,
) -> Result<Vec<T>>
where
    T: Send + 'static,
    F: Fn(Http, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = (Http, Result<T>)> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let job = Arc::new(job);
    let mut workers = Vec::new();
    for _ in 0..concurrency.clamp(1, count.max(1)) {
        let (next, job, target) = (Arc::clone(&next), Arc::clone(&job), target.clone());
        workers.push(tokio::spawn(async move {
            let mut http = Http::connect(&target).await?;
            let mut done = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return Ok::<_, Error>(done);
                }
                let (back, result) = job(http, i).await;
                http = back;
                done.push((i, result?));
            }
        }));
    }
    let mut all = Vec::with_capacity(count);
    for worker in workers {
        all.extend(worker.await??);
    }
    all.sort_by_key(|(i, _)| *i);
    Ok(all.into_iter().map(|(_, t)| t).collect())
}

/// Creates `count` members of the admin's team; returns their ids and emails.
pub async fn create_users(
    target: &Target,
    admin: &Session,
    count: usize,
    concurrency: usize,
) -> Result<Vec<(String, String)>> {
    let admin = admin.clone();
    for_each_indexed(target, count, concurrency, move |mut http, i| {
        let admin = admin.clone();
        async move {
            let email = format!("u{i}@{}.example", admin.domain);
            let body = json!({"email": email, "name": format!("user{i}"), "password": PASSWORD});
            let result = http
                .call("POST", "/v1/users", Some(&admin.token), Some(&body))
                .await
                .and_then(|answer| {
                    let id = answer["user"]["id"].as_str().ok_or("no user id")?;
                    Ok((id.to_owned(), email))
                });
            (http, result)
        }
    })
    .await
}

/// Logs each email in.
pub async fn login_all(
    target: &Target,
    domain: &str,
    emails: Vec<String>,
    concurrency: usize,
) -> Result<Vec<Session>> {
    let (domain, emails) = (domain.to_owned(), Arc::new(emails));
    let count = emails.len();
    for_each_indexed(target, count, concurrency, move |mut http, i| {
        let (domain, emails) = (domain.clone(), Arc::clone(&emails));
        async move {
            let body = json!({"team": domain, "email": emails[i], "password": PASSWORD});
            let result = http
                .call("POST", "/v1/auth/login", None, Some(&body))
                .await
                .and_then(|answer| {
                    Ok(Session {
                        token: answer["token"].as_str().ok_or("no token")?.to_owned(),
                        user_id: answer["user"]["id"]
                            .as_str()
                            .ok_or("no user id")?
                            .to_owned(),
                        domain: domain.clone(),
                    })
                });
            (http, result)
        }
    })
    .await
}

/// A new team of `count` logged-in users, its admin (the owner) first. Creation and
/// login hash passwords, so they run at the server's argon2 pace (8 at a time).
pub async fn team_with_users(target: &Target, count: usize) -> Result<Vec<Session>> {
    let admin = create_team(target).await?;
    let users = create_users(target, &admin, count.saturating_sub(1), 8).await?;
    let emails = users.into_iter().map(|(_, email)| email).collect();
    let mut sessions = vec![admin.clone()];
    sessions.extend(login_all(target, &admin.domain, emails, 8).await?);
    Ok(sessions)
}

/// A public channel created by `owner`; returns its id.
pub async fn create_channel(http: &mut Http, owner: &Session, name: &str) -> Result<String> {
    let answer = http
        .call(
            "POST",
            "/v1/channels",
            Some(&owner.token),
            Some(&json!({"name": name, "private": false})),
        )
        .await?;
    Ok(answer["channel"]["id"]
        .as_str()
        .ok_or("no channel id")?
        .to_owned())
}

/// Adds users to a channel, in chunks within the API's per-request bound.
pub async fn add_members(
    http: &mut Http,
    by: &Session,
    channel: &str,
    user_ids: &[String],
) -> Result<()> {
    for chunk in user_ids.chunks(500) {
        http.call(
            "POST",
            &format!("/v1/channels/{channel}/members"),
            Some(&by.token),
            Some(&json!({"user_ids": chunk})),
        )
        .await?;
    }
    Ok(())
}

/// A WSS RTM connection after `hello`.
pub type Rtm = WebSocketStream<TlsStream<tokio::net::TcpStream>>;

/// Opens an RTM connection with small buffers: at thousands of connections in one
/// process the default 128 KiB read buffer each would be the benchmark's own memory hog.
pub async fn connect_rtm(target: &Target, token: &str) -> Result<Rtm> {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let authorization = format!("Bearer {token}");
    let mut ws = connect_ws(target, "/v1/rtm", &[("authorization", &authorization)]).await?;
    match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
        Ok(Some(Ok(Message::Text(text)))) if text.contains("\"hello\"") => Ok(ws),
        other => Err(format!("expected hello, got {other:?}").into()),
    }
}

/// Opens a WSS connection to `path` with extra request headers and the same small
/// buffers, for confab and for every peer server alike.
pub async fn connect_ws(target: &Target, path: &str, headers: &[(&str, &str)]) -> Result<Rtm> {
    let stream = target.tls_stream().await?;
    let port = target.addr.port();
    let mut request = http::Request::builder()
        .uri(format!("wss://localhost:{port}{path}"))
        .header("host", format!("localhost:{port}"))
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header(
            "sec-websocket-key",
            tokio_tungstenite::tungstenite::handshake::client::generate_key(),
        );
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let config = WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0);
    let (ws, _) =
        tokio_tungstenite::client_async_with_config(request.body(())?, stream, Some(config))
            .await?;
    Ok(ws)
}

/// Runs `job(i)` for `i in 0..count` on `concurrency` tasks; results in index order. For
/// work that needs no HTTP connection of its own (opening WebSockets).
pub async fn map_indexed<T, F, Fut>(count: usize, concurrency: usize, job: F) -> Result<Vec<T>>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let job = Arc::new(job);
    let mut workers = Vec::new();
    for _ in 0..concurrency.clamp(1, count.max(1)) {
        let (next, job) = (Arc::clone(&next), Arc::clone(&job));
        workers.push(tokio::spawn(async move {
            let mut done = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return Ok::<_, Error>(done);
                }
                done.push((i, job(i).await?));
            }
        }));
    }
    let mut all = Vec::with_capacity(count);
    for worker in workers {
        all.extend(worker.await??);
    }
    all.sort_by_key(|(i, _)| *i);
    Ok(all.into_iter().map(|(_, t)| t).collect())
}

/// Sends one RTM command (the `id` is the caller's) and returns its reply; events that
/// arrive meanwhile are skipped. An error reply is an error.
pub async fn rtm_command(ws: &mut Rtm, id: u64, mut command: Value) -> Result<Value> {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    command["id"] = json!(id);
    ws.send(Message::text(command.to_string())).await?;
    let reply = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(frame) = ws.next().await {
            if let Message::Text(text) = frame? {
                let frame: Value = serde_json::from_str(&text)?;
                if frame["reply_to"] == json!(id) {
                    return Ok(frame);
                }
            }
        }
        Err::<Value, Error>("the connection closed before the reply".into())
    })
    .await
    .map_err(|_| format!("no reply to {command} within 30 s"))??;
    if reply["ok"] != json!(true) {
        return Err(format!("{command}: {reply}").into());
    }
    Ok(reply)
}

/// Sleeps until `deadline`, or forever when there is none: a `select!` arm for a
/// timeout that starts only once something is known (e.g. the last send).
pub async fn sleep_until_or_never(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// A small deterministic PRNG (xorshift64*): random `before` points need no crypto
/// quality, and a fixed seed makes runs comparable.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    /// Uniform-enough in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }

    /// `k` distinct indices in `0..n`, never `except`, in random order; fewer when there
    /// are not that many.
    pub fn distinct(&mut self, n: usize, k: usize, except: Option<usize>) -> Vec<usize> {
        let available = n - usize::from(except.is_some_and(|e| e < n));
        let k = k.min(available);
        if k * 2 > available {
            // Most of the range: a partial shuffle of all of it.
            let mut all: Vec<usize> = (0..n).filter(|i| Some(*i) != except).collect();
            for i in 0..k {
                let j = i + self.below((all.len() - i) as u64) as usize;
                all.swap(i, j);
            }
            all.truncate(k);
            return all;
        }
        let mut picked = Vec::with_capacity(k);
        let mut taken = std::collections::HashSet::with_capacity(k);
        while picked.len() < k {
            let i = self.below(n as u64) as usize;
            if Some(i) != except && taken.insert(i) {
                picked.push(i);
            }
        }
        picked
    }
}
