//! The users file: its TOML form and its validation into [`User`] records.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ferry_hooks::{LoginMethod, Protocol};
use ferry_vfs::Permissions;
use ipnet::IpNet;
use serde::Deserialize;

use crate::keys::AuthorizedKey;
use crate::password::StoredPassword;

/// One `[[users]]` table as written in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserEntry {
    username: String,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    public_keys: Vec<String>,
    home_dir: PathBuf,
    #[serde(default)]
    login_methods: Vec<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    expiration_date: Option<String>,
    #[serde(default)]
    permissions: Option<HashMap<String, Vec<String>>>,
    #[serde(default)]
    max_sessions: u32,
    #[serde(default)]
    allowed_ip: Vec<String>,
    #[serde(default)]
    denied_ip: Vec<String>,
    #[serde(default)]
    denied_protocols: Vec<String>,
    // TOML integers are signed, so negative values are read here and rejected with the key.
    #[serde(default)]
    quota_size: i64,
    #[serde(default)]
    quota_files: i64,
    #[serde(default)]
    upload_bandwidth: i64,
    #[serde(default)]
    download_bandwidth: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    #[serde(default)]
    users: Vec<UserEntry>,
}

/// A user account, validated.
#[derive(Debug)]
pub struct User {
    pub username: String,
    pub password: Option<StoredPassword>,
    pub public_keys: Vec<AuthorizedKey>,
    /// Absolute path of the home directory, which the user sees as `/`.
    pub home_dir: PathBuf,
    /// Allowed login methods; empty allows the three single-step methods.
    pub login_methods: Vec<LoginMethod>,
    pub enabled: bool,
    /// The last day (UTC) on which the account may log in.
    pub expiration_date: Option<time::Date>,
    pub permissions: Permissions,
    /// Concurrent sessions over all protocols; 0 means unlimited.
    pub max_sessions: u32,
    pub allowed_ip: Vec<IpNet>,
    pub denied_ip: Vec<IpNet>,
    pub denied_protocols: Vec<Protocol>,
    /// Bytes the user's files may take in the home; 0 means unlimited.
    pub quota_size: u64,
    /// Regular files the home may contain; 0 means unlimited.
    pub quota_files: u64,
    /// KiB per second written to files, over all sessions; 0 means unlimited.
    pub upload_bandwidth: u64,
    /// KiB per second read from files, over all sessions; 0 means unlimited.
    pub download_bandwidth: u64,
}

impl User {
    /// Returns whether `method` may complete a login for this user.
    pub fn allows_method(&self, method: LoginMethod) -> bool {
        if self.login_methods.is_empty() {
            return matches!(
                method,
                LoginMethod::PublicKey | LoginMethod::Password | LoginMethod::KeyboardInteractive
            );
        }
        self.login_methods.contains(&method)
    }

    /// Returns whether the user must present a key and then a second factor, because every
    /// allowed method is a two-step one.
    pub fn requires_two_steps(&self) -> bool {
        !self.login_methods.is_empty()
            && self.login_methods.iter().all(|m| {
                matches!(
                    m,
                    LoginMethod::PublicKeyAndPassword
                        | LoginMethod::PublicKeyAndKeyboardInteractive
                )
            })
    }

    pub fn has_public_key(&self, blob: &[u8]) -> bool {
        self.public_keys.iter().any(|key| key.blob == blob)
    }

    /// Returns whether the user has a quota of bytes or of files.
    pub fn has_quota(&self) -> bool {
        self.quota_size > 0 || self.quota_files > 0
    }

    pub(crate) fn ip_allowed(&self, ip: IpAddr) -> bool {
        if self.denied_ip.iter().any(|net| net.contains(&ip)) {
            return false;
        }
        self.allowed_ip.is_empty() || self.allowed_ip.iter().any(|net| net.contains(&ip))
    }
}

/// Parses a users file. `base` resolves relative home directories. Every problem is listed,
/// each naming the user and the key.
pub(crate) fn parse(text: &str, base: &Path) -> Result<HashMap<String, Arc<User>>, Vec<String>> {
    let file: UsersFile = toml::from_str(text).map_err(|e| vec![e.to_string()])?;
    let mut errors = Vec::new();
    let mut users = HashMap::new();
    for (index, entry) in file.users.into_iter().enumerate() {
        let name = entry.username.clone();
        let key = |field: &str| format!("users[{index}] ({name:?}).{field}");
        match validate(entry, base, &key) {
            Ok(user) => {
                if users
                    .insert(user.username.clone(), Arc::new(user))
                    .is_some()
                {
                    errors.push(format!("{}: duplicate user name", key("username")));
                }
            }
            Err(mut problems) => errors.append(&mut problems),
        }
    }
    if errors.is_empty() {
        Ok(users)
    } else {
        Err(errors)
    }
}

