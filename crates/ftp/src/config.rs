//! The `[ftpd]` section and its validation.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One address to listen on.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Binding {
    /// IPv4 or IPv6 address to listen on.
    pub address: String,
    /// TCP port; 0 picks a free port.
    pub port: u16,
    /// 0: TLS (AUTH TLS) is offered when a certificate is configured but not required.
    /// 1: TLS is required on the control connection before USER and on every data
    /// connection.
    #[serde(default)]
    pub tls_mode: u8,
    /// PROXY protocol (HAProxy version 1 or 2) on this control listener. 0: none, the TCP
    /// peer is the client. 1: a header from an address in `proxy_allowed` gives the client
    /// address when one is sent. 2: every connection must carry a header from an allowed
    /// proxy. A header from any other address closes the connection. Data connections never
    /// carry a header.
    #[serde(default)]
    pub proxy_protocol: u8,
}

impl Binding {
    /// Returns whether this binding requires TLS on the control and data connections.
    pub fn tls_required(&self) -> bool {
        self.tls_mode == 1
    }

    /// Returns the PROXY protocol mode; an invalid setting is rejected by validation first.
    pub fn proxy_mode(&self) -> ferry_hooks::ProxyMode {
        ferry_hooks::ProxyMode::from_setting(self.proxy_protocol)
            .unwrap_or(ferry_hooks::ProxyMode::Required)
    }
}

/// An inclusive range of TCP ports for passive data connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PortRange {
    pub start: u16,
    pub end: u16,
}

/// The `[ftpd]` section.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Listening addresses; an empty list disables FTP.
    pub bindings: Vec<Binding>,
    /// Ports offered to clients in PASV and EPSV replies.
    pub passive_port_range: PortRange,
    /// The IPv4 address or host name announced in PASV replies; empty announces the local
    /// address of the control connection. A host name is resolved on every PASV.
    pub passive_host: String,
    /// PEM file with the server certificate chain for FTPS; empty disables AUTH TLS unless
    /// a binding requires TLS, which is then a configuration error.
    pub certificate_file: PathBuf,
    /// PEM file with the private key of `certificate_file`.
    pub certificate_key_file: PathBuf,
    /// Seconds without a command, after login, before the server closes the connection.
    /// A running transfer keeps the connection open.
    pub idle_timeout: u64,
    /// Seconds from connect to a successful login before the server closes the connection.
    pub login_timeout: u64,
    /// Failed `PASS` attempts after which the server closes the control connection.
    pub max_login_attempts: u32,
    /// Proxies whose PROXY protocol headers are believed. This is not a key of `[ftpd]`: the
    /// caller sets it, normally from `common.proxy_allowed`, before [`crate::Server::bind`].
    #[serde(skip)]
    pub proxy_allowed: Vec<ipnet::IpNet>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bindings: vec![Binding {
                address: "127.0.0.1".into(),
                port: 2121,
                tls_mode: 0,
                proxy_protocol: 0,
            }],
            passive_port_range: PortRange {
                start: 50000,
                end: 50100,
            },
            passive_host: String::new(),
            certificate_file: PathBuf::new(),
            certificate_key_file: PathBuf::new(),
            idle_timeout: 300,
            login_timeout: 60,
            max_login_attempts: 3,
            proxy_allowed: Vec::new(),
        }
    }
}

impl Config {
    /// Makes relative certificate paths relative to the config file's folder.
    pub fn resolve_paths(&mut self, base: &Path) {
        for path in [&mut self.certificate_file, &mut self.certificate_key_file] {
            if !path.as_os_str().is_empty() && path.is_relative() {
                *path = base.join(&*path);
            }
        }
    }

    /// Returns whether a certificate is configured, so that AUTH TLS is offered.
    pub fn tls_configured(&self) -> bool {
        !self.certificate_file.as_os_str().is_empty()
    }

