//! The `[webdavd]` section and its validation.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One address to listen on.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Binding {
    /// IP address of a local interface, such as `127.0.0.1`, `0.0.0.0` or `::`.
    pub address: String,
    /// TCP port; 0 lets the system pick a free port.
    pub port: u16,
    /// Serve HTTPS on this binding with `certificate_file` and `certificate_key_file`.
    #[serde(default)]
    pub enable_https: bool,
}

/// The `[webdavd]` section. An empty `bindings` list disables WebDAV.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub bindings: Vec<Binding>,
    /// PEM file with the server certificate chain, leaf first; required when a binding has
    /// `enable_https`.
    pub certificate_file: PathBuf,
    /// PEM file with the private key of `certificate_file` (PKCS#8, PKCS#1 or SEC1).
    pub certificate_key_file: PathBuf,
    /// Seconds a verified user name and password stay verified, so that later requests skip
    /// the password hash. 0 verifies every request.
    pub auth_cache_ttl: u64,
    /// Addresses or CIDRs of reverse proxies whose `X-Forwarded-For` and `X-Real-IP` headers
    /// are believed. Requests from any other address use the TCP peer address.
    pub trusted_proxies: Vec<String>,
    /// Seconds a client has to send the complete request headers (and, over HTTPS, to finish
    /// the TLS handshake) before the connection is closed. This bounds slowloris attacks. It is
    /// also how long an idle HTTP/1.1 connection stays open, and the interval of the HTTP/2
    /// pings that detect dead peers.
    pub header_read_timeout: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bindings: vec![Binding {
                address: "127.0.0.1".into(),
                port: 8080,
                enable_https: false,
            }],
            certificate_file: PathBuf::new(),
            certificate_key_file: PathBuf::new(),
            auth_cache_ttl: 300,
            trusted_proxies: Vec::new(),
            header_read_timeout: 30,
        }
    }
}

impl Config {
    /// Makes relative certificate paths relative to the config file's folder.
    pub fn resolve_paths(&mut self, base: &Path) {
        for path in [&mut self.certificate_file, &mut self.certificate_key_file] {
            if !path.as_os_str().is_empty() {
                *path = base.join(&*path);
            }
        }
    }

    /// Pushes one message per invalid value, each naming the key under `section` and the value.
    pub fn validate(&self, section: &str, errors: &mut Vec<String>) {
        for (i, binding) in self.bindings.iter().enumerate() {
            if binding.address.parse::<IpAddr>().is_err() {
                errors.push(format!(
                    "{section}.bindings[{i}].address = {:?}: expected an IP address such as 127.0.0.1 or ::",
                    binding.address
                ));
            }
        }

        if let Some(i) = self.bindings.iter().position(|b| b.enable_https) {
            let files = [
                ("certificate_file", &self.certificate_file),
                ("certificate_key_file", &self.certificate_key_file),
            ];
            for (key, path) in files {
                if path.as_os_str().is_empty() {
                    errors.push(format!(
                        "{section}.{key} is empty: a PEM file is required because \
                         {section}.bindings[{i}].enable_https = true"
                    ));
                } else if let Err(e) = std::fs::File::open(path) {
                    errors.push(format!(
                        "{section}.{key} = {:?}: cannot read the file: {e}",
                        path.display().to_string()
                    ));
                }
            }
        }

        for (i, entry) in self.trusted_proxies.iter().enumerate() {
            if ferry_users::parse_net(entry).is_none() {
                errors.push(format!(
                    "{section}.trusted_proxies[{i}] = {entry:?}: expected an IP address or CIDR"
                ));
            }
        }

        if self.header_read_timeout == 0 {
            errors.push(format!(
                "{section}.header_read_timeout = 0: must be at least 1 second"
            ));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn messages(config: &Config) -> Vec<String> {
        let mut errors = Vec::new();
        config.validate("webdavd", &mut errors);
        errors
    }

    #[test]
    fn defaults_valid() {
        assert!(messages(&Config::default()).is_empty());
    }

    #[test]
    fn bad_address_named() {
        let config = Config {
            bindings: vec![Binding {
                address: "localhost".into(),
                port: 1,
                enable_https: false,
            }],
            ..Config::default()
        };
        let errors = messages(&config);
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].starts_with("webdavd.bindings[0].address = \"localhost\""),
            "{errors:?}"
        );
    }

    #[test]
    fn https_needs_files() {
        let config = Config {
            bindings: vec![Binding {
                address: "127.0.0.1".into(),
                port: 0,
                enable_https: true,
            }],
            ..Config::default()
        };
        let errors = messages(&config);
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].starts_with("webdavd.certificate_file is empty"));
        assert!(errors[1].starts_with("webdavd.certificate_key_file is empty"));
    }

    #[test]
    fn unreadable_certificate_named() {
        let config = Config {
            bindings: vec![Binding {
                address: "127.0.0.1".into(),
                port: 0,
                enable_https: true,
            }],
            certificate_file: "/nonexistent/cert.pem".into(),
            certificate_key_file: "/nonexistent/key.pem".into(),
            ..Config::default()
        };
        let errors = messages(&config);
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors[0].starts_with("webdavd.certificate_file = \"/nonexistent/cert.pem\""),
            "{errors:?}"
        );
    }

    #[test]
    fn proxies_and_timeout_checked() {
        let config = Config {
            trusted_proxies: vec!["10.0.0.0/8".into(), "proxy.local".into()],
            header_read_timeout: 0,
            ..Config::default()
        };
        let errors = messages(&config);
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].starts_with("webdavd.trusted_proxies[1] = \"proxy.local\""));
        assert!(errors[1].starts_with("webdavd.header_read_timeout = 0"));
    }

    #[test]
    fn relative_paths_resolved() {
        let mut config = Config {
            certificate_file: "tls/cert.pem".into(),
            ..Config::default()
        };
        config.resolve_paths(Path::new("/etc/ferry"));
        assert_eq!(
            config.certificate_file,
            PathBuf::from("/etc/ferry/tls/cert.pem")
        );
        assert_eq!(config.certificate_key_file, PathBuf::new());
    }
}
