//! Which backend each stateful part uses (DESIGN.md §2). The choice is explicit: a
//! deployment names its engines; nothing is guessed from what happens to be reachable.
//!
//! A node reads a [`NodeConfig`] (TOML, every section optional) and then the environment.
//! An environment variable only *supplies a value* (an address, a keyspace); a backend is
//! non-embedded only when the file or a `CONFAB_*_BACKEND` variable names it. So a shell
//! that happens to export `CONFAB_REDIS_URL` (as `.services/endpoints.env` does) never
//! moves presence to Redis by itself.
//!
//! ```toml
//! [store]
//! backend = "cassandra"            # or "embedded" (the default)
//! nodes = ["127.0.0.1:9042"]
//! keyspace = "confab"              # default "confab"
//! replication_factor = 3           # default 1; only used when creating the keyspace
//!
//! [presence]
//! backend = "redis"                # or "in_process"
//! url = "redis://127.0.0.1:6390"
//! ttl_secs = 75
//!
//! [fanout]
//! backend = "redis"                # or "in_process"
//! url = "redis://127.0.0.1:6390"
//!
//! [event_log]
//! backend = "kafka"                # or "embedded"
//! brokers = "127.0.0.1:9092"
//! namespace = "confab."            # prefix of every topic and group
//! partitions = 12                  # for topics it creates; default: the broker's
//! ```
//!
//! Environment variables (each overrides the file's value; empty counts as unset):
//! `CONFAB_STORE_BACKEND`, `CONFAB_CASSANDRA_NODES` (comma list),
//! `CONFAB_CASSANDRA_KEYSPACE`, `CONFAB_PRESENCE_BACKEND`, `CONFAB_REDIS_URL` (presence
//! and fan-out), `CONFAB_FANOUT_BACKEND`, `CONFAB_EVENT_LOG_BACKEND`,
//! `CONFAB_KAFKA_BROKERS`.

use confab_events::{EventLogBackend, FanOutBackend};
use confab_presence::PresenceBackend;
use confab_store::{FjallStoreOptions, ScyllaStoreOptions, StoreBackend, SyncPolicy};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a presence session lives without a heartbeat. Clients ping every 30 s by
/// default (DESIGN.md §7), so one lost ping does not flip them to away.
pub const PRESENCE_TTL: Duration = Duration::from_secs(75);

/// Keyspace used when the config names none.
pub const DEFAULT_KEYSPACE: &str = "confab";

/// Topic and group prefix used when the config names none, so confab's topics stand
/// apart from anything else on a shared broker.
pub const DEFAULT_KAFKA_NAMESPACE: &str = "confab.";

/// The environment variables a node reads, in the order [`NodeConfig::apply_env`] applies
/// them. Listed so `--help`, the README and tests agree on one set of names.
pub const ENV_VARS: [&str; 8] = [
    "CONFAB_STORE_BACKEND",
    "CONFAB_CASSANDRA_NODES",
    "CONFAB_CASSANDRA_KEYSPACE",
    "CONFAB_PRESENCE_BACKEND",
    "CONFAB_REDIS_URL",
    "CONFAB_FANOUT_BACKEND",
    "CONFAB_EVENT_LOG_BACKEND",
    "CONFAB_KAFKA_BROKERS",
];

/// The backends of one node.
#[derive(Clone, Debug)]
pub struct Backends {
    pub store: StoreBackend,
    pub presence: PresenceBackend,
    pub fanout: FanOutBackend,
    pub event_log: EventLogBackend,
}

impl Backends {
    /// Everything embedded under one data directory: what `confab dev` runs on.
    pub fn embedded(data_dir: &Path, sync: SyncPolicy) -> Self {
        Self {
            store: StoreBackend::Embedded(FjallStoreOptions {
                dir: data_dir.join("store"),
                sync,
            }),
            presence: PresenceBackend::InProcess { ttl: PRESENCE_TTL },
            fanout: FanOutBackend::InProcess,
            event_log: EventLogBackend::Embedded {
                dir: data_dir.join("events"),
            },
        }
    }

