//! Trusted reverse proxies (`proxy.trusted`): behind one, every request
//! comes from the proxy's address, so the server reads who the client is,
//! and whether it spoke HTTPS, from the headers the proxy adds — but only
//! when the request really comes from a listed proxy, since anyone else
//! can send those headers too.
//!
//! The client is the right-most address of `X-Forwarded-For` that is not
//! itself a trusted proxy (the left-most ones are whatever the client
//! claimed); `X-Forwarded-Proto: https` marks the request as secure.

use std::net::IpAddr;

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The addresses whose forwarding headers are believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    networks: Vec<IpNet>,
}

impl TrustedProxies {
    pub fn new(networks: Vec<IpNet>) -> Self {
        Self { networks }
    }

    pub fn is_empty(&self) -> bool {
        self.networks.is_empty()
    }

    pub fn is_trusted(&self, address: IpAddr) -> bool {
        let address = canonical(address);
        self.networks
            .iter()
            .any(|network| network.contains(&address))
    }

    /// Who sent the request: `peer`, or, when `peer` is a trusted proxy,
    /// the nearest address before it in `X-Forwarded-For` that is not one.
    pub fn client_address(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.is_trusted(peer) {
            return peer;
        }
        let mut client = peer;
        let hops = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .collect::<Vec<_>>();
        for hop in hops.into_iter().rev() {
            match parse_hop(hop) {
                Some(address) => {
                    client = canonical(address);
                    if !self.is_trusted(client) {
                        break;
                    }
                }
                // Garbage in the chain: the last good address stands.
                None => break,
            }
        }
        client
    }

    /// Whether a trusted proxy says the client spoke HTTPS to it: the last
    /// value, the one the nearest proxy added (a client can send its own
    /// before it).
    pub fn forwarded_https(&self, peer: IpAddr, headers: &HeaderMap) -> bool {
        self.is_trusted(peer)
            && headers
                .get_all("x-forwarded-proto")
                .iter()
                .next_back()
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.rsplit(',').next())
                .is_some_and(|scheme| scheme.trim().eq_ignore_ascii_case("https"))
    }
}

/// One `X-Forwarded-For` entry: an address, or one with a port
/// (`1.2.3.4:5678`, `[2001:db8::1]:80`), as some proxies write them.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| {
            hop.parse::<std::net::SocketAddr>()
                .ok()
                .map(|address| address.ip())
        })
        .or_else(|| {
            hop.trim_start_matches('[')
                .trim_end_matches(']')
                .parse()
                .ok()
        })
}

/// An IPv4 address in IPv6 form (`::ffff:10.0.0.1`) as IPv4, so that one
/// list matches both.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn proxies() -> TrustedProxies {
        TrustedProxies::new(vec![
            "10.0.0.0/8".parse().unwrap(),
            "::1/128".parse().unwrap(),
        ])
    }

    fn headers(forwarded_for: &str, proto: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_str(forwarded_for).unwrap(),
        );
        headers.insert("x-forwarded-proto", HeaderValue::from_str(proto).unwrap());
        headers
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn headers_count_only_from_a_trusted_proxy() {
        let proxies = proxies();
        let spoofed = headers("1.2.3.4", "https");
        assert_eq!(
            proxies.client_address(ip("203.0.113.9"), &spoofed),
            ip("203.0.113.9")
        );
        assert!(!proxies.forwarded_https(ip("203.0.113.9"), &spoofed));
        assert_eq!(
            proxies.client_address(ip("10.1.1.1"), &spoofed),
            ip("1.2.3.4")
        );
        assert!(proxies.forwarded_https(ip("10.1.1.1"), &spoofed));
        assert!(proxies.forwarded_https(ip("::1"), &spoofed));
    }

    #[test]
    fn the_client_is_the_nearest_untrusted_hop() {
        let proxies = proxies();
        // The client claims 6.6.6.6; the outer proxy saw 198.51.100.7.
        let chain = headers("6.6.6.6, 198.51.100.7, 10.0.0.2", "http");
        assert_eq!(
            proxies.client_address(ip("10.0.0.3"), &chain),
            ip("198.51.100.7")
        );
        assert!(!proxies.forwarded_https(ip("10.0.0.3"), &chain));
        let garbage = headers("6.6.6.6, not-an-address, 10.0.0.2", "https");
        assert_eq!(
            proxies.client_address(ip("10.0.0.3"), &garbage),
            ip("10.0.0.2")
        );
        assert_eq!(
            proxies.client_address(ip("::ffff:10.0.0.3"), &chain),
            ip("198.51.100.7")
        );
        let ports = headers("[2001:db8::9]:443, 198.51.100.8:5678", "http");
        assert_eq!(
            proxies.client_address(ip("10.0.0.3"), &ports),
            ip("198.51.100.8")
        );
        let claimed = headers("198.51.100.8", "https, http");
        assert!(
            !proxies.forwarded_https(ip("10.0.0.3"), &claimed),
            "the proxy's own value counts"
        );
        let empty = HeaderMap::new();
        assert_eq!(
            proxies.client_address(ip("10.0.0.3"), &empty),
            ip("10.0.0.3")
        );
        assert!(TrustedProxies::default().client_address(ip("10.0.0.3"), &chain) == ip("10.0.0.3"));
    }
}
