//! The hook settings of `[common]` and the `[httpclient]` section, with their validation.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where a hook sends its event: an executable run without a shell, or an HTTP endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HookTarget {
    Program(PathBuf),
    Url(reqwest::Url),
}

impl HookTarget {
    /// Parses a hook setting: empty means no hook, `http://` and `https://` are URLs, and
    /// anything else must be the absolute path of an executable file.
    ///
    /// The error names the problem without the key, which the caller adds.
    pub fn parse(value: &str) -> Result<Option<HookTarget>, String> {
        if value.is_empty() {
            return Ok(None);
        }
        if let Some((scheme, _)) = value.split_once("://") {
            let url = reqwest::Url::parse(value).map_err(|e| format!("invalid URL: {e}"))?;
            return match scheme.to_ascii_lowercase().as_str() {
                "http" | "https" => Ok(Some(HookTarget::Url(url))),
                _ => Err(format!(
                    "unsupported URL scheme {scheme:?}; use http://, https:// or an absolute path"
                )),
            };
        }
        let path = Path::new(value);
        if !path.is_absolute() {
            return Err("not an absolute path; give the full path of an executable".into());
        }
        check_executable(path)?;
        Ok(Some(HookTarget::Program(path.to_path_buf())))
    }
}

fn check_executable(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;

    let metadata = std::fs::metadata(path).map_err(|e| format!("cannot use the file: {e}"))?;
    if !metadata.is_file() {
        return Err("not a regular file".into());
    }
    if metadata.permissions().mode() & 0o111 == 0 {
        return Err("the file is not executable; run chmod +x on it".into());
    }
    Ok(())
}

/// Which login outcomes reach the post-login hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Failed and successful logins (setting 0).
    All,
    /// Failed logins only, including connections that never tried (setting 1).
    FailedOnly,
    /// Successful logins only (setting 2).
    SuccessOnly,
}

impl Scope {
    /// Maps the numeric setting; any value other than 0, 1 or 2 is a configuration error.
    pub fn from_setting(value: i64) -> Option<Scope> {
        match value {
            0 => Some(Scope::All),
            1 => Some(Scope::FailedOnly),
            2 => Some(Scope::SuccessOnly),
            _ => None,
        }
    }

    /// Returns whether an event with this outcome is sent.
    pub fn includes(self, success: bool) -> bool {
        match self {
            Scope::All => true,
            Scope::FailedOnly => !success,
            Scope::SuccessOnly => success,
        }
    }
}

/// The `[httpclient]` section: how every HTTP hook request is made.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpClientConfig {
    /// Seconds allowed for one whole request, from connect to the end of the response.
    pub timeout: u64,
    /// Retries after the first attempt of a post-login delivery.
    pub retry_max: u32,
    /// Seconds before the first retry; each later wait doubles, up to `retry_wait_max`.
    pub retry_wait_min: u64,
    pub retry_wait_max: u64,
    /// PEM files of extra certificate authorities, trusted beside the system roots.
    pub ca_certificates: Vec<PathBuf>,
    /// Client certificates for mutual TLS.
    pub certificates: Vec<ClientCertificate>,
    /// Accept any server certificate. Only for tests; a warning is logged at startup.
    pub skip_tls_verify: bool,
    /// Extra headers, each added to requests whose URL starts with its `url`.
    pub headers: Vec<HttpHeader>,
    /// Apply `HTTP_PROXY`, `HTTPS_PROXY` and `NO_PROXY` from the environment to hook requests.
    pub proxy_from_env: bool,
}

impl Default for HttpClientConfig {
    fn default() -> Self {
        HttpClientConfig {
            timeout: 20,
            retry_max: 3,
            retry_wait_min: 2,
            retry_wait_max: 30,
            ca_certificates: Vec::new(),
            certificates: Vec::new(),
            skip_tls_verify: false,
            headers: Vec::new(),
            proxy_from_env: false,
        }
    }
}

/// A PEM certificate chain and its private key.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClientCertificate {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A header added to hook requests whose URL starts with `url` (every request when empty).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpHeader {
    pub key: String,
    pub value: String,
    #[serde(default)]
    pub url: String,
}

impl HttpClientConfig {
    /// Resolves relative certificate paths against `base`, the folder of the config file.
    pub fn resolve_paths(&mut self, base: &Path) {
        for path in &mut self.ca_certificates {
            *path = base.join(&*path);
        }
        for pair in &mut self.certificates {
            pair.cert = base.join(&pair.cert);
            pair.key = base.join(&pair.key);
        }
    }

