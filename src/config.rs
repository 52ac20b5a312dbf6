//! The configuration: a strict TOML file format, validated into a typed runtime `Config`.
//!
//! Why this exists: operators edit `config.toml` by hand, so a typo must be an error that
//! names the file, the line and the key, never a silently ignored option. The serde structs
//! (`file::*`) mirror the file exactly and reject unknown keys; `Config` is what the rest of
//! the program uses: names parsed, paths resolved against the config file's folder, defaults
//! applied. The shipped `config.toml` documents every option and its default, and a test
//! parses it.

use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hickory_proto::rr::Name;

/// The config file, exactly as written. Unknown keys are errors.
mod file {
    use std::net::SocketAddr;
    use std::time::Duration;

    use serde::Deserialize;
    use toml::Spanned;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct ConfigFile {
        #[serde(default)]
        pub server: Server,
        #[serde(default)]
        pub zone: Vec<Spanned<Zone>>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Server {
        #[serde(default = "default_listen")]
        pub listen: Spanned<Vec<SocketAddr>>,
        #[serde(default = "default_tcp_idle_timeout", with = "humantime_serde")]
        pub tcp_idle_timeout: Duration,
        #[serde(default)]
        pub udp_sockets: usize,
        #[serde(default = "default_udp_payload")]
        pub udp_payload: Spanned<u16>,
    }

    impl Default for Server {
        fn default() -> Self {
            Self {
                listen: default_listen(),
                tcp_idle_timeout: default_tcp_idle_timeout(),
                udp_sockets: 0,
                udp_payload: default_udp_payload(),
            }
        }
    }

    fn default_listen() -> Spanned<Vec<SocketAddr>> {
        Spanned::new(0..0, vec![SocketAddr::from(([127, 0, 0, 1], 5353))])
    }

    fn default_tcp_idle_timeout() -> Duration {
        Duration::from_secs(10)
    }

    fn default_udp_payload() -> Spanned<u16> {
        Spanned::new(0..0, 1232)
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Zone {
        pub origin: Spanned<String>,
        pub file: Spanned<String>,
    }
}

/// What is wrong with a config file; the message says where.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read: check the path and permissions.
    #[error("{path}: cannot read config: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not valid TOML, has an unknown key, or a value of the wrong type.
    #[error("{path}:{line}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
    /// A value is well-formed but not acceptable.
    #[error("{path}:{line}: {key}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        key: String,
        message: String,
    },
}

/// The validated configuration the server runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from.
    pub path: PathBuf,
    pub server: ServerConfig,
    pub zones: Vec<ZoneConfig>,
}

/// `[server]`: where and how DNS is served.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Addresses served on both UDP and TCP.
    pub listen: Vec<SocketAddr>,
    /// A TCP connection with no complete query for this long is closed (RFC 7766 §6.2.3).
    pub tcp_idle_timeout: Duration,
    /// UDP sockets (SO_REUSEPORT) per listen address; each is served by its own task.
    pub udp_sockets: usize,
    /// The EDNS UDP payload size we advertise and the most we send over UDP.
    pub udp_payload: u16,
}

/// `[[zone]]`: one zone served from a master file.
#[derive(Debug, Clone)]
pub struct ZoneConfig {
    pub origin: Name,
    /// Resolved against the config file's folder.
    pub file: PathBuf,
}

