//! The login event and its labels, spelled as the hook contract fixes them.

use std::fmt;
use std::net::IpAddr;

use serde::Serialize;

/// The protocol family a connection belongs to, as reported to hooks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Protocol {
    /// SFTP, SCP and any other SSH session.
    #[serde(rename = "SSH")]
    Ssh,
    /// FTP and explicit FTPS.
    #[serde(rename = "FTP")]
    Ftp,
    /// WebDAV over HTTP and HTTPS.
    #[serde(rename = "DAV")]
    Dav,
}

impl Protocol {
    /// Returns the label used in hook payloads and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Ssh => "SSH",
            Protocol::Ftp => "FTP",
            Protocol::Dav => "DAV",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a client tried to authenticate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum LoginMethod {
    #[serde(rename = "publickey")]
    PublicKey,
    #[serde(rename = "password")]
    Password,
    #[serde(rename = "keyboard-interactive")]
    KeyboardInteractive,
    /// A public key followed by a password, reported once for the second step.
    #[serde(rename = "publickey+password")]
    PublicKeyAndPassword,
    /// A public key followed by keyboard-interactive, reported once for the second step.
    #[serde(rename = "publickey+keyboard-interactive")]
    PublicKeyAndKeyboardInteractive,
    /// The connection closed without any authentication attempt. The misspelling is part of
    /// the contract that existing hook scripts match on.
    #[serde(rename = "no_auth_tryed")]
    NoAuthTried,
}

impl LoginMethod {
    /// Returns the label used in hook payloads and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            LoginMethod::PublicKey => "publickey",
            LoginMethod::Password => "password",
            LoginMethod::KeyboardInteractive => "keyboard-interactive",
            LoginMethod::PublicKeyAndPassword => "publickey+password",
            LoginMethod::PublicKeyAndKeyboardInteractive => "publickey+keyboard-interactive",
            LoginMethod::NoAuthTried => "no_auth_tryed",
        }
    }
}

impl fmt::Display for LoginMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One authentication attempt, or a connection that ended without one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginEvent {
    /// The user name as the client sent it; empty for [`LoginMethod::NoAuthTried`].
    pub username: String,
    /// The real client address, with IPv4-mapped IPv6 addresses shown as IPv4.
    pub ip: IpAddr,
    pub method: LoginMethod,
    pub success: bool,
    pub protocol: Protocol,
    /// The id that the connection's log lines carry; not part of the hook payload.
    pub connection_id: String,
}

impl LoginEvent {
    /// Builds the event for a connection that closed without any authentication attempt.
    pub fn no_auth_tried(ip: IpAddr, protocol: Protocol, connection_id: &str) -> LoginEvent {
        LoginEvent {
            username: String::new(),
            ip: canonical_ip(ip),
            method: LoginMethod::NoAuthTried,
            success: false,
            protocol,
            connection_id: connection_id.to_owned(),
        }
    }

    /// Returns the JSON object that the HTTP hook posts, with keys in the contract's order.
    pub fn to_json(&self) -> String {
        #[derive(Serialize)]
        struct Payload<'a> {
            username: &'a str,
            login_method: LoginMethod,
            ip: String,
            protocol: Protocol,
            status: u8,
        }
        let payload = Payload {
            username: &self.username,
            login_method: self.method,
            ip: self.ip.to_string(),
            protocol: self.protocol,
            status: u8::from(self.success),
        };
        // Serializing a struct of strings and integers cannot fail.
        serde_json::to_string(&payload).unwrap_or_default()
    }

    /// Returns the environment variables that the hook program receives.
    pub fn to_env(&self) -> [(&'static str, String); 5] {
        [
            ("SFTPGO_LOGIND_USER", self.username.clone()),
            ("SFTPGO_LOGIND_IP", self.ip.to_string()),
            ("SFTPGO_LOGIND_METHOD", self.method.as_str().to_owned()),
            ("SFTPGO_LOGIND_STATUS", u8::from(self.success).to_string()),
            ("SFTPGO_LOGIND_PROTOCOL", self.protocol.as_str().to_owned()),
        ]
    }
}

/// A user name as it may appear in a log line: control characters (line breaks, tabs,
/// terminal escapes) and backslashes are escaped, so a client-chosen name cannot start a new
/// log line or restyle a terminal. Other characters are kept, so JSON logs show the name as
/// sent.
pub struct LogName<'a>(pub &'a str);

impl fmt::Display for LogName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            if c.is_control() || c == '\\' {
                write!(f, "{}", c.escape_debug())?;
            } else {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

/// Maps an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) to plain IPv4 and leaves others as
/// they are, so that one client has one spelling in every event and ban list.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// Generates a connection id such as `SSH-5f3a9c1e02b4d768`: the protocol and 64 random bits,
/// unique enough to join the log lines and events of one connection.
pub fn new_connection_id(protocol: Protocol) -> String {
    format!("{}-{:016x}", protocol.as_str(), rand::random::<u64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_payload_matches_contract() {
        let event = LoginEvent {
            username: "alice".into(),
            ip: "::ffff:192.0.2.1".parse().unwrap(),
            method: LoginMethod::PublicKeyAndKeyboardInteractive,
            success: true,
            protocol: Protocol::Ssh,
            connection_id: "x".into(),
        };
        let mut event = event;
        event.ip = canonical_ip(event.ip);
        assert_eq!(
            event.to_json(),
            r#"{"username":"alice","login_method":"publickey+keyboard-interactive","ip":"192.0.2.1","protocol":"SSH","status":1}"#
        );
    }

    #[test]
    fn no_auth_event_env() {
        let event = LoginEvent::no_auth_tried("2001:db8::1".parse().unwrap(), Protocol::Ftp, "c");
        let env = event.to_env();
        assert_eq!(env[0], ("SFTPGO_LOGIND_USER", String::new()));
        assert_eq!(env[1], ("SFTPGO_LOGIND_IP", "2001:db8::1".to_owned()));
        assert_eq!(env[2], ("SFTPGO_LOGIND_METHOD", "no_auth_tryed".to_owned()));
        assert_eq!(env[3], ("SFTPGO_LOGIND_STATUS", "0".to_owned()));
        assert_eq!(env[4], ("SFTPGO_LOGIND_PROTOCOL", "FTP".to_owned()));
    }

    #[test]
    fn log_name_escapes_control_characters() {
        let name = LogName("a\nb\\c\u{1b}[31m d\"e");
        assert_eq!(name.to_string(), "a\\nb\\\\c\\u{1b}[31m d\"e");
    }

    #[test]
    fn canonical_ip_keeps_plain_v6() {
        let ip: IpAddr = "::1".parse().unwrap();
        assert_eq!(canonical_ip(ip), ip);
    }
}
