//! Admission of new connections: bans from repeated failures, connection limits, and the
//! permit that keeps a connection counted while it is open.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// The `[defender]` section.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DefenderConfig {
    pub enabled: bool,
    /// Failures from one IP within `observation_time` that trigger a ban.
    pub threshold: u32,
    /// Seconds over which failures are counted.
    pub observation_time: u64,
    /// Seconds a ban lasts.
    pub ban_time: u64,
    /// Addresses or CIDRs that are never banned.
    pub safe_list: Vec<String>,
}

impl Default for DefenderConfig {
    fn default() -> Self {
        DefenderConfig {
            enabled: true,
            threshold: 15,
            observation_time: 1800,
            ban_time: 1800,
            safe_list: Vec::new(),
        }
    }
}

impl DefenderConfig {
    pub fn validate(&self, section: &str, errors: &mut Vec<String>) {
        if self.threshold == 0 {
            errors.push(format!("{section}.threshold = 0: must be at least 1"));
        }
        if self.observation_time == 0 {
            errors.push(format!(
                "{section}.observation_time = 0: must be at least 1 second"
            ));
        }
        if self.ban_time == 0 {
            errors.push(format!("{section}.ban_time = 0: must be at least 1 second"));
        }
        for (i, entry) in self.safe_list.iter().enumerate() {
            if parse_net(entry).is_none() {
                errors.push(format!(
                    "{section}.safe_list[{i}] = {entry:?}: expected an IP address or CIDR"
                ));
            }
        }
    }
}

/// Parses a CIDR, or a bare address as a single-host network.
pub fn parse_net(text: &str) -> Option<IpNet> {
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))
}

/// Connection limits; 0 means unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnectionLimits {
    pub max_total: usize,
    pub max_per_host: usize,
}

#[derive(Default)]
struct Record {
    failures: Vec<Instant>,
    banned_until: Option<Instant>,
}

/// Counts failed logins and connections that never tried, per client IP, and bans an IP
/// over the threshold for every protocol.
pub(crate) struct Defender {
    config: DefenderConfig,
    safe_list: Vec<IpNet>,
    records: Mutex<HashMap<IpAddr, Record>>,
}

/// The defender keeps at most this many addresses; beyond it, addresses without a ban are
/// forgotten first, so a scan from many addresses cannot grow memory without bound.
const MAX_TRACKED_ADDRESSES: usize = 100_000;

impl Defender {
    pub(crate) fn new(config: DefenderConfig) -> Defender {
        let safe_list = config
            .safe_list
            .iter()
            .filter_map(|s| parse_net(s))
            .collect();
        Defender {
            config,
            safe_list,
            records: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Record>> {
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Returns the remaining ban time when `ip` is banned.
    pub(crate) fn banned(&self, ip: IpAddr) -> Option<Duration> {
        if !self.config.enabled {
            return None;
        }
        let now = Instant::now();
        let mut records = self.lock();
        let record = records.get_mut(&ip)?;
        match record.banned_until {
            Some(until) if until > now => Some(until - now),
            Some(_) => {
                record.banned_until = None;
                record.failures.clear();
                tracing::info!(%ip, "ban expired");
                None
            }
            None => None,
        }
    }

    /// Counts one failure for `ip`; bans it when the count within the observation time
    /// reaches the threshold.
    pub(crate) fn record_failure(&self, ip: IpAddr) {
        if !self.config.enabled || self.safe_list.iter().any(|net| net.contains(&ip)) {
            return;
        }
        let now = Instant::now();
        let window = Duration::from_secs(self.config.observation_time);
        let mut records = self.lock();
        if records.len() >= MAX_TRACKED_ADDRESSES && !records.contains_key(&ip) {
            records.retain(|_, r| r.banned_until.is_some_and(|until| until > now));
        }
        let record = records.entry(ip).or_default();
        if record.banned_until.is_some_and(|until| until > now) {
            return;
        }
        record
            .failures
            .retain(|at| now.duration_since(*at) < window);
        record.failures.push(now);
        if record.failures.len() >= self.config.threshold as usize {
            record.banned_until = Some(now + Duration::from_secs(self.config.ban_time));
            record.failures.clear();
            tracing::warn!(%ip, ban_secs = self.config.ban_time, threshold = self.config.threshold, "client banned after repeated login failures");
        }
    }
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_host: HashMap<IpAddr, usize>,
}

/// Open connections, counted for the limits.
#[derive(Clone, Default)]
pub(crate) struct ConnectionCounter {
    counts: Arc<Mutex<Counts>>,
}

impl ConnectionCounter {
    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a new connection from `ip` unless a limit is reached.
    pub(crate) fn try_acquire(
        &self,
        ip: IpAddr,
        limits: ConnectionLimits,
    ) -> Result<ConnectionPermit, &'static str> {
        let mut counts = self.lock();
        if limits.max_total > 0 && counts.total >= limits.max_total {
            return Err("too many connections in total");
        }
        let host = counts.per_host.get(&ip).copied().unwrap_or(0);
        if limits.max_per_host > 0 && host >= limits.max_per_host {
            return Err("too many connections from this address");
        }
        counts.total += 1;
        *counts.per_host.entry(ip).or_insert(0) += 1;
        Ok(ConnectionPermit {
            counter: Some(self.clone()),
            ip,
        })
    }

    fn release(&self, ip: IpAddr) {
        let mut counts = self.lock();
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_host.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.per_host.remove(&ip);
            }
        }
    }
}