impl Config {
    /// Reads and validates the config file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Validates config text; `path` names it in errors and anchors relative zone paths.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let line_of = |span: Range<usize>| {
            1 + text.as_bytes()[..span.start.min(text.len())]
                .iter()
                .filter(|byte| **byte == b'\n')
                .count()
        };
        let raw: file::ConfigFile = toml::from_str(text).map_err(|error| ConfigError::Syntax {
            path: path.to_path_buf(),
            line: error.span().map_or(1, line_of),
            message: error.message().to_string(),
        })?;
        let invalid = |span: Range<usize>, key: &str, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            line: line_of(span),
            key: key.to_string(),
            message,
        };

        let listen_span = raw.server.listen.span();
        let listen = raw.server.listen.into_inner();
        if listen.is_empty() {
            return Err(invalid(
                listen_span,
                "server.listen",
                "needs at least one address".into(),
            ));
        }
        for (index, address) in listen.iter().enumerate() {
            if listen[..index].contains(address) {
                return Err(invalid(
                    listen_span,
                    "server.listen",
                    format!("{address} is listed twice"),
                ));
            }
        }
        let payload_span = raw.server.udp_payload.span();
        let udp_payload = raw.server.udp_payload.into_inner();
        if udp_payload < 512 {
            return Err(invalid(
                payload_span,
                "server.udp_payload",
                format!("{udp_payload} is below the DNS minimum of 512"),
            ));
        }
        let udp_sockets = match raw.server.udp_sockets {
            0 => std::thread::available_parallelism().map_or(1, |count| count.get()),
            count => count,
        };

        let folder = path.parent().unwrap_or(Path::new("."));
        let mut zones: Vec<ZoneConfig> = Vec::new();
        if raw.zone.is_empty() {
            return Err(invalid(
                0..0,
                "zone",
                "no [[zone]] is configured; there is nothing to serve".into(),
            ));
        }
        for zone in raw.zone {
            let zone = zone.into_inner();
            let origin_span = zone.origin.span();
            let mut origin = Name::from_ascii(zone.origin.get_ref()).map_err(|error| {
                invalid(
                    origin_span.clone(),
                    "zone.origin",
                    format!("{:?} is not a domain name: {error}", zone.origin.get_ref()),
                )
            })?;
            origin.set_fqdn(true);
            if zones.iter().any(|other| other.origin == origin) {
                return Err(invalid(
                    origin_span,
                    "zone.origin",
                    format!("zone {origin} is configured twice"),
                ));
            }
            let file = folder.join(zone.file.get_ref());
            zones.push(ZoneConfig { origin, file });
        }

        Ok(Self {
            path: path.to_path_buf(),
            server: ServerConfig {
                listen,
                tcp_idle_timeout: raw.server.tcp_idle_timeout,
                udp_sockets,
                udp_payload,
            },
            zones,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/healthdns/config.toml"))
    }

    #[test]
    fn the_shipped_config_parses() {
        let text = include_str!("../config.toml");
        let config = parse(text).unwrap();
        assert_eq!(
            config.server.listen,
            vec!["127.0.0.1:5353".parse().unwrap()]
        );
        assert_eq!(config.server.tcp_idle_timeout, Duration::from_secs(10));
        assert_eq!(config.server.udp_payload, 1232);
        assert_eq!(config.zones[0].origin.to_string(), "example.test.");
        assert_eq!(
            config.zones[0].file,
            Path::new("/etc/healthdns/zones/example.test.zone")
        );
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let error = parse("[server]\nlisten = [\"127.0.0.1:53\"]\nlisen = 3\n").unwrap_err();
        let text = error.to_string();
        assert!(
            text.starts_with("/etc/healthdns/config.toml:3: unknown field `lisen`"),
            "{text}"
        );
    }

    #[test]
    fn bad_values_name_line_and_key() {
        let text =
            "[server]\nlisten = [\"127.0.0.1:53\"]\n\n[[zone]]\norigin = \"a..b\"\nfile = \"x\"\n";
        let error = parse(text).unwrap_err().to_string();
        assert!(
            error.starts_with("/etc/healthdns/config.toml:5: zone.origin:"),
            "{error}"
        );

        let error = parse("[server]\nlisten = [\"nonsense\"]\n")
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("/etc/healthdns/config.toml:2:"),
            "{error}"
        );
    }

    #[test]
    fn duplicate_zones_are_rejected() {
        let text = "[[zone]]\norigin = \"a.test\"\nfile = \"x\"\n[[zone]]\norigin = \"A.test.\"\nfile = \"y\"\n";
        let error = parse(text).unwrap_err().to_string();
        assert!(
            error.contains(":5: zone.origin: zone A.test. is configured twice"),
            "{error}"
        );
    }
}