    /// Appends one message per invalid value, each naming the key under `section`.
    pub fn validate(&self, section: &str, errors: &mut Vec<String>) {
        if self.timeout == 0 {
            errors.push(format!("{section}.timeout = 0: must be at least 1 second"));
        }
        if self.retry_wait_min > self.retry_wait_max {
            errors.push(format!(
                "{section}.retry_wait_min = {}: must not exceed retry_wait_max = {}",
                self.retry_wait_min, self.retry_wait_max
            ));
        }
        for (i, header) in self.headers.iter().enumerate() {
            if reqwest::header::HeaderName::from_bytes(header.key.as_bytes()).is_err() {
                errors.push(format!(
                    "{section}.headers[{i}].key = {:?}: invalid header name",
                    header.key
                ));
            }
            if reqwest::header::HeaderValue::from_str(&header.value).is_err() {
                errors.push(format!(
                    "{section}.headers[{i}].value: invalid header value"
                ));
            }
        }
        // Certificate files are read and parsed when the client is built, so that one
        // message names the file and the reason.
    }
}

/// The hook settings of the `[common]` section, already parsed.
#[derive(Clone, Debug)]
pub struct HooksConfig {
    pub post_login_hook: Option<HookTarget>,
    pub post_login_scope: Scope,
    pub post_connect_hook: Option<HookTarget>,
    /// Events that may wait for delivery; when full, the oldest is dropped and counted.
    pub post_login_queue_size: usize,
    /// Deliveries that may run at once, as processes or HTTP requests.
    pub post_login_max_concurrent: usize,
    /// Post-connect hook runs that may be in progress at once; a connection that finds no
    /// free slot within the hook's time limit is rejected.
    pub post_connect_max_concurrent: usize,
    /// Time allowed to a hook program before its process group is killed.
    pub program_timeout: std::time::Duration,
    pub defender: crate::DefenderConfig,
    pub limits: crate::ConnectionLimits,
}

impl Default for HooksConfig {
    fn default() -> Self {
        HooksConfig {
            post_login_hook: None,
            post_login_scope: Scope::All,
            post_connect_hook: None,
            post_login_queue_size: 1024,
            post_login_max_concurrent: 8,
            post_connect_max_concurrent: 32,
            program_timeout: std::time::Duration::from_secs(20),
            defender: crate::DefenderConfig::default(),
            limits: crate::ConnectionLimits::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_empty_is_none() {
        assert_eq!(HookTarget::parse(""), Ok(None));
    }

    #[test]
    fn target_relative_path_rejected() {
        let err = HookTarget::parse("hooks/login.sh").unwrap_err();
        assert!(err.contains("absolute"), "{err}");
    }

    #[test]
    fn target_missing_file_rejected() {
        let err = HookTarget::parse("/nonexistent/ferry-hook").unwrap_err();
        assert!(err.contains("cannot use the file"), "{err}");
    }

    #[test]
    fn target_without_exec_bit_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hook.sh");
        std::fs::write(&path, "#!/bin/sh\n").unwrap();
        let err = HookTarget::parse(path.to_str().unwrap()).unwrap_err();
        assert!(err.contains("not executable"), "{err}");
    }

    #[test]
    fn target_directory_rejected() {
        let err = HookTarget::parse("/tmp").unwrap_err();
        assert!(err.contains("not a regular file"), "{err}");
    }

    #[test]
    fn target_other_scheme_rejected() {
        let err = HookTarget::parse("ftp://example.invalid/hook").unwrap_err();
        assert!(err.contains("unsupported URL scheme"), "{err}");
    }

    #[test]
    fn target_https_url_accepted() {
        let target = HookTarget::parse("https://127.0.0.1:9/login?x=1").unwrap();
        assert!(matches!(target, Some(HookTarget::Url(_))));
    }

    #[test]
    fn target_executable_accepted() {
        let target = HookTarget::parse("/bin/true").unwrap();
        assert_eq!(target, Some(HookTarget::Program("/bin/true".into())));
    }

    #[test]
    fn scope_settings() {
        assert_eq!(Scope::from_setting(0), Some(Scope::All));
        assert_eq!(Scope::from_setting(1), Some(Scope::FailedOnly));
        assert_eq!(Scope::from_setting(2), Some(Scope::SuccessOnly));
        assert_eq!(Scope::from_setting(3), None);
        assert_eq!(Scope::from_setting(-1), None);
        assert!(Scope::FailedOnly.includes(false));
        assert!(!Scope::FailedOnly.includes(true));
        assert!(Scope::SuccessOnly.includes(true));
        assert!(!Scope::SuccessOnly.includes(false));
    }

    #[test]
    fn http_wait_order_checked() {
        let config = HttpClientConfig {
            retry_wait_min: 5,
            retry_wait_max: 1,
            ..Default::default()
        };
        let mut errors = Vec::new();
        config.validate("httpclient", &mut errors);
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].starts_with("httpclient.retry_wait_min = 5"),
            "{errors:?}"
        );
    }
}
