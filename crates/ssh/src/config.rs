//! The `[sftpd]` section and the server-wide login method policy derived from it.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_hooks::{LoginMethod, ProxyMode};
use serde::{Deserialize, Serialize};

/// One address to listen on.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Binding {
    /// An IP address such as `127.0.0.1` or `::`; empty listens on every IPv4 address.
    pub address: String,
    /// The TCP port; 0 lets the system pick a free one.
    pub port: u16,
    /// PROXY protocol (HAProxy version 1 or 2) in front of this listener. 0: none, the TCP
    /// peer is the client. 1: a header from an address in `proxy_allowed` gives the client
    /// address when one is sent. 2: every connection must carry a header from an allowed
    /// proxy. A header from any other address closes the connection.
    #[serde(default)]
    pub proxy_protocol: u8,
}

impl Binding {
    /// Returns the socket address, or `None` when `address` is not an IP address.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        let ip = if self.address.is_empty() {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        } else {
            self.address.parse().ok()?
        };
        Some(SocketAddr::new(ip, self.port))
    }
}

/// The `[sftpd]` section: the SSH server that carries SFTP and SCP.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Addresses to listen on. An empty list disables the service.
    pub bindings: Vec<Binding>,
    /// Private host key files in OpenSSH or PEM form, without a passphrase. When empty,
    /// ed25519, ECDSA (nistp256) and RSA (3072 bits) keys are generated on first start under
    /// `<state_dir>/ssh/` with mode 0600 and reused on later starts.
    pub host_keys: Vec<PathBuf>,
    /// Failed authentication attempts after which a connection is closed.
    pub max_auth_tries: u32,
    /// Seconds from connect to a successful login; a connection that has not logged in by
    /// then is closed.
    pub login_timeout: u64,
    /// Login methods allowed on this server, a subset of `publickey`, `password`,
    /// `keyboard-interactive`, `publickey+password` and `publickey+keyboard-interactive`.
    /// Empty allows all five. Each user's own `login_methods` narrow this further.
    pub login_methods: Vec<String>,
    /// Seconds without any packet from the client after which a connection is closed;
    /// 0 disables the limit. Client keepalives count as packets.
    pub idle_timeout: u64,
    /// Proxies whose PROXY protocol headers are believed. This is not a key of `[sftpd]`:
    /// the caller sets it, normally from `common.proxy_allowed`, before [`crate::Server::bind`].
    #[serde(skip)]
    pub proxy_allowed: Vec<ipnet::IpNet>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bindings: vec![Binding {
                address: "127.0.0.1".into(),
                port: 2022,
                proxy_protocol: 0,
            }],
            host_keys: Vec::new(),
            max_auth_tries: 6,
            login_timeout: 120,
            login_methods: Vec::new(),
            idle_timeout: 900,
            proxy_allowed: Vec::new(),
        }
    }
}

impl Config {
    /// Makes relative host key paths relative to `base`, the config file's folder.
    pub fn resolve_paths(&mut self, base: &Path) {
        for path in &mut self.host_keys {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        }
    }

    /// Pushes one message per invalid value, each naming the key under `section` and the
    /// value. Host key files are read by [`crate::Server::bind`], which names the file that
    /// cannot be used.
    pub fn validate(&self, section: &str, errors: &mut Vec<String>) {
        let mut seen = HashSet::new();
        for (i, binding) in self.bindings.iter().enumerate() {
            match binding.socket_addr() {
                None => errors.push(format!(
                    "{section}.bindings[{i}].address = {:?}: expected an IP address such as \
                     127.0.0.1 or ::",
                    binding.address
                )),
                Some(addr) if addr.port() != 0 && !seen.insert(addr) => errors.push(format!(
                    "{section}.bindings[{i}] = {addr}: the same address and port appear twice"
                )),
                Some(_) => {}
            }
            if ProxyMode::from_setting(binding.proxy_protocol).is_none() {
                errors.push(format!(
                    "{section}.bindings[{i}].proxy_protocol = {}: expected 0 (off), 1 (optional) \
                     or 2 (required)",
                    binding.proxy_protocol
                ));
            }
        }
        if self.max_auth_tries == 0 {
            errors.push(format!("{section}.max_auth_tries = 0: must be at least 1"));
        }
        if self.login_timeout == 0 {
            errors.push(format!(
                "{section}.login_timeout = 0: must be at least 1 second"
            ));
        }
        for name in &self.login_methods {
            if parse_method(name).is_none() {
                errors.push(format!(
                    "{section}.login_methods contains {name:?}: expected publickey, password, \
                     keyboard-interactive, publickey+password or publickey+keyboard-interactive"
                ));
            }
        }
    }

    /// Returns the server-wide method policy, or the first unknown method name.
    pub(crate) fn method_policy(&self) -> Result<MethodPolicy, String> {
        let mut allowed = Vec::new();
        for name in &self.login_methods {
            allowed.push(parse_method(name).ok_or_else(|| name.clone())?);
        }
        Ok(MethodPolicy { allowed })
    }

