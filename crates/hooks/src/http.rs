//! The HTTP client shared by every hook: TLS trust, client certificates, extra headers,
//! and the retry policy of post-login deliveries.

use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HeaderName, HeaderValue};

use crate::Error;
use crate::config::HttpClientConfig;

/// A configured client plus the settings that apply per request.
#[derive(Clone, Debug)]
pub(crate) struct HttpClient {
    client: reqwest::Client,
    headers: Vec<(String, HeaderName, HeaderValue)>,
    retry_max: u32,
    retry_wait_min: Duration,
    retry_wait_max: Duration,
}

/// The outcome of one request that did not end in a 2xx response.
#[derive(Debug)]
pub(crate) enum HttpFailure {
    Status(reqwest::StatusCode),
    Transport(String),
}

impl std::fmt::Display for HttpFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpFailure::Status(status) => write!(f, "response status {status}"),
            HttpFailure::Transport(error) => f.write_str(error),
        }
    }
}

impl HttpClient {
    /// Builds the client, reading every certificate file; an unreadable or unparsable file
    /// is an error that names it.
    pub(crate) fn new(config: &HttpClientConfig) -> Result<HttpClient, Error> {
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(config.timeout))
            .connect_timeout(Duration::from_secs(config.timeout))
            .user_agent(concat!("ferry/", env!("CARGO_PKG_VERSION")));
        if !config.proxy_from_env {
            builder = builder.no_proxy();
        }

        let mut roots = Vec::new();
        for path in &config.ca_certificates {
            let pem = std::fs::read(path).map_err(|e| Error::CertificateFile {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                Error::CertificateFile {
                    path: path.clone(),
                    reason: format!("invalid PEM: {e}"),
                }
            })?;
            if certs.is_empty() {
                return Err(Error::CertificateFile {
                    path: path.clone(),
                    reason: "no certificate found in the file".into(),
                });
            }
            roots.extend(certs);
        }
        if !roots.is_empty() {
            builder = builder.tls_certs_merge(roots);
        }

        for pair in &config.certificates {
            let mut pem = read_pem_file(&pair.cert)?;
            pem.push(b'\n');
            pem.extend(read_pem_file(&pair.key)?);
            let identity =
                reqwest::Identity::from_pem(&pem).map_err(|e| Error::CertificateFile {
                    path: pair.cert.clone(),
                    reason: format!("invalid certificate or key {}: {e}", pair.key.display()),
                })?;
            builder = builder.identity(identity);
        }

        if config.skip_tls_verify {
            builder = builder.tls_danger_accept_invalid_certs(true);
        }

        let client = builder
            .build()
            .map_err(|e| Error::HttpClient(e.to_string()))?;
        let mut headers = Vec::new();
        for header in &config.headers {
            let name = HeaderName::from_bytes(header.key.as_bytes())
                .map_err(|_| Error::HttpClient(format!("invalid header name {:?}", header.key)))?;
            let mut value = HeaderValue::from_str(&header.value).map_err(|_| {
                Error::HttpClient(format!("invalid value for header {}", header.key))
            })?;
            value.set_sensitive(true);
            headers.push((header.url.clone(), name, value));
        }

        Ok(HttpClient {
            client,
            headers,
            retry_max: config.retry_max,
            retry_wait_min: Duration::from_secs(config.retry_wait_min),
            retry_wait_max: Duration::from_secs(config.retry_wait_max),
        })
    }

    fn with_headers(
        &self,
        url: &reqwest::Url,
        mut request: reqwest::RequestBuilder,
    ) -> reqwest::RequestBuilder {
        for (prefix, name, value) in &self.headers {
            if url.as_str().starts_with(prefix.as_str()) {
                request = request.header(name, value);
            }
        }
        request
    }

    /// Sends one GET and returns its status code.
    pub(crate) async fn get(&self, url: reqwest::Url) -> Result<reqwest::StatusCode, HttpFailure> {
        let request = self.with_headers(&url, self.client.get(url.clone()));
        let response = request
            .send()
            .await
            .map_err(|e| HttpFailure::Transport(error_chain(&e)))?;
        Ok(response.status())
    }

    /// POSTs a JSON body until a 2xx response or until the retries run out. `on_retry` runs
    /// before each retry with the failure that caused it.
    pub(crate) async fn post_json(
        &self,
        url: &reqwest::Url,
        body: String,
        mut on_retry: impl FnMut(u32, &HttpFailure),
    ) -> Result<(), HttpFailure> {
        let mut attempt = 0;
        loop {
            let request = self
                .with_headers(url, self.client.post(url.clone()))
                .header(CONTENT_TYPE, "application/json")
                .body(body.clone());
            let failure = match request.send().await {
                Ok(response) if response.status().is_success() => return Ok(()),
                Ok(response) => HttpFailure::Status(response.status()),
                Err(error) => HttpFailure::Transport(error_chain(&error)),
            };
            if attempt >= self.retry_max {
                return Err(failure);
            }
            attempt += 1;
            on_retry(attempt, &failure);
            tokio::time::sleep(self.backoff(attempt)).await;
        }
    }

    /// Returns the wait before retry number `attempt` (1-based): the minimum wait doubled per
    /// earlier retry, capped at the maximum.
    fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.retry_wait_min
            .saturating_mul(factor)
            .min(self.retry_wait_max)
    }
}

fn read_pem_file(path: &std::path::Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| Error::CertificateFile {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Formats an error with its sources, because reqwest's top-level message alone ("error
/// sending request") hides the cause an operator needs.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let config = HttpClientConfig {
            retry_wait_min: 2,
            retry_wait_max: 10,
            ..Default::default()
        };
        let client = HttpClient::new(&config).unwrap();
        assert_eq!(client.backoff(1), Duration::from_secs(2));
        assert_eq!(client.backoff(2), Duration::from_secs(4));
        assert_eq!(client.backoff(3), Duration::from_secs(8));
        assert_eq!(client.backoff(4), Duration::from_secs(10));
        assert_eq!(client.backoff(40), Duration::from_secs(10));
    }

    #[test]
    fn missing_ca_file_named() {
        let config = HttpClientConfig {
            ca_certificates: vec!["/nonexistent/ca.pem".into()],
            ..Default::default()
        };
        let err = HttpClient::new(&config).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    }

    #[test]
    fn garbage_ca_file_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate").unwrap();
        let config = HttpClientConfig {
            ca_certificates: vec![path.clone()],
            ..Default::default()
        };
        let err = HttpClient::new(&config).unwrap_err().to_string();
        assert!(err.contains(path.to_str().unwrap()), "{err}");
    }
}