/// Keeps a connection counted against the connection limits until dropped.
#[must_use = "the connection counts as open only while the permit is kept"]
pub struct ConnectionPermit {
    counter: Option<ConnectionCounter>,
    ip: IpAddr,
}

impl ConnectionPermit {
    /// A permit that counts nothing, for callers outside the limits (tests, internal use).
    pub fn unlimited(ip: IpAddr) -> ConnectionPermit {
        ConnectionPermit { counter: None, ip }
    }
}

impl std::fmt::Debug for ConnectionPermit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionPermit")
            .field("ip", &self.ip)
            .finish()
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        if let Some(counter) = self.counter.take() {
            counter.release(self.ip);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[test]
    fn threshold_bans() {
        let defender = Defender::new(DefenderConfig {
            threshold: 3,
            ..Default::default()
        });
        defender.record_failure(ip(1));
        defender.record_failure(ip(1));
        assert!(defender.banned(ip(1)).is_none());
        defender.record_failure(ip(1));
        assert!(defender.banned(ip(1)).is_some());
        assert!(defender.banned(ip(2)).is_none());
    }

    #[test]
    fn safe_list_never_banned() {
        let config = DefenderConfig {
            threshold: 1,
            safe_list: vec!["192.0.2.0/24".into()],
            ..Default::default()
        };
        let defender = Defender::new(config);
        defender.record_failure(ip(1));
        assert!(defender.banned(ip(1)).is_none());
    }

    #[test]
    fn ban_expires() {
        let config = DefenderConfig {
            threshold: 1,
            ban_time: 1,
            ..Default::default()
        };
        let defender = Defender::new(config);
        defender.record_failure(ip(1));
        assert!(defender.banned(ip(1)).is_some());
        std::thread::sleep(Duration::from_millis(1100));
        assert!(defender.banned(ip(1)).is_none());
    }

    #[test]
    fn disabled_defender_ignores_failures() {
        let defender = Defender::new(DefenderConfig {
            enabled: false,
            threshold: 1,
            ..Default::default()
        });
        defender.record_failure(ip(1));
        assert!(defender.banned(ip(1)).is_none());
    }

    #[test]
    fn limits_count_permits() {
        let counter = ConnectionCounter::default();
        let limits = ConnectionLimits {
            max_total: 3,
            max_per_host: 2,
        };
        let a = counter.try_acquire(ip(1), limits).unwrap();
        let _b = counter.try_acquire(ip(1), limits).unwrap();
        assert!(counter.try_acquire(ip(1), limits).is_err());
        let _c = counter.try_acquire(ip(2), limits).unwrap();
        assert!(counter.try_acquire(ip(3), limits).is_err());
        drop(a);
        assert!(counter.try_acquire(ip(1), limits).is_ok());
    }

    #[test]
    fn bad_safe_list_entry_reported() {
        let config = DefenderConfig {
            safe_list: vec!["10.0.0.0/40".into()],
            ..Default::default()
        };
        let mut errors = Vec::new();
        config.validate("defender", &mut errors);
        assert_eq!(errors.len(), 1);
        assert!(errors[0].contains("defender.safe_list[0]"), "{errors:?}");
    }
}
