//! The client address of a request, taken from forwarding headers only when the TCP peer is
//! a trusted reverse proxy.

use std::net::{IpAddr, SocketAddr};

use ferry_hooks::canonical_ip;
use http::HeaderMap;
use ipnet::IpNet;

/// The reverse proxies whose forwarding headers are believed.
#[derive(Clone, Debug, Default)]
pub(crate) struct TrustedProxies {
    nets: Vec<IpNet>,
}

impl TrustedProxies {
    /// Parses addresses and CIDRs; the error names the first invalid entry.
    pub(crate) fn parse(entries: &[String]) -> Result<TrustedProxies, String> {
        let mut nets = Vec::with_capacity(entries.len());
        for entry in entries {
            let net = ferry_users::parse_net(entry)
                .ok_or_else(|| format!("{entry:?} is not an IP address or CIDR"))?;
            nets.push(net);
        }
        Ok(TrustedProxies { nets })
    }

    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical_ip(ip);
        self.nets.iter().any(|net| net.contains(&ip))
    }

    /// Returns the client address of a request that arrived from `peer`.
    ///
    /// A peer that is not a trusted proxy is the client whatever its headers contain, so clients
    /// cannot choose the address that hooks and bans see. Behind trusted proxies the
    /// `X-Forwarded-For` entries are read from the right, because each proxy appends the
    /// address it received the request from: the first entry that is not itself a trusted
    /// proxy is the client. When every entry is a trusted proxy, the leftmost one is used.
    /// An entry that is not an IP address stops the walk, and the nearest trusted hop (the
    /// proxy that received the request from that client) is used instead of a guess.
    /// Without `X-Forwarded-For`, a valid `X-Real-IP` is used, and without either the peer.
    pub(crate) fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical_ip(peer);
        if !self.contains(peer) {
            return peer;
        }

        let forwarded: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .collect();
        if !forwarded.is_empty() {
            let mut nearest_trusted = peer;
            for entry in forwarded.iter().rev() {
                match parse_forwarded_ip(entry) {
                    Some(ip) if self.contains(ip) => nearest_trusted = ip,
                    Some(ip) => return ip,
                    None => return nearest_trusted,
                }
            }
            return nearest_trusted;
        }

        headers
            .get("x-real-ip")
            .and_then(|value| value.to_str().ok())
            .and_then(parse_forwarded_ip)
            .unwrap_or(peer)
    }
}

/// Parses one forwarded address: `192.0.2.1`, `2001:db8::1`, `[2001:db8::1]`, or either form
/// with a port, which some proxies append.
fn parse_forwarded_ip(text: &str) -> Option<IpAddr> {
    let text = text.trim().trim_matches('"');
    let ip = text
        .parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<SocketAddr>().ok().map(|addr| addr.ip()))
        .or_else(|| {
            text.strip_prefix('[')
                .and_then(|rest| rest.strip_suffix(']'))
                .and_then(|inner| inner.parse::<IpAddr>().ok())
        })?;
    Some(canonical_ip(ip))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn proxies(list: &[&str]) -> TrustedProxies {
        let entries: Vec<String> = list.iter().map(|s| s.to_string()).collect();
        TrustedProxies::parse(&entries).unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        map
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn untrusted_peer_ignores_headers() {
        let trusted = proxies(&["10.0.0.0/8"]);
        let h = headers(&[
            ("x-forwarded-for", "203.0.113.9"),
            ("x-real-ip", "203.0.113.9"),
        ]);
        assert_eq!(trusted.client_ip(ip("127.0.0.1"), &h), ip("127.0.0.1"));
    }

    #[test]
    fn rightmost_untrusted_entry_wins() {
        let trusted = proxies(&["127.0.0.1", "10.0.0.0/8"]);
        let h = headers(&[("x-forwarded-for", "198.51.100.7, 203.0.113.9, 10.1.2.3")]);
        assert_eq!(trusted.client_ip(ip("127.0.0.1"), &h), ip("203.0.113.9"));
    }

    #[test]
    fn repeated_headers_read_in_order() {
        let trusted = proxies(&["127.0.0.1", "10.0.0.0/8"]);
        let h = headers(&[
            ("x-forwarded-for", "198.51.100.7"),
            ("x-forwarded-for", "10.9.9.9"),
        ]);
        assert_eq!(trusted.client_ip(ip("127.0.0.1"), &h), ip("198.51.100.7"));
    }

    #[test]
    fn all_trusted_uses_leftmost() {
        let trusted = proxies(&["127.0.0.1", "10.0.0.0/8"]);
        let h = headers(&[("x-forwarded-for", "10.0.0.5, 10.0.0.6")]);
        assert_eq!(trusted.client_ip(ip("127.0.0.1"), &h), ip("10.0.0.5"));
    }

    #[test]
    fn garbage_entry_stops_at_trusted_hop() {
        let trusted = proxies(&["127.0.0.1", "10.0.0.0/8"]);
        let h = headers(&[("x-forwarded-for", "unknown, 10.0.0.6")]);
        assert_eq!(trusted.client_ip(ip("127.0.0.1"), &h), ip("10.0.0.6"));
    }

    #[test]
    fn ports_and_brackets_accepted() {
        let trusted = proxies(&["127.0.0.1"]);
        let h = headers(&[("x-forwarded-for", "[2001:db8::7]:4711")]);
        assert_eq!(trusted.client_ip(ip("127.0.0.1"), &h), ip("2001:db8::7"));
        let h = headers(&[("x-forwarded-for", "192.0.2.4:80")]);
        assert_eq!(trusted.client_ip(ip("127.0.0.1"), &h), ip("192.0.2.4"));
    }

    #[test]
    fn real_ip_without_forwarded_for() {
        let trusted = proxies(&["127.0.0.1"]);
        let h = headers(&[("x-real-ip", "192.0.2.44")]);
        assert_eq!(trusted.client_ip(ip("127.0.0.1"), &h), ip("192.0.2.44"));
        let h = headers(&[("x-real-ip", "nonsense")]);
        assert_eq!(trusted.client_ip(ip("127.0.0.1"), &h), ip("127.0.0.1"));
    }

    #[test]
    fn mapped_peer_is_canonical() {
        let trusted = proxies(&["127.0.0.1"]);
        let h = headers(&[("x-forwarded-for", "::ffff:192.0.2.8")]);
        assert_eq!(
            trusted.client_ip(ip("::ffff:127.0.0.1"), &h),
            ip("192.0.2.8")
        );
    }

    #[test]
    fn invalid_entry_rejected() {
        let err = TrustedProxies::parse(&["10.0.0.0/40".to_string()]).unwrap_err();
        assert!(err.contains("10.0.0.0/40"), "{err}");
    }
}
