//! The deployment topology of confab (DESIGN.md §1, §6, §9): regions, the PoPs (edge
//! nodes) in each with their WSS and HTTP/3 addresses, the core endpoints, and which
//! region each team is placed in. Written as a TOML file that `confab geo check` validates:
//!
//! ```toml
//! [[regions]]
//! name = "eu-local"
//!
//! [[pops]]
//! name = "eu-local-1"
//! region = "eu-local"
//! wss = "127.0.0.1:8443"   # TCP: HTTPS + WebSocket
//! h3 = "127.0.0.1:8443"    # UDP: HTTP/3, so it may share the TCP port
//!
//! [[cores]]
//! name = "eu-core-1"
//! region = "eu-local"
//! addr = "127.0.0.1:7001"
//!
//! [placement]
//! default_region = "eu-local"
//! teams = { T01EXAMPLE = "eu-local" }
//! ```
//!
//! [`parse`] and [`load`] return only configs that pass [`GeoConfig::validate`], so the
//! lookups ([`GeoConfig::edges_for_team`], [`GeoConfig::pick_pop`]) can trust references.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// A validated deployment topology.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeoConfig {
    #[serde(default)]
    pub regions: Vec<Region>,
    #[serde(default)]
    pub pops: Vec<Pop>,
    #[serde(default)]
    pub cores: Vec<Core>,
    #[serde(default)]
    pub placement: Placement,
}

/// A region: a set of PoPs and cores close to each other.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Region {
    pub name: String,
}

/// A point of presence: one edge node that terminates client connections.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pop {
    pub name: String,
    pub region: String,
    /// `host:port` of HTTPS + WSS (TCP).
    pub wss: String,
    /// `host:port` of HTTP/3 (UDP).
    pub h3: String,
}

/// A core endpoint that edges of its region link to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Core {
    pub name: String,
    pub region: String,
    /// `host:port` of the internal link (TCP, mTLS).
    pub addr: String,
}

/// Which region serves each team; teams not listed go to `default_region`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Placement {
    pub default_region: String,
    /// Team id → region name.
    #[serde(default)]
    pub teams: BTreeMap<String, String>,
}

/// Why a geo-config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum GeoError {
    #[error("cannot read geo-config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("geo-config {origin} is not valid: {source}")]
    Syntax {
        /// The file, or `<text>` when parsed from a string.
        origin: String,
        source: toml::de::Error,
    },
    #[error("geo-config {origin} has {} problem(s):\n{}", .issues.len(), IssueList(.issues))]
    Invalid {
        origin: String,
        issues: Vec<GeoIssue>,
    },
}

/// Formats issues one per line, for [`GeoError::Invalid`].
struct IssueList<'a>(&'a [GeoIssue]);

impl fmt::Display for IssueList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "  - {issue}")?;
        }
        Ok(())
    }
}

/// One problem found by [`GeoConfig::validate`], naming what is wrong where.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GeoIssue {
    #[error("no regions are defined")]
    NoRegions,
    #[error("a {kind} has an empty name")]
    EmptyName { kind: &'static str },
    #[error("{kind} name {name:?} is used more than once")]
    DuplicateName { kind: &'static str, name: String },
    #[error("{kind} {name:?} refers to unknown region {region:?}")]
    UnknownRegion {
        kind: &'static str,
        name: String,
        region: String,
    },
    #[error("region {region:?} has no PoPs: its teams could not connect")]
    RegionWithoutPops { region: String },
    #[error("region {region:?} has no cores: its edges would have nothing to link to")]
    RegionWithoutCores { region: String },
    #[error("{owner} has unusable address {addr:?}: {reason}")]
    BadAddress {
        /// What the address belongs to, e.g. `pop "eu-1" wss`.
        owner: String,
        addr: String,
        reason: String,
    },
    #[error("{second} listens on {addr} ({protocol}), already used by {first}")]
    DuplicateAddress {
        addr: String,
        protocol: &'static str,
        first: String,
        second: String,
    },
    #[error("placement.default_region {region:?} is not a defined region")]
    UnknownDefaultRegion { region: String },
    #[error("placement of team {team:?} refers to unknown region {region:?}")]
    UnknownPlacementRegion { team: String, region: String },
}

/// Parses and validates a geo-config from TOML text.
pub fn parse(text: &str) -> Result<GeoConfig, GeoError> {
    parse_from(text, "<text>")
}

/// Reads, parses and validates the geo-config file at `path`.
pub fn load(path: impl AsRef<Path>) -> Result<GeoConfig, GeoError> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|source| GeoError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_from(&text, &path.display().to_string())
}

