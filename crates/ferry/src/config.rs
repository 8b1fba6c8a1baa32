//! The configuration file: its sections, loading through figment, and validation.
//!
//! Values come from the TOML file and then from `FERRY_<SECTION>__<KEY>` environment
//! variables. Validation gathers every problem, each naming its key and value, and never
//! replaces a bad value with a default.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use ferry_hooks::{HookTarget, HooksConfig, HttpClientConfig, Scope};
use ferry_vfs::UploadMode;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// The whole file.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub common: CommonConfig,
    pub httpclient: HttpClientConfig,
    pub data_provider: DataProviderConfig,
    pub sftpd: ferry_ssh::Config,
    pub ftpd: ferry_ftp::Config,
    pub webdavd: ferry_dav::Config,
    pub defender: ferry_hooks::DefenderConfig,
}

/// The `[common]` section: settings shared by every protocol.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CommonConfig {
    /// Absolute path of an executable, or an http(s) URL; empty for none.
    pub post_login_hook: String,
    /// 0: failed and successful logins, 1: failed only, 2: successful only.
    pub post_login_scope: i64,
    /// Absolute path of an executable, or an http(s) URL; empty for none.
    pub post_connect_hook: String,
    /// Post-login events that may wait for delivery before the oldest is dropped.
    pub post_login_queue_size: usize,
    /// Post-login deliveries that may run at once.
    pub post_login_max_concurrent: usize,
    /// Post-connect hook runs that may be in progress at once.
    pub post_connect_max_concurrent: usize,
    /// Seconds a hook program may run before its process group is killed.
    pub hook_program_timeout: u64,
    /// "atomic" (write to a temporary file, rename when complete) or "standard" (in place).
    pub upload_mode: UploadMode,
    /// Folder for generated host keys and other state, created on first start.
    pub state_dir: PathBuf,
    /// Seconds that open connections get to finish after SIGINT or SIGTERM.
    pub shutdown_timeout: u64,
    /// Open connections over all protocols; 0 means unlimited.
    pub max_total_connections: usize,
    /// Open connections from one client address; 0 means unlimited.
    pub max_per_host_connections: usize,
    /// Addresses or CIDRs of proxies whose PROXY protocol headers are believed.
    pub proxy_allowed: Vec<String>,
}

impl Default for CommonConfig {
    fn default() -> Self {
        CommonConfig {
            post_login_hook: String::new(),
            post_login_scope: 0,
            post_connect_hook: String::new(),
            post_login_queue_size: 1024,
            post_login_max_concurrent: 8,
            post_connect_max_concurrent: 32,
            hook_program_timeout: 20,
            upload_mode: UploadMode::Atomic,
            state_dir: PathBuf::from("state"),
            shutdown_timeout: 30,
            max_total_connections: 0,
            max_per_host_connections: 20,
            proxy_allowed: Vec::new(),
        }
    }
}

/// The `[data_provider]` section: where users come from.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataProviderConfig {
    /// The users file; a relative path is taken from the config file's folder.
    pub users_file: PathBuf,
}

impl Default for DataProviderConfig {
    fn default() -> Self {
        DataProviderConfig {
            users_file: PathBuf::from("users.toml"),
        }
    }
}

/// A configuration that passed validation, with parsed hook targets.
pub struct Validated {
    pub config: Config,
    pub hooks: HooksConfig,
    pub path: PathBuf,
}

impl Validated {
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.config.common.shutdown_timeout)
    }
}

