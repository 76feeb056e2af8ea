//! A crash loses no acknowledged message: the real `confab` binary is killed with
//! SIGKILL right after acks and restarted on the same data directory. SIGTERM drains:
//! clients get `goodbye`.

use confab_test_support::cluster::signal;
use confab_test_support::{RestClient, RtmClient, unique};
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Starts `confab dev` on a free port; returns the child and its address.
fn spawn_confab(data_dir: &Path) -> (Child, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_confab"))
        .args(["dev", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn confab");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("confab printed its address")
            .expect("stdout");
        if let Some(rest) = line.strip_prefix("confab dev listening on https://") {
            break rest
                .split_whitespace()
                .next()
                .unwrap()
                .parse()
                .expect("address");
        }
    };
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acked_message_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr) = spawn_confab(dir.path());
    let ca = dir.path().join("tls/ca.pem");
    let rest = RestClient::new(addr, &ca);
    let alice = rest.create_team().await;
    let channel = rest.create_channel(&alice, "durable", false).await;
    let mut rtm = RtmClient::connect(addr, rest.tls_config(), &alice.token).await;

    // Pipeline sends; collect the acks that arrive, then kill without warning.
    let mut ids = Vec::new();
    for i in 0..150 {
        ids.push(rtm.send(json!({"type":"message","channel":channel,"text":format!("d{i}"),"client_msg_id":unique("d")})).await);
    }
    let mut acked = Vec::new();
    for id in ids.iter().take(100) {
        let reply = rtm.reply(*id).await;
        assert_eq!(reply["ok"], true, "{reply}");
        acked.push(reply["message"].clone());
    }
    signal(&child, "KILL");
    child.wait().unwrap();

    let (mut child, addr) = spawn_confab(dir.path());
    let rest = RestClient::new(addr, &ca);
    let session = rest.login(&alice.domain, &alice.email).await;
    let mut stored = Vec::new();
    let mut before: Option<u64> = None;
    loop {
        let path = match before {
            Some(b) => format!("/v1/channels/{channel}/history?limit=200&before={b}"),
            None => format!("/v1/channels/{channel}/history?limit=200"),
        };
        let (status, page) = rest.get(&path, Some(&session.token)).await;
        assert_eq!(status, 200, "{page}");
        let messages = page["messages"].as_array().unwrap().clone();
        before = messages.last().and_then(|m| m["seq"].as_u64());
        stored.extend(messages);
        if !page["has_more"].as_bool().unwrap() {
            break;
        }
    }
    for message in &acked {
        assert!(
            stored.contains(message),
            "acked message lost after kill -9: {message}"
        );
    }
    let seqs: Vec<u64> = stored
        .iter()
        .rev()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "still dense after the crash"
    );
    // New sends continue the sequence.
    let (status, body) = rest
        .post_message(&session, &channel, "after", "after-crash")
        .await;
    assert_eq!(status, 201);
    assert_eq!(body["message"]["seq"], json!(seqs.len() as u64 + 1));
    signal(&child, "KILL");
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_says_goodbye_and_keeps_acked_messages() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr) = spawn_confab(dir.path());
    let ca = dir.path().join("tls/ca.pem");
    let rest = RestClient::new(addr, &ca);
    let alice = rest.create_team().await;
    let channel = rest.create_channel(&alice, "bye", false).await;
    let mut rtm = RtmClient::connect(addr, rest.tls_config(), &alice.token).await;
    let reply = rtm.send_message(&channel, "before stop", "b1").await;
    assert_eq!(reply["ok"], true);

    signal(&child, "TERM");
    let goodbye = rtm.next_event("goodbye").await;
    assert!(goodbye["reason"].is_string(), "{goodbye}");
    let status = child.wait().unwrap();
    assert!(status.success(), "graceful exit: {status}");

    let (mut child, addr) = spawn_confab(dir.path());
    let rest = RestClient::new(addr, &ca);
    let session = rest.login(&alice.domain, &alice.email).await;
    let (_, history) = rest
        .get(
            &format!("/v1/channels/{channel}/history"),
            Some(&session.token),
        )
        .await;
    assert_eq!(history["messages"][0]["text"], "before stop", "{history}");
    signal(&child, "KILL");
    child.wait().unwrap();
}