    pub(crate) fn login_timeout(&self) -> Duration {
        Duration::from_secs(self.login_timeout)
    }

    /// Returns the PROXY protocol mode of a binding, which `validate` checked.
    pub(crate) fn proxy_mode(binding: &Binding) -> ProxyMode {
        ProxyMode::from_setting(binding.proxy_protocol).unwrap_or(ProxyMode::Required)
    }

    pub(crate) fn idle_timeout(&self) -> Option<Duration> {
        (self.idle_timeout > 0).then(|| Duration::from_secs(self.idle_timeout))
    }
}

fn parse_method(name: &str) -> Option<LoginMethod> {
    Some(match name {
        "publickey" => LoginMethod::PublicKey,
        "password" => LoginMethod::Password,
        "keyboard-interactive" => LoginMethod::KeyboardInteractive,
        "publickey+password" => LoginMethod::PublicKeyAndPassword,
        "publickey+keyboard-interactive" => LoginMethod::PublicKeyAndKeyboardInteractive,
        _ => return None,
    })
}

/// The login methods this server accepts from anyone, before each user's own rules apply.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct MethodPolicy {
    /// Allowed methods; empty allows every method.
    allowed: Vec<LoginMethod>,
}

impl MethodPolicy {
    pub(crate) fn allows(&self, method: LoginMethod) -> bool {
        method != LoginMethod::NoAuthTried
            && (self.allowed.is_empty() || self.allowed.contains(&method))
    }

    /// Returns whether a public key may start a login, alone or as the first of two steps.
    pub(crate) fn allows_any_publickey(&self) -> bool {
        self.allows(LoginMethod::PublicKey)
            || self.allows(LoginMethod::PublicKeyAndPassword)
            || self.allows(LoginMethod::PublicKeyAndKeyboardInteractive)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_valid() {
        let mut errors = Vec::new();
        Config::default().validate("sftpd", &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn every_problem_named() {
        let config = Config {
            bindings: vec![
                Binding {
                    address: "localhost".into(),
                    port: 22,
                    proxy_protocol: 0,
                },
                Binding {
                    address: "127.0.0.1".into(),
                    port: 2022,
                    proxy_protocol: 3,
                },
                Binding {
                    address: "127.0.0.1".into(),
                    port: 2022,
                    proxy_protocol: 0,
                },
            ],
            max_auth_tries: 0,
            login_timeout: 0,
            login_methods: vec!["password".into(), "telepathy".into()],
            ..Config::default()
        };
        let mut errors = Vec::new();
        config.validate("sftpd", &mut errors);
        assert_eq!(errors.len(), 6, "{errors:?}");
        assert!(errors[0].starts_with("sftpd.bindings[0].address = \"localhost\""));
        assert!(errors[1].starts_with("sftpd.bindings[1].proxy_protocol = 3"));
        assert!(errors[2].starts_with("sftpd.bindings[2] = 127.0.0.1:2022"));
        assert!(errors[3].starts_with("sftpd.max_auth_tries = 0"));
        assert!(errors[4].starts_with("sftpd.login_timeout = 0"));
        assert!(errors[5].starts_with("sftpd.login_methods contains \"telepathy\""));
    }

    #[test]
    fn port_zero_may_repeat() {
        let any = Binding {
            address: "127.0.0.1".into(),
            ..Binding::default()
        };
        let config = Config {
            bindings: vec![any.clone(), any],
            ..Config::default()
        };
        let mut errors = Vec::new();
        config.validate("sftpd", &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn empty_address_listens_everywhere() {
        let binding = Binding {
            port: 2022,
            ..Binding::default()
        };
        assert_eq!(binding.socket_addr(), Some("0.0.0.0:2022".parse().unwrap()));
    }

    #[test]
    fn relative_key_paths_resolved() {
        let mut config = Config {
            host_keys: vec!["keys/host".into(), "/etc/ssh/key".into()],
            ..Config::default()
        };
        config.resolve_paths(Path::new("/srv/ferry"));
        assert_eq!(
            config.host_keys,
            vec![
                PathBuf::from("/srv/ferry/keys/host"),
                PathBuf::from("/etc/ssh/key")
            ]
        );
    }

    #[test]
    fn empty_policy_allows_all_five() {
        let policy = Config::default().method_policy().unwrap();
        for method in [
            LoginMethod::PublicKey,
            LoginMethod::Password,
            LoginMethod::KeyboardInteractive,
            LoginMethod::PublicKeyAndPassword,
            LoginMethod::PublicKeyAndKeyboardInteractive,
        ] {
            assert!(policy.allows(method), "{method}");
        }
        assert!(!policy.allows(LoginMethod::NoAuthTried));
    }

    #[test]
    fn policy_limits_methods() {
        let config = Config {
            login_methods: vec!["publickey+password".into()],
            ..Config::default()
        };
        let policy = config.method_policy().unwrap();
        assert!(policy.allows(LoginMethod::PublicKeyAndPassword));
        assert!(!policy.allows(LoginMethod::Password));
        assert!(!policy.allows(LoginMethod::PublicKey));
        assert!(policy.allows_any_publickey());
    }
}