fn parse_from(text: &str, origin: &str) -> Result<GeoConfig, GeoError> {
    let config: GeoConfig = toml::from_str(text).map_err(|source| GeoError::Syntax {
        origin: origin.to_owned(),
        source,
    })?;
    config.validate().map_err(|issues| GeoError::Invalid {
        origin: origin.to_owned(),
        issues,
    })?;
    Ok(config)
}

/// Checks a `host:port` address: an IP socket address, or a DNS name and a port.
/// Port 0 is refused: clients and edges need a port they can be told in advance.
pub fn check_host_port(addr: &str) -> Result<(), String> {
    let port = match addr.parse::<SocketAddr>() {
        Ok(socket) => socket.port(),
        Err(_) => {
            let (host, port) = addr
                .rsplit_once(':')
                .ok_or_else(|| "expected host:port".to_owned())?;
            let host_ok = !host.is_empty()
                && host.len() <= 253
                && host.split('.').all(|label| {
                    !label.is_empty()
                        && !label.starts_with('-')
                        && !label.ends_with('-')
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                });
            if !host_ok {
                return Err(format!("{host:?} is neither an IP address nor a host name"));
            }
            port.parse::<u16>()
                .map_err(|_| format!("{port:?} is not a port number"))?
        }
    };
    if port == 0 {
        return Err("port 0 is not a fixed port".to_owned());
    }
    Ok(())
}

/// The form in which two addresses are compared: hosts are case-insensitive.
fn address_identity(addr: &str) -> String {
    match addr.parse::<SocketAddr>() {
        Ok(socket) => socket.to_string(),
        Err(_) => addr.to_ascii_lowercase(),
    }
}

/// A stable 64-bit hash of `(team, pop)`: FNV-1a, then a 64-bit finalizer so that
/// nearby inputs score far apart. It must not change between builds or machines (unlike
/// std's `DefaultHasher`), since every edge and core must pick the same PoP.
fn rendezvous_score(team: &str, pop: &str) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    // The separator keeps ("ab", "c") and ("a", "bc") apart; 0xff never occurs in UTF-8.
    for byte in team.bytes().chain([0xff]).chain(pop.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(PRIME);
    }
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^ (hash >> 33)
}