/// Reads the file and the environment and validates the result.
pub fn load(path: &Path) -> anyhow::Result<Validated> {
    if !path.is_file() {
        bail!(
            "config file {} not found; pass --config with the path of a TOML file",
            path.display()
        );
    }
    let figment = Figment::from(Serialized::defaults(Config::default()))
        .merge(Toml::file_exact(path))
        // Only FERRY_<SECTION>__<KEY> variables configure Ferry; other FERRY_ variables (a hook
        // script's settings, say) pass through to hook programs untouched.
        .merge(
            Env::prefixed("FERRY_")
                .filter(|key| key.as_str().contains("__"))
                .split("__"),
        );
    let mut config: Config = figment
        .extract()
        .map_err(|e| anyhow::anyhow!(format_figment_error(e)))
        .with_context(|| {
            format!(
                "invalid configuration in {} or FERRY_ environment variables",
                path.display()
            )
        })?;

    let base = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let base = std::fs::canonicalize(base)
        .with_context(|| format!("cannot resolve {}", base.display()))?;
    config.common.state_dir = base.join(&config.common.state_dir);
    config.data_provider.users_file = base.join(&config.data_provider.users_file);
    config.httpclient.resolve_paths(&base);
    config.sftpd.resolve_paths(&base);
    config.ftpd.resolve_paths(&base);
    config.webdavd.resolve_paths(&base);

    let mut errors = Vec::new();
    let mut hooks = validate_common(&config.common, &mut errors);
    hooks.defender = config.defender.clone();
    config.httpclient.validate("httpclient", &mut errors);
    config.sftpd.validate("sftpd", &mut errors);
    config.ftpd.validate("ftpd", &mut errors);
    config.webdavd.validate("webdavd", &mut errors);
    config.defender.validate("defender", &mut errors);
    check_listeners(&config, &mut errors);
    check_files(&config, &mut errors);
    if !errors.is_empty() {
        bail!(
            "invalid configuration in {}:\n  {}",
            path.display(),
            errors.join("\n  ")
        );
    }
    Ok(Validated {
        config,
        hooks,
        path: path.to_path_buf(),
    })
}

/// figment reports one error per value; list them all with their key paths.
fn format_figment_error(error: figment::Error) -> String {
    error
        .into_iter()
        .map(|e| {
            let key = e.path.join(".");
            let source = e
                .metadata
                .as_ref()
                .map(|m| m.name.to_string())
                .unwrap_or_default();
            if key.is_empty() {
                format!("{} ({source})", e.kind)
            } else {
                format!("{key}: {} ({source})", e.kind)
            }
        })
        .collect::<Vec<_>>()
        .join("\n  ")
}

fn validate_common(common: &CommonConfig, errors: &mut Vec<String>) -> HooksConfig {
    let mut hooks = HooksConfig::default();
    match HookTarget::parse(&common.post_login_hook) {
        Ok(target) => hooks.post_login_hook = target,
        Err(e) => errors.push(format!(
            "common.post_login_hook = {:?}: {e}",
            common.post_login_hook
        )),
    }
    match HookTarget::parse(&common.post_connect_hook) {
        Ok(target) => hooks.post_connect_hook = target,
        Err(e) => errors.push(format!(
            "common.post_connect_hook = {:?}: {e}",
            common.post_connect_hook
        )),
    }
    match Scope::from_setting(common.post_login_scope) {
        Some(scope) => hooks.post_login_scope = scope,
        None => errors.push(format!(
            "common.post_login_scope = {}: expected 0 (all logins), 1 (failed only) or 2 (successful only)",
            common.post_login_scope
        )),
    }
    for (i, entry) in common.proxy_allowed.iter().enumerate() {
        if ferry_hooks::parse_net(entry).is_none() {
            errors.push(format!(
                "common.proxy_allowed[{i}] = {entry:?}: expected an IP address or CIDR"
            ));
        }
    }
    if common.post_login_queue_size == 0 {
        errors.push("common.post_login_queue_size = 0: must be at least 1".into());
    }
    if common.post_connect_max_concurrent == 0 {
        errors.push("common.post_connect_max_concurrent = 0: must be at least 1".into());
    }
    if common.post_login_max_concurrent == 0 {
        errors.push("common.post_login_max_concurrent = 0: must be at least 1".into());
    }
    if common.hook_program_timeout == 0 {
        errors.push("common.hook_program_timeout = 0: must be at least 1 second".into());
    }
    hooks.post_login_queue_size = common.post_login_queue_size;
    hooks.post_login_max_concurrent = common.post_login_max_concurrent;
    hooks.post_connect_max_concurrent = common.post_connect_max_concurrent;
    hooks.program_timeout = Duration::from_secs(common.hook_program_timeout);
    hooks.limits = ferry_hooks::ConnectionLimits {
        max_total: common.max_total_connections,
        max_per_host: common.max_per_host_connections,
    };
    hooks
}