    /// Pushes one message per invalid value, each naming the key path and the value.
    pub fn validate(&self, section: &str, errors: &mut Vec<String>) {
        for (i, binding) in self.bindings.iter().enumerate() {
            if binding.address.parse::<IpAddr>().is_err() {
                errors.push(format!(
                    "{section}.bindings[{i}].address = {:?}: expected an IPv4 or IPv6 address",
                    binding.address
                ));
            }
            if ferry_hooks::ProxyMode::from_setting(binding.proxy_protocol).is_none() {
                errors.push(format!(
                    "{section}.bindings[{i}].proxy_protocol = {}: expected 0 (off), 1 (optional) \
                     or 2 (required)",
                    binding.proxy_protocol
                ));
            }
            match binding.tls_mode {
                0 => {}
                1 if !self.tls_configured() => errors.push(format!(
                    "{section}.bindings[{i}].tls_mode = 1: requires {section}.certificate_file \
                     and {section}.certificate_key_file"
                )),
                1 => {}
                other => errors.push(format!(
                    "{section}.bindings[{i}].tls_mode = {other}: expected 0 (TLS optional) or 1 \
                     (TLS required)"
                )),
            }
        }

        let PortRange { start, end } = self.passive_port_range;
        if start == 0 {
            errors.push(format!(
                "{section}.passive_port_range = {start}-{end}: start must be at least 1"
            ));
        }
        if start > end {
            errors.push(format!(
                "{section}.passive_port_range = {start}-{end}: start must not exceed end"
            ));
        }

        if let Err(reason) = parse_passive_host(&self.passive_host) {
            errors.push(format!(
                "{section}.passive_host = {:?}: {reason}",
                self.passive_host
            ));
        }

        self.validate_certificates(section, errors);

        if self.idle_timeout == 0 {
            errors.push(format!(
                "{section}.idle_timeout = 0: must be at least 1 second"
            ));
        }
        if self.login_timeout == 0 {
            errors.push(format!(
                "{section}.login_timeout = 0: must be at least 1 second"
            ));
        }
        if self.max_login_attempts == 0 {
            errors.push(format!(
                "{section}.max_login_attempts = 0: must be at least 1"
            ));
        }
        // libunftp applies its idle timer before login too, so a longer login timeout could
        // never take effect for a client that stays silent.
        if self.login_timeout > self.idle_timeout && self.idle_timeout > 0 {
            errors.push(format!(
                "{section}.login_timeout = {}: must not exceed {section}.idle_timeout ({}), \
                 because an idle connection is closed after idle_timeout even before login",
                self.login_timeout, self.idle_timeout
            ));
        }
    }

    fn validate_certificates(&self, section: &str, errors: &mut Vec<String>) {
        let cert = &self.certificate_file;
        let key = &self.certificate_key_file;
        match (cert.as_os_str().is_empty(), key.as_os_str().is_empty()) {
            (true, true) => {}
            (false, true) => errors.push(format!(
                "{section}.certificate_key_file = \"\": required when {section}.certificate_file \
                 is set"
            )),
            (true, false) => errors.push(format!(
                "{section}.certificate_file = \"\": required when \
                 {section}.certificate_key_file is set"
            )),
            (false, false) => {
                if let Err(error) = crate::tls::load_certificates(cert) {
                    errors.push(format!(
                        "{section}.certificate_file = {:?}: {error}",
                        cert.display().to_string()
                    ));
                }
                if let Err(error) = crate::tls::load_private_key(key) {
                    errors.push(format!(
                        "{section}.certificate_key_file = {:?}: {error}",
                        key.display().to_string()
                    ));
                }
            }
        }
    }
}

/// The server address that PASV replies announce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PassiveHost {
    /// The local address of the control connection.
    FromConnection,
    Ip(std::net::Ipv4Addr),
    /// A host name resolved to its first IPv4 address on every PASV.
    Name(String),
}