impl GeoConfig {
    /// Every problem of the config at once, so one `confab geo check` run shows them all.
    pub fn validate(&self) -> Result<(), Vec<GeoIssue>> {
        let mut issues = Vec::new();
        if self.regions.is_empty() {
            issues.push(GeoIssue::NoRegions);
        }
        check_names(&mut issues, "region", self.regions.iter().map(|r| &r.name));
        check_names(&mut issues, "pop", self.pops.iter().map(|p| &p.name));
        check_names(&mut issues, "core", self.cores.iter().map(|c| &c.name));

        let region_known = |region: &str| self.regions.iter().any(|r| r.name == region);
        let located = self
            .pops
            .iter()
            .map(|p| ("pop", &p.name, &p.region))
            .chain(self.cores.iter().map(|c| ("core", &c.name, &c.region)));
        for (kind, name, region) in located {
            if !region_known(region) {
                issues.push(GeoIssue::UnknownRegion {
                    kind,
                    name: name.clone(),
                    region: region.clone(),
                });
            }
        }
        for region in &self.regions {
            if !self.pops.iter().any(|p| p.region == region.name) {
                issues.push(GeoIssue::RegionWithoutPops {
                    region: region.name.clone(),
                });
            }
            if !self.cores.iter().any(|c| c.region == region.name) {
                issues.push(GeoIssue::RegionWithoutCores {
                    region: region.name.clone(),
                });
            }
        }

        // TCP and UDP ports are separate spaces: a PoP's HTTP/3 may share its WSS port.
        let tcp = self
            .pops
            .iter()
            .map(|p| (format!("pop {:?} wss", p.name), &p.wss))
            .chain(
                self.cores
                    .iter()
                    .map(|c| (format!("core {:?} addr", c.name), &c.addr)),
            );
        let udp = self
            .pops
            .iter()
            .map(|p| (format!("pop {:?} h3", p.name), &p.h3));
        check_addresses(&mut issues, "tcp", tcp);
        check_addresses(&mut issues, "udp", udp);

        if !region_known(&self.placement.default_region) {
            issues.push(GeoIssue::UnknownDefaultRegion {
                region: self.placement.default_region.clone(),
            });
        }
        for (team, region) in &self.placement.teams {
            if !region_known(region) {
                issues.push(GeoIssue::UnknownPlacementRegion {
                    team: team.clone(),
                    region: region.clone(),
                });
            }
        }

        if issues.is_empty() {
            Ok(())
        } else {
            Err(issues)
        }
    }

    /// The region a team is placed in: its own placement, else the default.
    pub fn region_for_team(&self, team: &str) -> &str {
        self.placement
            .teams
            .get(team)
            .unwrap_or(&self.placement.default_region)
    }

    /// The PoPs of the team's region, in file order: where its clients may connect.
    pub fn edges_for_team(&self, team: &str) -> Vec<&Pop> {
        let region = self.region_for_team(team);
        self.pops.iter().filter(|p| p.region == region).collect()
    }

    /// The PoP of `region` that `team` connects to, by rendezvous hashing on the team id
    /// (DESIGN.md §6): every node computes the same answer without coordination, and
    /// adding or removing a PoP moves only the teams that land on or left it. `None` if
    /// the region has no PoPs.
    pub fn pick_pop(&self, team: &str, region: &str) -> Option<&Pop> {
        self.pops
            .iter()
            .filter(|p| p.region == region)
            // Ties (practically impossible) go to the name, so the choice stays total.
            .max_by_key(|p| (rendezvous_score(team, &p.name), &p.name))
    }

    /// The PoP `team` connects to in its own region.
    pub fn pop_for_team(&self, team: &str) -> Option<&Pop> {
        self.pick_pop(team, self.region_for_team(team))
    }
}

fn check_names<'a>(
    issues: &mut Vec<GeoIssue>,
    kind: &'static str,
    names: impl Iterator<Item = &'a String>,
) {
    let mut seen = HashMap::new();
    for name in names {
        if name.trim().is_empty() {
            issues.push(GeoIssue::EmptyName { kind });
            continue;
        }
        let count = seen.entry(name).or_insert(0);
        *count += 1;
        // Report each duplicated name once, however often it repeats.
        if *count == 2 {
            issues.push(GeoIssue::DuplicateName {
                kind,
                name: name.clone(),
            });
        }
    }
}