fn validate(
    entry: UserEntry,
    base: &Path,
    key: &dyn Fn(&str) -> String,
) -> Result<User, Vec<String>> {
    let mut errors = Vec::new();
    let username = entry.username;
    if username.is_empty()
        || username.len() > 255
        || username
            .chars()
            .any(|c| c.is_control() || c == '/' || c.is_whitespace())
    {
        errors.push(format!(
            "{} = {username:?}: must be 1 to 255 characters without spaces, '/' or control characters",
            key("username")
        ));
    }

    let password = match entry.password.as_deref() {
        None | Some("") => None,
        Some(text) => match StoredPassword::parse(text) {
            Ok(p) => Some(p),
            Err(e) => {
                errors.push(format!("{}: {e}", key("password")));
                None
            }
        },
    };

    let mut public_keys = Vec::new();
    for (i, line) in entry.public_keys.iter().enumerate() {
        match AuthorizedKey::parse(line) {
            Ok(k) => public_keys.push(k),
            Err(e) => errors.push(format!("{}: {e}", key(&format!("public_keys[{i}]")))),
        }
    }

    let home_dir = base.join(&entry.home_dir);
    if entry.home_dir.as_os_str().is_empty() {
        errors.push(format!("{}: must not be empty", key("home_dir")));
    }

    let mut login_methods = Vec::new();
    for name in &entry.login_methods {
        let method = match name.as_str() {
            "publickey" => LoginMethod::PublicKey,
            "password" => LoginMethod::Password,
            "keyboard-interactive" => LoginMethod::KeyboardInteractive,
            "publickey+password" => LoginMethod::PublicKeyAndPassword,
            "publickey+keyboard-interactive" => LoginMethod::PublicKeyAndKeyboardInteractive,
            other => {
                errors.push(format!(
                    "{} contains {other:?}: expected publickey, password, keyboard-interactive, \
                     publickey+password or publickey+keyboard-interactive",
                    key("login_methods")
                ));
                continue;
            }
        };
        login_methods.push(method);
    }

    let enabled = match entry.status.as_deref() {
        None | Some("enabled") => true,
        Some("disabled") => false,
        Some(other) => {
            errors.push(format!(
                "{} = {other:?}: expected \"enabled\" or \"disabled\"",
                key("status")
            ));
            true
        }
    };

    let expiration_date = match entry.expiration_date.as_deref() {
        None | Some("") => None,
        Some(text) => {
            let format = time::macros::format_description!("[year]-[month]-[day]");
            match time::Date::parse(text, format) {
                Ok(date) => Some(date),
                Err(_) => {
                    errors.push(format!(
                        "{} = {text:?}: expected a date as YYYY-MM-DD",
                        key("expiration_date")
                    ));
                    None
                }
            }
        }
    };

    let permissions = match &entry.permissions {
        None => Permissions::default(),
        Some(map) => {
            match Permissions::from_rules(map.iter().map(|(k, v)| (k.as_str(), v.as_slice()))) {
                Ok(p) => p,
                Err(e) => {
                    errors.push(format!("{}: {e}", key("permissions")));
                    Permissions::default()
                }
            }
        }
    };

    let parse_nets = |field: &str, list: &[String], errors: &mut Vec<String>| -> Vec<IpNet> {
        let mut nets = Vec::new();
        for text in list {
            match parse_net(text) {
                Some(net) => nets.push(net),
                None => errors.push(format!(
                    "{} contains {text:?}: expected an IP address or CIDR",
                    key(field)
                )),
            }
        }
        nets
    };
    let allowed_ip = parse_nets("allowed_ip", &entry.allowed_ip, &mut errors);
    let denied_ip = parse_nets("denied_ip", &entry.denied_ip, &mut errors);

    let mut denied_protocols = Vec::new();
    for name in &entry.denied_protocols {
        match name.as_str() {
            "SSH" => denied_protocols.push(Protocol::Ssh),
            "FTP" => denied_protocols.push(Protocol::Ftp),
            "DAV" => denied_protocols.push(Protocol::Dav),
            other => errors.push(format!(
                "{} contains {other:?}: expected \"SSH\", \"FTP\" or \"DAV\"",
                key("denied_protocols")
            )),
        }
    }

    let mut limit = |field: &str, value: i64, unit: &str| -> u64 {
        u64::try_from(value).unwrap_or_else(|_| {
            errors.push(format!(
                "{} = {value}: must be 0 (unlimited) or a positive number of {unit}",
                key(field)
            ));
            0
        })
    };
    let quota_size = limit("quota_size", entry.quota_size, "bytes");
    let quota_files = limit("quota_files", entry.quota_files, "files");
    let upload_bandwidth = limit("upload_bandwidth", entry.upload_bandwidth, "KiB/s");
    let download_bandwidth = limit("download_bandwidth", entry.download_bandwidth, "KiB/s");

    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(User {
        username,
        password,
        public_keys,
        home_dir,
        login_methods,
        enabled,
        expiration_date,
        permissions,
        max_sessions: entry.max_sessions,
        allowed_ip,
        denied_ip,
        denied_protocols,
        quota_size,
        quota_files,
        upload_bandwidth,
        download_bandwidth,
    })
}

/// Parses a CIDR, or a bare address as a single-host network.
pub fn parse_net(text: &str) -> Option<IpNet> {
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))
}