/// Parses `passive_host`: empty, an IPv4 address, or a host name.
pub(crate) fn parse_passive_host(value: &str) -> Result<PassiveHost, String> {
    if value.is_empty() {
        return Ok(PassiveHost::FromConnection);
    }
    match value.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => return Ok(PassiveHost::Ip(ip)),
        Ok(IpAddr::V6(_)) => {
            return Err(
                "PASV replies carry IPv4 addresses only; IPv6 clients use EPSV, which names \
                 no address"
                    .into(),
            );
        }
        Err(_) => {}
    }
    let valid_label = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if value.len() <= 253 && value.trim_end_matches('.').split('.').all(valid_label) {
        Ok(PassiveHost::Name(value.to_owned()))
    } else {
        Err("expected an IPv4 address or a host name".into())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;

    fn errors(config: &Config) -> Vec<String> {
        let mut errors = Vec::new();
        config.validate("ftpd", &mut errors);
        errors
    }

    #[test]
    fn default_is_valid() {
        assert_eq!(errors(&Config::default()), Vec::<String>::new());
    }

    #[test]
    fn reversed_port_range_named() {
        let config = Config {
            passive_port_range: PortRange {
                start: 3000,
                end: 2000,
            },
            ..Config::default()
        };
        assert_eq!(
            errors(&config),
            ["ftpd.passive_port_range = 3000-2000: start must not exceed end"]
        );
    }

    #[test]
    fn tls_required_without_certificate() {
        let mut config = Config::default();
        config.bindings[0].tls_mode = 1;
        let errors = errors(&config);
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].starts_with("ftpd.bindings[0].tls_mode = 1: requires ftpd.certificate_file"),
            "{errors:?}"
        );
    }

    #[test]
    fn unknown_proxy_protocol_rejected() {
        let mut config = Config::default();
        config.bindings[0].proxy_protocol = 3;
        let errors = errors(&config);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with("ftpd.bindings[0].proxy_protocol = 3"),
            "{errors:?}"
        );
    }

    #[test]
    fn unknown_tls_mode_rejected() {
        let mut config = Config::default();
        config.bindings[0].tls_mode = 2;
        assert!(errors(&config)[0].starts_with("ftpd.bindings[0].tls_mode = 2:"));
    }

    #[test]
    fn unreadable_certificate_names_file() {
        let config = Config {
            certificate_file: "/nonexistent/cert.pem".into(),
            certificate_key_file: "/nonexistent/key.pem".into(),
            ..Config::default()
        };
        let errors = errors(&config);
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].starts_with("ftpd.certificate_file = \"/nonexistent/cert.pem\": "));
        assert!(errors[1].starts_with("ftpd.certificate_key_file = \"/nonexistent/key.pem\": "));
    }

    #[test]
    fn certificate_without_key_rejected() {
        let config = Config {
            certificate_file: "cert.pem".into(),
            ..Config::default()
        };
        assert!(errors(&config)[0].starts_with("ftpd.certificate_key_file = \"\": required"));
    }

    #[test]
    fn bad_address_and_timeouts_listed() {
        let mut config = Config {
            idle_timeout: 0,
            login_timeout: 0,
            ..Config::default()
        };
        config.bindings[0].address = "localhost".into();
        let errors = errors(&config);
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors[0].starts_with("ftpd.bindings[0].address = \"localhost\""));
        assert!(errors[1].starts_with("ftpd.idle_timeout = 0"));
        assert!(errors[2].starts_with("ftpd.login_timeout = 0"));
    }

    #[test]
    fn zero_login_attempts_rejected() {
        let config = Config {
            max_login_attempts: 0,
            ..Config::default()
        };
        assert_eq!(
            errors(&config),
            ["ftpd.max_login_attempts = 0: must be at least 1"]
        );
    }

    #[test]
    fn login_timeout_above_idle_timeout_rejected() {
        let config = Config {
            idle_timeout: 30,
            login_timeout: 60,
            ..Config::default()
        };
        assert!(errors(&config)[0].starts_with("ftpd.login_timeout = 60: must not exceed"));
    }

    #[test]
    fn passive_host_forms() {
        assert_eq!(parse_passive_host(""), Ok(PassiveHost::FromConnection));
        assert_eq!(
            parse_passive_host("192.0.2.7"),
            Ok(PassiveHost::Ip("192.0.2.7".parse().unwrap()))
        );
        assert_eq!(
            parse_passive_host("ftp.example.com"),
            Ok(PassiveHost::Name("ftp.example.com".into()))
        );
        assert!(parse_passive_host("2001:db8::1").is_err());
        assert!(parse_passive_host("bad host").is_err());
    }

    #[test]
    fn relative_certificate_paths_resolved() {
        let mut config = Config {
            certificate_file: "tls/cert.pem".into(),
            certificate_key_file: "/etc/key.pem".into(),
            ..Config::default()
        };
        config.resolve_paths(Path::new("/srv/ferry"));
        assert_eq!(
            config.certificate_file,
            Path::new("/srv/ferry/tls/cert.pem")
        );
        assert_eq!(config.certificate_key_file, Path::new("/etc/key.pem"));
    }

    #[test]
    fn binding_tls_mode_defaults_to_optional() {
        let binding: Binding = toml_binding("address = \"127.0.0.1\"\nport = 0\n");
        assert_eq!(binding.tls_mode, 0);
    }

    fn toml_binding(text: &str) -> Binding {
        #[derive(Deserialize)]
        struct Wrapper {
            binding: Binding,
        }
        let text = format!("[binding]\n{text}");
        let wrapper: Wrapper = toml::from_str(&text).unwrap();
        wrapper.binding
    }
}