/// Rejects two listeners on the same address and port (port 0 picks a free port each time,
/// so it never clashes).
fn check_listeners(config: &Config, errors: &mut Vec<String>) {
    let mut seen = HashSet::new();
    let listeners = config
        .sftpd
        .bindings
        .iter()
        .map(|b| ("sftpd", b.address.as_str(), b.port))
        .chain(
            config
                .ftpd
                .bindings
                .iter()
                .map(|b| ("ftpd", b.address.as_str(), b.port)),
        )
        .chain(
            config
                .webdavd
                .bindings
                .iter()
                .map(|b| ("webdavd", b.address.as_str(), b.port)),
        );
    for (section, address, port) in listeners {
        if port != 0 && !seen.insert((address.to_owned(), port)) {
            errors.push(format!(
                "{section}.bindings: {address}:{port} is used by more than one listener"
            ));
        }
    }
}

/// Checks that every file the configuration names can be read, so that `check-config` finds
/// a missing key or certificate file and names its key. The services still parse each file
/// when they start.
fn check_files(config: &Config, errors: &mut Vec<String>) {
    let mut files: Vec<(String, &Path)> = Vec::new();
    for (i, path) in config.sftpd.host_keys.iter().enumerate() {
        files.push((format!("sftpd.host_keys[{i}]"), path));
    }
    for (section, cert, key) in [
        (
            "ftpd",
            &config.ftpd.certificate_file,
            &config.ftpd.certificate_key_file,
        ),
        (
            "webdavd",
            &config.webdavd.certificate_file,
            &config.webdavd.certificate_key_file,
        ),
    ] {
        files.push((format!("{section}.certificate_file"), cert));
        files.push((format!("{section}.certificate_key_file"), key));
    }
    for (i, path) in config.httpclient.ca_certificates.iter().enumerate() {
        files.push((format!("httpclient.ca_certificates[{i}]"), path));
    }
    for (i, pair) in config.httpclient.certificates.iter().enumerate() {
        files.push((format!("httpclient.certificates[{i}].cert"), &pair.cert));
        files.push((format!("httpclient.certificates[{i}].key"), &pair.key));
    }
    for (key, path) in files {
        if path.as_os_str().is_empty() {
            continue;
        }
        if let Err(e) = std::fs::File::open(path) {
            errors.push(format!(
                "{key} = {:?}: cannot read the file: {e}",
                path.display().to_string()
            ));
        }
    }
    let state = &config.common.state_dir;
    if state.exists() && !state.is_dir() {
        errors.push(format!(
            "common.state_dir = {:?}: exists and is not a directory",
            state.display().to_string()
        ));
    }
}

/// Renders the effective configuration as TOML with secrets hidden: header values and
/// passwords inside hook URLs.
pub fn render_redacted(config: &Config) -> anyhow::Result<String> {
    let mut value = toml::Value::try_from(config).context("cannot render the configuration")?;
    redact(&mut value, None);
    toml::to_string_pretty(&value).context("cannot render the configuration")
}

fn redact(value: &mut toml::Value, key: Option<&str>) {
    match value {
        toml::Value::Table(table) => {
            let is_header = table.contains_key("key") && table.contains_key("url");
            for (k, v) in table.iter_mut() {
                if is_header && k == "value" {
                    *v = toml::Value::String("<hidden>".into());
                } else {
                    redact(v, Some(k));
                }
            }
        }
        toml::Value::Array(items) => items.iter_mut().for_each(|v| redact(v, key)),
        toml::Value::String(text)
            if matches!(key, Some("post_login_hook" | "post_connect_hook")) =>
        {
            if let Ok(mut url) = ferry_hooks::Url::parse(text) {
                if url.password().is_some() {
                    let _ = url.set_password(Some("hidden"));
                }
                // Query parameters often carry tokens.
                if url.query().is_some() {
                    url.set_query(Some("hidden"));
                }
                *text = url.to_string();
            }
        }
        _ => {}
    }
}