    /// One line per backend for the startup banner. Passwords in Redis URLs are masked:
    /// the banner ends up in logs that more people read than the config file.
    pub fn describe(&self) -> String {
        let store = match &self.store {
            StoreBackend::Embedded(options) => format!("embedded ({})", options.dir.display()),
            StoreBackend::Cassandra(options) => format!(
                "cassandra (nodes {}, keyspace {}, rf {})",
                options.nodes.join(","),
                options.keyspace,
                options.replication_factor
            ),
        };
        let presence = match &self.presence {
            PresenceBackend::InProcess { ttl } => format!("in_process (ttl {}s)", ttl.as_secs()),
            PresenceBackend::Redis { url, ttl } => {
                format!("redis ({}, ttl {}s)", redact_url(url), ttl.as_secs())
            }
        };
        let fanout = match &self.fanout {
            FanOutBackend::InProcess => "in_process".to_owned(),
            FanOutBackend::Redis { url } => format!("redis ({})", redact_url(url)),
        };
        let event_log = match &self.event_log {
            EventLogBackend::Embedded { dir } => format!("embedded ({})", dir.display()),
            EventLogBackend::Kafka {
                brokers,
                namespace,
                partitions,
            } => format!(
                "kafka (brokers {brokers}, namespace {namespace:?}, partitions {})",
                partitions.map_or_else(|| "broker default".to_owned(), |p| p.to_string())
            ),
        };
        format!("store: {store}\npresence: {presence}\nfanout: {fanout}\nevent_log: {event_log}")
    }
}

/// `scheme://user:password@host` → `scheme://***@host`: whatever sits before the `@` of
/// the authority may be a credential.
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***{}", &rest[at..]),
        None => url.to_owned(),
    }
}

/// A node's configuration file. Every section is optional; a missing one is the
/// embedded default under the data directory.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    #[serde(default)]
    pub store: StoreSection,
    #[serde(default)]
    pub presence: PresenceSection,
    #[serde(default)]
    pub fanout: FanOutSection,
    #[serde(default)]
    pub event_log: EventLogSection,
}

/// `[store]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    #[serde(default)]
    pub backend: StoreKind,
    /// Cassandra contact points, `host:port`.
    pub nodes: Option<Vec<String>>,
    pub keyspace: Option<String>,
    pub replication_factor: Option<u32>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    #[default]
    Embedded,
    Cassandra,
}

/// `[presence]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresenceSection {
    #[serde(default)]
    pub backend: LocalOrRedis,
    pub url: Option<String>,
    pub ttl_secs: Option<u64>,
}

/// `[fanout]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FanOutSection {
    #[serde(default)]
    pub backend: LocalOrRedis,
    pub url: Option<String>,
}

/// Presence and fan-out: in this process, or shared through Redis.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LocalOrRedis {
    #[default]
    InProcess,
    Redis,
}

/// `[event_log]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventLogSection {
    #[serde(default)]
    pub backend: EventLogKind,
    /// Bootstrap brokers, `host:port,...`.
    pub brokers: Option<String>,
    pub namespace: Option<String>,
    pub partitions: Option<u32>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventLogKind {
    #[default]
    Embedded,
    Kafka,
}

/// Why a configuration was refused. Each message names the section, key or variable to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("config file {0}: {1}")]
    Parse(String, String),
    #[error("{var}={value:?} is not a backend; use one of {expected}")]
    UnknownBackend {
        var: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("[{section}] backend = \"{backend}\" needs `{key}` (in the file, or {var})")]
    Missing {
        section: &'static str,
        backend: &'static str,
        key: &'static str,
        var: &'static str,
    },
    /// A key of another backend: most likely a forgotten `backend = ...` line, which
    /// would otherwise silently run embedded.
    #[error(
        "[{section}] `{key}` only applies to backend = \"{applies_to}\", but the backend is \"{backend}\""
    )]
    Stray {
        section: &'static str,
        key: &'static str,
        applies_to: &'static str,
        backend: &'static str,
    },
    #[error("[{section}] {message}")]
    Invalid {
        section: &'static str,
        message: String,
    },
}