fn check_addresses<'a>(
    issues: &mut Vec<GeoIssue>,
    protocol: &'static str,
    addresses: impl Iterator<Item = (String, &'a String)>,
) {
    let mut owners: HashMap<String, String> = HashMap::new();
    for (owner, addr) in addresses {
        if let Err(reason) = check_host_port(addr) {
            issues.push(GeoIssue::BadAddress {
                owner,
                addr: addr.clone(),
                reason,
            });
            continue;
        }
        match owners.get(&address_identity(addr)) {
            Some(first) => issues.push(GeoIssue::DuplicateAddress {
                addr: addr.clone(),
                protocol,
                first: first.clone(),
                second: owner,
            }),
            None => {
                owners.insert(address_identity(addr), owner);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = r#"
        [[regions]]
        name = "eu"
        [[regions]]
        name = "us"

        [[pops]]
        name = "eu-1"
        region = "eu"
        wss = "127.0.0.1:8443"
        h3 = "127.0.0.1:8443"
        [[pops]]
        name = "eu-2"
        region = "eu"
        wss = "edge-2.eu.example.com:443"
        h3 = "edge-2.eu.example.com:443"
        [[pops]]
        name = "eu-3"
        region = "eu"
        wss = "[::1]:8445"
        h3 = "[::1]:8445"
        [[pops]]
        name = "us-1"
        region = "us"
        wss = "127.0.0.1:9443"
        h3 = "127.0.0.1:9443"

        [[cores]]
        name = "eu-core"
        region = "eu"
        addr = "127.0.0.1:7001"
        [[cores]]
        name = "us-core"
        region = "us"
        addr = "127.0.0.1:7002"

        [placement]
        default_region = "eu"
        teams = { TUS = "us" }
    "#;

    fn issues_of(text: &str) -> Vec<GeoIssue> {
        match parse(text) {
            Err(GeoError::Invalid { issues, .. }) => issues,
            other => panic!("expected validation issues, got {other:?}"),
        }
    }

    #[test]
    fn example_file_validates() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/local.toml");
        let config = load(path).unwrap();
        assert_eq!(config.regions.len(), 2);
        for region in &config.regions {
            assert!(config.pick_pop("T1", &region.name).is_some());
        }
    }

    #[test]
    fn valid_config_parses_with_placement() {
        let config = parse(VALID).unwrap();
        assert_eq!(config.region_for_team("TUS"), "us");
        assert_eq!(config.region_for_team("Tother"), "eu");
        let names = |pops: Vec<&Pop>| pops.iter().map(|p| p.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(config.edges_for_team("TUS")), ["us-1"]);
        assert_eq!(
            names(config.edges_for_team("Tother")),
            ["eu-1", "eu-2", "eu-3"]
        );
        assert_eq!(config.pop_for_team("TUS").unwrap().name, "us-1");
        assert!(config.pick_pop("TUS", "nowhere").is_none());
    }

    #[test]
    fn syntax_errors_and_unknown_fields_are_reported() {
        assert!(matches!(
            parse("[[regions]\n"),
            Err(GeoError::Syntax { .. })
        ));
        let typo = VALID.replace("wss = \"127.0.0.1:9443\"", "wws = \"127.0.0.1:9443\"");
        let err = parse(&typo).unwrap_err();
        assert!(matches!(err, GeoError::Syntax { .. }), "{err}");
        assert!(matches!(
            load("/nonexistent/geo.toml"),
            Err(GeoError::Read { .. })
        ));
    }

    #[test]
    fn unknown_regions_are_caught() {
        let text = VALID
            .replace(
                "region = \"us\"\n        wss",
                "region = \"usa\"\n        wss",
            )
            .replace("TUS = \"us\"", "TUS = \"mars\"")
            .replace("default_region = \"eu\"", "default_region = \"moon\"");
        let issues = issues_of(&text);
        assert!(issues.contains(&GeoIssue::UnknownRegion {
            kind: "pop",
            name: "us-1".into(),
            region: "usa".into()
        }));
        assert!(issues.contains(&GeoIssue::RegionWithoutPops {
            region: "us".into()
        }));
        assert!(issues.contains(&GeoIssue::UnknownPlacementRegion {
            team: "TUS".into(),
            region: "mars".into()
        }));
        assert!(issues.contains(&GeoIssue::UnknownDefaultRegion {
            region: "moon".into()
        }));
    }

    #[test]
    fn duplicates_are_caught() {
        let text = VALID
            .replace("name = \"eu-2\"", "name = \"eu-1\"")
            .replace("127.0.0.1:7002", "127.0.0.1:8443")
            .replace("\"[::1]:8445\"", "\"127.0.0.1:9443\"");
        let issues = issues_of(&text);
        assert!(issues.contains(&GeoIssue::DuplicateName {
            kind: "pop",
            name: "eu-1".into()
        }));
        // The core collides with a PoP's WSS port, while each PoP's HTTP/3 (UDP) sharing
        // its own WSS port is fine and not reported.
        assert!(issues.contains(&GeoIssue::DuplicateAddress {
            addr: "127.0.0.1:8443".into(),
            protocol: "tcp",
            first: "pop \"eu-1\" wss".into(),
            second: "core \"us-core\" addr".into(),
        }));
        assert!(issues.contains(&GeoIssue::DuplicateAddress {
            addr: "127.0.0.1:9443".into(),
            protocol: "udp",
            first: "pop \"eu-3\" h3".into(),
            second: "pop \"us-1\" h3".into(),
        }));
        let message = GeoError::Invalid {
            origin: "geo.toml".into(),
            issues,
        }
        .to_string();
        assert!(
            message.contains("pop name \"eu-1\" is used more than once"),
            "{message}"
        );
    }

    #[test]
    fn regions_without_pops_or_cores_are_caught() {
        let text = format!("{VALID}\n[[regions]]\nname = \"ap\"\n");
        let issues = issues_of(&text);
        assert_eq!(
            issues,
            [
                GeoIssue::RegionWithoutPops {
                    region: "ap".into()
                },
                GeoIssue::RegionWithoutCores {
                    region: "ap".into()
                },
            ]
        );
        assert!(issues_of("[placement]\ndefault_region = \"eu\"\n").contains(&GeoIssue::NoRegions));
    }

    #[test]
    fn bad_addresses_are_caught() {
        for bad in [
            "127.0.0.1",
            "127.0.0.1:http",
            ":443",
            "bad host:1",
            "h:70000",
            "h:0",
            "-h:1",
        ] {
            assert!(check_host_port(bad).is_err(), "{bad} accepted");
        }
        for good in [
            "127.0.0.1:1",
            "[::1]:443",
            "edge-1.example.com:8443",
            "localhost:80",
        ] {
            assert!(check_host_port(good).is_ok(), "{good} refused");
        }
        let issues = issues_of(&VALID.replace("127.0.0.1:7001", "127.0.0.1"));
        assert_eq!(
            issues,
            [GeoIssue::BadAddress {
                owner: "core \"eu-core\" addr".into(),
                addr: "127.0.0.1".into(),
                reason: "expected host:port".into(),
            }]
        );
    }

    #[test]
    fn rendezvous_is_stable_spread_and_minimal_on_change() {
        let mut config = parse(VALID).unwrap();
        let teams: Vec<String> = (0..3000).map(|i| format!("T{i:05}")).collect();
        let before: Vec<String> = teams
            .iter()
            .map(|t| config.pick_pop(t, "eu").unwrap().name.clone())
            .collect();
        // Same answer every time: nothing random or per-process in the hash.
        assert_eq!(config.pick_pop("T00042", "eu").unwrap().name, before[42]);
        assert_eq!(
            rendezvous_score("T1", "eu-1"),
            rendezvous_score("T1", "eu-1")
        );
        for pop in ["eu-1", "eu-2", "eu-3"] {
            let share = before.iter().filter(|p| *p == pop).count();
            assert!(
                (700..1300).contains(&share),
                "{pop} got {share} of 3000 teams"
            );
        }

        // Removing a PoP moves only its own teams.
        config.pops.retain(|p| p.name != "eu-2");
        for (team, old) in teams.iter().zip(&before) {
            let new = &config.pick_pop(team, "eu").unwrap().name;
            if old != "eu-2" {
                assert_eq!(new, old, "team {team} moved although its PoP stayed");
            }
        }
    }
}
