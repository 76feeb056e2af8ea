//! The link end to end on loopback: a real core (chat service on embedded backends)
//! behind the mutual-TLS listener, reached through [`CoreCluster`].

use confab_auth::{SigningKeyPair, TokenIssuer};
use confab_chat::{Caller, ChatConfig, ChatService, CoreApi};
use confab_link::{ClusterNode, CoreCluster, LinkClient, LinkClientConfig, LinkServerConfig};
use confab_proto::ErrorCode;
use confab_proto::event::TeamEventBody;
use confab_proto::rest::{CreateChannelRequest, CreateTeamRequest, NewUser, PostMessageRequest};
use confab_store::{FjallStore, SyncPolicy};
use confab_ws_terminator::tls;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

struct Core {
    link: confab_link::RunningLink,
    _chat: Arc<ChatService>,
    keys_pem: String,
}

async fn start_core(material: &tls::TlsMaterial, name: &str) -> Core {
    let store = Arc::new(FjallStore::open_temporary(SyncPolicy::Os).unwrap());
    let presence = confab_presence::MemoryPresence::new(Duration::from_secs(75));
    let fanout = confab_events::MemoryFanOut::new();
    let log_dir = tempfile::tempdir().unwrap().keep();
    let log = Arc::new(confab_events::FjallEventLog::open(&log_dir).unwrap());
    let keys = SigningKeyPair::generate().unwrap();
    let issuer = TokenIssuer::new(&keys, Duration::from_secs(3600)).unwrap();
    let chat =
        ChatService::new(store, presence, fanout, log, issuer, ChatConfig::default()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = LinkServerConfig {
        node: name.to_string(),
        token_public_key: keys.public_pem().to_string(),
        tls: tls::link_server_config(material),
        grace: Duration::from_secs(2),
    };
    let link = confab_link::serve(listener, config, chat.clone()).unwrap();
    Core {
        link,
        _chat: chat,
        keys_pem: keys.public_pem().to_string(),
    }
}

fn cluster_of(client: LinkClient) -> Arc<CoreCluster> {
    CoreCluster::new(vec![ClusterNode {
        client: Arc::new(client),
        rank: 0,
    }])
}

#[tokio::test]
async fn calls_and_events_cross_the_link() {
    let ca = tempfile::tempdir().unwrap();
    let core_tls = tls::ensure_tls(ca.path(), &ca.path().join("core"), &[]).unwrap();
    let edge_tls = tls::ensure_tls(ca.path(), &ca.path().join("edge"), &[]).unwrap();
    let core = start_core(&core_tls, "core-a").await;

    let client = LinkClient::new(
        "core-a",
        core.link.local_addr,
        tls::link_client_config(&edge_tls),
        LinkClientConfig::default(),
    );
    let hello = client.hello().await.unwrap();
    assert_eq!(hello.node, "core-a");
    assert_eq!(hello.token_public_key, core.keys_pem);
    let remote = cluster_of(client);

    let created = remote
        .create_team(CreateTeamRequest {
            name: "Acme".into(),
            domain: "acme-link".into(),
            owner: NewUser {
                name: "ada".into(),
                email: "ada@example.com".into(),
                password: "correct horse battery".into(),
            },
        })
        .await
        .unwrap();
    let caller = Caller {
        team: created.team.id.clone(),
        user: created.user.id.clone(),
    };
    let channel = remote
        .create_channel(
            &caller,
            CreateChannelRequest {
                name: "general".into(),
                private: false,
            },
        )
        .await
        .unwrap();
    let mut events = remote.subscribe(&caller.team).await.unwrap();
    for i in 0..20 {
        let message = remote
            .post_message(
                &caller,
                PostMessageRequest {
                    channel: channel.id.clone(),
                    text: format!("hello {i}"),
                    client_msg_id: format!("m{i}"),
                },
            )
            .await
            .unwrap();
        assert_eq!(message.seq, i + 1);
    }
    let mut seen = Vec::new();
    while seen.len() < 20 {
        let event = tokio::time::timeout(Duration::from_secs(5), events.events.recv())
            .await
            .expect("event within 5 s")
            .expect("subscription open");
        if let TeamEventBody::Message { message } = &event.body {
            seen.push(message.seq);
        }
    }
    assert_eq!(seen, (1..=20).collect::<Vec<u64>>());

    // Errors keep their codes across the link.
    let stranger = Caller {
        team: caller.team.clone(),
        user: confab_proto::UserId::new("UNOBODY"),
    };
    let err = remote
        .history(&stranger, &confab_proto::ChannelId::new("CNOPE"), None, 10)
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::ChannelNotFound);

    // A stopped core: the stream ends and calls fail as unavailable, never hang.
    core.link.shutdown().await;
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        while events.events.recv().await.is_some() {}
    })
    .await;
    assert!(end.is_ok(), "subscription must end when the core goes away");
    let err = remote.team(&caller).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::Unavailable);
}

#[tokio::test]
async fn peers_without_a_cluster_certificate_are_refused() {
    let ca = tempfile::tempdir().unwrap();
    let core_tls = tls::ensure_tls(ca.path(), &ca.path().join("core"), &[]).unwrap();
    let core = start_core(&core_tls, "core-a").await;

    // A certificate from another CA.
    let other = tempfile::tempdir().unwrap();
    let stranger_tls = tls::ensure_tls(other.path(), &other.path().join("n"), &[]).unwrap();
    let stranger = LinkClient::new(
        "core-a",
        core.link.local_addr,
        tls::link_client_config(&stranger_tls),
        LinkClientConfig::default(),
    );
    assert!(stranger.hello().await.is_err());

    // No client certificate at all, but trusting the right CA.
    let anonymous =
        tls::client_config_trusting(&core_tls.ca_path, &[tls::ALPN_LINK.to_vec()]).unwrap();
    let anonymous = LinkClient::new(
        "core-a",
        core.link.local_addr,
        anonymous,
        LinkClientConfig::default(),
    );
    assert!(anonymous.hello().await.is_err());
    core.link.shutdown().await;
}