impl NodeConfig {
    /// Parses a TOML document; `origin` names it in errors. Rejects unknown keys and keys
    /// that belong to a backend the section does not select.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let config: NodeConfig = toml::from_str(text)
            .map_err(|e| ConfigError::Parse(origin.to_owned(), e.to_string()))?;
        config.check_stray_keys()?;
        Ok(config)
    }

    /// Reads and parses a TOML file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| ConfigError::Read(path.to_owned(), e))?;
        Self::from_toml_str(&text, &path.display().to_string())
    }

    /// Only the file is checked for stray keys: the environment may well carry values for
    /// engines this node does not use (one `endpoints.env` serves every service).
    fn check_stray_keys(&self) -> Result<(), ConfigError> {
        let stray = |section, key, applies_to, backend| {
            Err(ConfigError::Stray {
                section,
                key,
                applies_to,
                backend,
            })
        };
        if self.store.backend == StoreKind::Embedded {
            if self.store.nodes.is_some() {
                return stray("store", "nodes", "cassandra", "embedded");
            }
            if self.store.keyspace.is_some() {
                return stray("store", "keyspace", "cassandra", "embedded");
            }
            if self.store.replication_factor.is_some() {
                return stray("store", "replication_factor", "cassandra", "embedded");
            }
        }
        if self.presence.backend == LocalOrRedis::InProcess && self.presence.url.is_some() {
            return stray("presence", "url", "redis", "in_process");
        }
        if self.fanout.backend == LocalOrRedis::InProcess && self.fanout.url.is_some() {
            return stray("fanout", "url", "redis", "in_process");
        }
        if self.event_log.backend == EventLogKind::Embedded {
            if self.event_log.brokers.is_some() {
                return stray("event_log", "brokers", "kafka", "embedded");
            }
            if self.event_log.namespace.is_some() {
                return stray("event_log", "namespace", "kafka", "embedded");
            }
            if self.event_log.partitions.is_some() {
                return stray("event_log", "partitions", "kafka", "embedded");
            }
        }
        Ok(())
    }

    /// Applies the environment variables of [`ENV_VARS`], read through `env` (the process
    /// environment in the binary, a map in tests). Each overrides the file; an empty value
    /// counts as unset, so `CONFAB_X=` in a script does not blank a configured value.
    pub fn apply_env(mut self, env: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| {
            env(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        if let Some(value) = get("CONFAB_STORE_BACKEND") {
            self.store.backend = match value.to_ascii_lowercase().as_str() {
                "embedded" => StoreKind::Embedded,
                "cassandra" => StoreKind::Cassandra,
                _ => {
                    return Err(unknown(
                        "CONFAB_STORE_BACKEND",
                        value,
                        "embedded, cassandra",
                    ));
                }
            };
        }
        if let Some(value) = get("CONFAB_CASSANDRA_NODES") {
            self.store.nodes = Some(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|node| !node.is_empty())
                    .map(str::to_owned)
                    .collect(),
            );
        }
        if let Some(value) = get("CONFAB_CASSANDRA_KEYSPACE") {
            self.store.keyspace = Some(value);
        }
        if let Some(value) = get("CONFAB_PRESENCE_BACKEND") {
            self.presence.backend = local_or_redis("CONFAB_PRESENCE_BACKEND", value)?;
        }
        if let Some(value) = get("CONFAB_FANOUT_BACKEND") {
            self.fanout.backend = local_or_redis("CONFAB_FANOUT_BACKEND", value)?;
        }
        // One Redis serves presence and fan-out in the common deployment, hence one
        // variable for both; a split deployment sets the two `url`s in the file.
        if let Some(value) = get("CONFAB_REDIS_URL") {
            self.presence.url = Some(value.clone());
            self.fanout.url = Some(value);
        }
        if let Some(value) = get("CONFAB_EVENT_LOG_BACKEND") {
            self.event_log.backend = match value.to_ascii_lowercase().as_str() {
                "embedded" => EventLogKind::Embedded,
                "kafka" => EventLogKind::Kafka,
                _ => {
                    return Err(unknown(
                        "CONFAB_EVENT_LOG_BACKEND",
                        value,
                        "embedded, kafka",
                    ));
                }
            };
        }
        if let Some(value) = get("CONFAB_KAFKA_BROKERS") {
            self.event_log.brokers = Some(value);
        }
        Ok(self)
    }

    /// The backends this configuration selects; embedded ones live under `data_dir`, and
    /// the embedded store syncs by `sync`.
    pub fn backends(&self, data_dir: &Path, sync: SyncPolicy) -> Result<Backends, ConfigError> {
        let embedded = Backends::embedded(data_dir, sync);
        let store = match self.store.backend {
            StoreKind::Embedded => embedded.store,
            StoreKind::Cassandra => {
                let nodes = self.store.nodes.clone().unwrap_or_default();
                if nodes.is_empty() {
                    return Err(ConfigError::Missing {
                        section: "store",
                        backend: "cassandra",
                        key: "nodes",
                        var: "CONFAB_CASSANDRA_NODES",
                    });
                }
                let keyspace = self
                    .store
                    .keyspace
                    .clone()
                    .unwrap_or_else(|| DEFAULT_KEYSPACE.to_owned());
                // The driver checks this too, but only once connected; saying it here
                // fails before any network wait.
                let keyspace_ok = keyspace.len() <= 48
                    && keyspace.starts_with(|c: char| c.is_ascii_alphabetic())
                    && keyspace
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !keyspace_ok {
                    return Err(ConfigError::Invalid {
                        section: "store",
                        message: format!(
                            "keyspace {keyspace:?}: use letters, digits and `_`, at most 48, starting with a letter"
                        ),
                    });
                }
                let replication_factor = self.store.replication_factor.unwrap_or(1);
                if replication_factor == 0 {
                    return Err(ConfigError::Invalid {
                        section: "store",
                        message: "replication_factor must be at least 1".to_owned(),
                    });
                }
                StoreBackend::Cassandra(ScyllaStoreOptions {
                    nodes,
                    keyspace,
                    replication_factor,
                })
            }
        };
        let ttl = match self.presence.ttl_secs {
            None => PRESENCE_TTL,
            Some(0) => {
                return Err(ConfigError::Invalid {
                    section: "presence",
                    message: "ttl_secs must be at least 1".to_owned(),
                });
            }
            Some(secs) => Duration::from_secs(secs),
        };
        let presence = match self.presence.backend {
            LocalOrRedis::InProcess => PresenceBackend::InProcess { ttl },
            LocalOrRedis::Redis => PresenceBackend::Redis {
                url: redis_url("presence", self.presence.url.as_deref())?,
                ttl,
            },
        };
        let fanout = match self.fanout.backend {
            LocalOrRedis::InProcess => FanOutBackend::InProcess,
            LocalOrRedis::Redis => FanOutBackend::Redis {
                url: redis_url("fanout", self.fanout.url.as_deref())?,
            },
        };
        let event_log = match self.event_log.backend {
            EventLogKind::Embedded => embedded.event_log,
            EventLogKind::Kafka => {
                let brokers = self
                    .event_log
                    .brokers
                    .clone()
                    .filter(|b| !b.trim().is_empty())
                    .ok_or(ConfigError::Missing {
                        section: "event_log",
                        backend: "kafka",
                        key: "brokers",
                        var: "CONFAB_KAFKA_BROKERS",
                    })?;
                let namespace = self
                    .event_log
                    .namespace
                    .clone()
                    .unwrap_or_else(|| DEFAULT_KAFKA_NAMESPACE.to_owned());
                if !namespace
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
                {
                    return Err(ConfigError::Invalid {
                        section: "event_log",
                        message: format!("namespace {namespace:?}: use only [A-Za-z0-9._-]"),
                    });
                }
                if self.event_log.partitions == Some(0) {
                    return Err(ConfigError::Invalid {
                        section: "event_log",
                        message: "partitions must be at least 1".to_owned(),
                    });
                }
                EventLogBackend::Kafka {
                    brokers,
                    namespace,
                    partitions: self.event_log.partitions,
                }
            }
        };
        Ok(Backends {
            store,
            presence,
            fanout,
            event_log,
        })
    }
}

