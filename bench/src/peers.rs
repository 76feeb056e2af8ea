//! The peer servers confab is compared with, as `bench/peers/peers.sh` runs them: where
//! each listens and which wire it speaks. The script owns installing, configuring and
//! stopping them; the generator only needs their address and the CA that signed them.

use crate::net::{Result, Target};
use crate::wire::Wire;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// A peer server started by `bench/peers/peers.sh up NAME`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    /// The centrifuge library (Centrifugo's engine): memory engine, history and presence on.
    Centrifuge,
    /// nginx with nchan: WebSocket pub/sub with an in-memory message buffer.
    Nchan,
    /// nats-server's WebSocket listener, core NATS (no JetStream): a raw fan-out ceiling.
    Nats,
    /// Mosquitto's WebSocket listener, MQTT QoS 0: a raw fan-out ceiling.
    Mosquitto,
}

impl Peer {
    pub const ALL: [Peer; 4] = [Self::Centrifuge, Self::Nchan, Self::Nats, Self::Mosquitto];

    /// The name `peers.sh` and `--target` use.
    pub fn name(self) -> &'static str {
        match self {
            Self::Centrifuge => "centrifuge",
            Self::Nchan => "nchan",
            Self::Nats => "nats",
            Self::Mosquitto => "mosquitto",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    pub fn wire(self) -> Wire {
        match self {
            Self::Centrifuge => Wire::Centrifuge,
            Self::Nchan => Wire::Nchan,
            Self::Nats => Wire::Nats,
            Self::Mosquitto => Wire::Mqtt,
        }
    }

    /// The WSS port: `CONFAB_PEER_<NAME>_PORT`, else the script's default.
    pub fn port(self) -> Result<u16> {
        let default = match self {
            Self::Centrifuge => 8711,
            Self::Nchan => 8712,
            Self::Nats => 8713,
            Self::Mosquitto => 8715,
        };
        let variable = format!("CONFAB_PEER_{}_PORT", self.name().to_uppercase());
        match std::env::var(&variable) {
            Ok(port) => Ok(port
                .parse()
                .map_err(|e| format!("{variable}={port}: {e}"))?),
            Err(_) => Ok(default),
        }
    }

    /// How to reach the running peer; fails with what to run when it is not up.
    pub fn target(self, peers_dir: &Path) -> Result<Target> {
        let ca = peers_dir.join("tls").join("ca.pem");
        if !ca.exists() {
            return Err(format!(
                "{} is not set up ({} missing): run bench/peers/peers.sh up {}",
                self.name(),
                ca.display(),
                self.name()
            )
            .into());
        }
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port()?));
        if std::net::TcpStream::connect(addr).is_err() {
            return Err(format!(
                "{} is not listening on {addr}: run bench/peers/peers.sh up {}",
                self.name(),
                self.name()
            )
            .into());
        }
        Target::trusting(addr, &ca)
    }
}

/// Where `peers.sh` keeps its state: `CONFAB_PEERS_DIR` (as for the script), else
/// `bench/.peers`.
pub fn default_dir() -> PathBuf {
    match std::env::var_os("CONFAB_PEERS_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join(".peers"),
    }
}