fn unknown(var: &'static str, value: String, expected: &'static str) -> ConfigError {
    ConfigError::UnknownBackend {
        var,
        value,
        expected,
    }
}

fn local_or_redis(var: &'static str, value: String) -> Result<LocalOrRedis, ConfigError> {
    match value.to_ascii_lowercase().as_str() {
        "in_process" => Ok(LocalOrRedis::InProcess),
        "redis" => Ok(LocalOrRedis::Redis),
        _ => Err(unknown(var, value, "in_process, redis")),
    }
}

fn redis_url(section: &'static str, url: Option<&str>) -> Result<String, ConfigError> {
    let url = url
        .filter(|u| !u.trim().is_empty())
        .ok_or(ConfigError::Missing {
            section,
            backend: "redis",
            key: "url",
            var: "CONFAB_REDIS_URL",
        })?;
    // Checked here so a typo such as `127.0.0.1:6379` fails at startup with the section
    // named, rather than as a driver error about an unsupported scheme.
    const SCHEMES: [&str; 4] = ["redis://", "rediss://", "redis+unix://", "unix://"];
    if !SCHEMES.iter().any(|scheme| url.starts_with(scheme)) {
        return Err(ConfigError::Invalid {
            section,
            message: format!(
                "url {:?} must start with one of {}",
                redact_url(url),
                SCHEMES.join(", ")
            ),
        });
    }
    Ok(url.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    fn resolve(text: &str, pairs: &[(&str, &str)]) -> Result<Backends, ConfigError> {
        NodeConfig::from_toml_str(text, "test.toml")?
            .apply_env(env(pairs))?
            .backends(Path::new("/data"), SyncPolicy::Fsync)
    }

    #[test]
    fn an_empty_file_is_all_embedded_under_the_data_dir() {
        let backends = resolve("", &[]).unwrap();
        assert!(
            matches!(&backends.store, StoreBackend::Embedded(o) if o.dir == Path::new("/data/store"))
        );
        assert_eq!(
            backends.presence,
            PresenceBackend::InProcess { ttl: PRESENCE_TTL }
        );
        assert_eq!(backends.fanout, FanOutBackend::InProcess);
        assert_eq!(
            backends.event_log,
            EventLogBackend::Embedded {
                dir: "/data/events".into()
            }
        );
    }

    #[test]
    fn a_full_file_selects_every_real_engine() {
        let text = r#"
            [store]
            backend = "cassandra"
            nodes = ["10.0.0.1:9042", "10.0.0.2:9042"]
            keyspace = "chat"
            replication_factor = 3
            [presence]
            backend = "redis"
            url = "redis://10.0.0.5:6379"
            ttl_secs = 90
            [fanout]
            backend = "redis"
            url = "redis://10.0.0.6:6379"
            [event_log]
            backend = "kafka"
            brokers = "10.0.0.7:9092"
            namespace = "prod."
            partitions = 12
        "#;
        let backends = resolve(text, &[]).unwrap();
        let StoreBackend::Cassandra(store) = &backends.store else {
            panic!("cassandra expected")
        };
        assert_eq!(store.nodes, ["10.0.0.1:9042", "10.0.0.2:9042"]);
        assert_eq!(store.keyspace, "chat");
        assert_eq!(store.replication_factor, 3);
        assert_eq!(
            backends.presence,
            PresenceBackend::Redis {
                url: "redis://10.0.0.5:6379".into(),
                ttl: Duration::from_secs(90)
            }
        );
        assert_eq!(
            backends.fanout,
            FanOutBackend::Redis {
                url: "redis://10.0.0.6:6379".into()
            }
        );
        assert_eq!(
            backends.event_log,
            EventLogBackend::Kafka {
                brokers: "10.0.0.7:9092".into(),
                namespace: "prod.".into(),
                partitions: Some(12)
            }
        );
    }

    #[test]
    fn address_variables_alone_never_switch_a_backend() {
        // Exactly what `.services/endpoints.env` exports: values, no backend names.
        let vars = [
            ("CONFAB_REDIS_URL", "redis://127.0.0.1:6390"),
            ("CONFAB_CASSANDRA_NODES", "127.0.0.1:9042"),
            ("CONFAB_KAFKA_BROKERS", "127.0.0.1:9092"),
        ];
        let backends = resolve("", &vars).unwrap();
        assert!(matches!(backends.store, StoreBackend::Embedded(_)));
        assert!(matches!(
            backends.presence,
            PresenceBackend::InProcess { .. }
        ));
        assert_eq!(backends.fanout, FanOutBackend::InProcess);
        assert!(matches!(
            backends.event_log,
            EventLogBackend::Embedded { .. }
        ));
    }

    #[test]
    fn backend_variables_select_and_address_variables_fill_in() {
        let vars = [
            ("CONFAB_STORE_BACKEND", "cassandra"),
            (
                "CONFAB_CASSANDRA_NODES",
                " 127.0.0.1:9042 , 127.0.0.2:9042 ,",
            ),
            ("CONFAB_CASSANDRA_KEYSPACE", "from_env"),
            ("CONFAB_PRESENCE_BACKEND", "redis"),
            ("CONFAB_FANOUT_BACKEND", "Redis"),
            ("CONFAB_REDIS_URL", "redis://127.0.0.1:6390"),
            ("CONFAB_EVENT_LOG_BACKEND", "kafka"),
            ("CONFAB_KAFKA_BROKERS", "127.0.0.1:9092"),
        ];
        let backends = resolve("", &vars).unwrap();
        let StoreBackend::Cassandra(store) = &backends.store else {
            panic!("cassandra expected")
        };
        assert_eq!(store.nodes, ["127.0.0.1:9042", "127.0.0.2:9042"]);
        assert_eq!(store.keyspace, "from_env");
        assert_eq!(store.replication_factor, 1);
        assert_eq!(
            backends.fanout,
            FanOutBackend::Redis {
                url: "redis://127.0.0.1:6390".into()
            }
        );
        assert!(
            matches!(&backends.presence, PresenceBackend::Redis { url, .. } if url == "redis://127.0.0.1:6390")
        );
        assert_eq!(
            backends.event_log,
            EventLogBackend::Kafka {
                brokers: "127.0.0.1:9092".into(),
                namespace: DEFAULT_KAFKA_NAMESPACE.into(),
                partitions: None
            }
        );
    }

    #[test]
    fn the_environment_overrides_the_file() {
        let text = r#"
            [presence]
            backend = "redis"
            url = "redis://file:6379"
            [event_log]
            backend = "kafka"
            brokers = "file:9092"
        "#;
        let vars = [
            ("CONFAB_REDIS_URL", "redis://env:6379"),
            ("CONFAB_EVENT_LOG_BACKEND", "embedded"),
            ("CONFAB_KAFKA_BROKERS", ""),
        ];
        let backends = resolve(text, &vars).unwrap();
        assert!(
            matches!(&backends.presence, PresenceBackend::Redis { url, .. } if url == "redis://env:6379")
        );
        assert!(matches!(
            backends.event_log,
            EventLogBackend::Embedded { .. }
        ));
    }

    #[test]
    fn a_backend_without_its_address_is_refused_with_the_key_and_variable() {
        let error = resolve("[presence]\nbackend = \"redis\"", &[]).unwrap_err();
        let text = error.to_string();
        assert!(
            text.contains("[presence]")
                && text.contains("url")
                && text.contains("CONFAB_REDIS_URL"),
            "{text}"
        );
        let error = resolve("[store]\nbackend = \"cassandra\"", &[]).unwrap_err();
        assert!(
            error.to_string().contains("CONFAB_CASSANDRA_NODES"),
            "{error}"
        );
        let error = resolve("", &[("CONFAB_EVENT_LOG_BACKEND", "kafka")]).unwrap_err();
        assert!(
            error.to_string().contains("CONFAB_KAFKA_BROKERS"),
            "{error}"
        );
        let error = resolve("", &[("CONFAB_FANOUT_BACKEND", "redis")]).unwrap_err();
        assert!(error.to_string().contains("[fanout]"), "{error}");
    }

    #[test]
    fn unknown_keys_sections_and_backend_names_are_refused() {
        let error = resolve("[store]\nbackend = \"postgres\"", &[]).unwrap_err();
        assert!(matches!(error, ConfigError::Parse(..)), "{error}");
        let error = resolve("[store]\nbakend = \"cassandra\"", &[]).unwrap_err();
        assert!(error.to_string().contains("bakend"), "{error}");
        let error = resolve("[cache]\nsize = 1", &[]).unwrap_err();
        assert!(matches!(error, ConfigError::Parse(..)), "{error}");
        let error = resolve("", &[("CONFAB_PRESENCE_BACKEND", "memcached")]).unwrap_err();
        assert!(
            error.to_string().contains("CONFAB_PRESENCE_BACKEND")
                && error.to_string().contains("in_process, redis"),
            "{error}"
        );
    }

    #[test]
    fn keys_of_an_unselected_backend_are_refused() {
        // Most likely a forgotten `backend = "cassandra"`: running embedded instead would
        // be a silent surprise.
        let error = resolve("[store]\nnodes = [\"127.0.0.1:9042\"]", &[]).unwrap_err();
        assert!(
            matches!(error, ConfigError::Stray { key: "nodes", .. }),
            "{error}"
        );
        let error = resolve("[fanout]\nurl = \"redis://x\"", &[]).unwrap_err();
        assert!(
            matches!(error, ConfigError::Stray { key: "url", .. }),
            "{error}"
        );
    }

    #[test]
    fn bad_values_are_refused() {
        let cases = [
            "[store]\nbackend = \"cassandra\"\nnodes = [\"a:1\"]\nkeyspace = \"1bad\"",
            "[store]\nbackend = \"cassandra\"\nnodes = [\"a:1\"]\nreplication_factor = 0",
            "[presence]\nttl_secs = 0",
            "[presence]\nbackend = \"redis\"\nurl = \"127.0.0.1:6379\"",
            "[event_log]\nbackend = \"kafka\"\nbrokers = \"a:1\"\nnamespace = \"a b\"",
            "[event_log]\nbackend = \"kafka\"\nbrokers = \"a:1\"\npartitions = 0",
        ];
        for case in cases {
            let error = resolve(case, &[]).unwrap_err();
            assert!(
                matches!(error, ConfigError::Invalid { .. }),
                "{case}: {error}"
            );
        }
    }

    #[test]
    fn the_description_hides_redis_passwords() {
        assert_eq!(
            redact_url("redis://:secret@host:6379/0"),
            "redis://***@host:6379/0"
        );
        assert_eq!(redact_url("redis://host:6379"), "redis://host:6379");
        let vars = [
            ("CONFAB_PRESENCE_BACKEND", "redis"),
            ("CONFAB_REDIS_URL", "redis://user:secret@host:6379"),
        ];
        let text = resolve("", &vars).unwrap().describe();
        assert!(
            !text.contains("secret") && text.contains("host:6379"),
            "{text}"
        );
    }
}
