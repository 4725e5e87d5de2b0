//! Who is the client? The peer address, unless the peer is a trusted proxy: then
//! `X-Forwarded-For` is walked from the right, past trusted hops, to the first address that is
//! not ours. Entries left of that are client-supplied and never believed.

use std::net::IpAddr;

use http::{HeaderMap, HeaderValue};
use ipnet::IpNet;

#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

/// The resolved client and the chain to forward.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIp {
    pub ip: IpAddr,
    /// `ip` as a header value (for `x-real-ip`).
    pub ip_header: HeaderValue,
    /// Value for the backend's `x-forwarded-for`: the believed part of the incoming chain, from
    /// the resolved client onwards, followed by the peer address.
    pub forwarded_for: HeaderValue,
}

/// An address as a header value (an address always is a valid one).
pub fn ip_header(ip: IpAddr) -> HeaderValue {
    HeaderValue::from_str(&canonical(ip).to_string()).unwrap_or(HeaderValue::from_static("0.0.0.0"))
}

/// IPv4-mapped IPv6 (`::ffff:a.b.c.d`) is the IPv4 address it carries.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl TrustedProxies {
    pub fn new(nets: Vec<IpNet>) -> Self {
        TrustedProxies { nets }
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// `peer_header` is [`ip_header`] of `peer`, formatted once per connection.
    pub fn resolve(&self, peer: IpAddr, peer_header: &HeaderValue, headers: &HeaderMap) -> ClientIp {
        let peer = canonical(peer);
        if !self.contains(peer) {
            return ClientIp { ip: peer, ip_header: peer_header.clone(), forwarded_for: peer_header.clone() };
        }
        // Every X-Forwarded-For line, in order, is one comma-separated chain.
        let mut hops: Vec<IpAddr> = Vec::new();
        let mut client = peer;
        let mut believed = 0;
        let chain: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect();
        for entry in chain.iter().rev() {
            let Some(ip) = parse_hop(entry) else { break };
            hops.push(ip);
            believed += 1;
            client = ip;
            if !self.contains(ip) {
                break;
            }
        }
        let mut forwarded_for = String::with_capacity(16 * (believed + 1));
        for ip in hops.iter().rev() {
            forwarded_for.push_str(&ip.to_string());
            forwarded_for.push_str(", ");
        }
        forwarded_for.push_str(&peer.to_string());
        let forwarded_for = HeaderValue::from_str(&forwarded_for).unwrap_or_else(|_| peer_header.clone());
        ClientIp { ip: client, ip_header: ip_header(client), forwarded_for }
    }
}

/// One X-Forwarded-For entry: an address, optionally `[v6]:port` or `v4:port` as some proxies
/// write it.
fn parse_hop(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(sa) = s.parse::<std::net::SocketAddr>() {
        return Some(canonical(sa.ip()));
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use http::HeaderValue;

    fn trusted(list: &[&str]) -> TrustedProxies {
        TrustedProxies::new(list.iter().map(|s| s.parse().unwrap()).collect())
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn untrusted_peer_xff_is_ignored() {
        let t = trusted(&["10.0.0.0/8"]);
        let r = t.resolve(ip("203.0.113.9"), &ip_header(ip("203.0.113.9")), &xff(&["1.2.3.4"]));
        assert_eq!(r.ip, ip("203.0.113.9"));
        assert_eq!(r.forwarded_for, "203.0.113.9");
    }

    #[test]
    fn walks_right_to_left_past_trusted_hops() {
        let t = trusted(&["10.0.0.0/8"]);
        let r = t.resolve(ip("10.0.0.1"), &ip_header(ip("10.0.0.1")), &xff(&["6.6.6.6, 198.51.100.7, 10.0.0.2"]));
        assert_eq!(r.ip, ip("198.51.100.7"));
        // the spoofed left-most entry is not forwarded
        assert_eq!(r.forwarded_for, "198.51.100.7, 10.0.0.2, 10.0.0.1");
    }

    #[test]
    fn multiple_header_lines_form_one_chain() {
        let t = trusted(&["10.0.0.0/8"]);
        let r = t.resolve(ip("10.0.0.1"), &ip_header(ip("10.0.0.1")), &xff(&["5.5.5.5", "10.1.1.1"]));
        assert_eq!(r.ip, ip("5.5.5.5"));
    }

    #[test]
    fn all_trusted_means_left_most() {
        let t = trusted(&["10.0.0.0/8"]);
        let r = t.resolve(ip("10.0.0.1"), &ip_header(ip("10.0.0.1")), &xff(&["10.9.9.9"]));
        assert_eq!(r.ip, ip("10.9.9.9"));
    }

    #[test]
    fn garbage_stops_the_walk_at_the_last_trusted_hop() {
        let t = trusted(&["10.0.0.0/8"]);
        let r = t.resolve(ip("10.0.0.1"), &ip_header(ip("10.0.0.1")), &xff(&["1.1.1.1, not-an-ip, 10.0.0.5"]));
        assert_eq!(r.ip, ip("10.0.0.5"));
        assert_eq!(r.forwarded_for, "10.0.0.5, 10.0.0.1");
        let r = t.resolve(ip("10.0.0.1"), &ip_header(ip("10.0.0.1")), &xff(&[""]));
        assert_eq!(r.ip, ip("10.0.0.1"));
    }

    #[test]
    fn ipv4_mapped_peer_is_ipv4() {
        let t = trusted(&["10.0.0.0/8"]);
        let r = t.resolve(ip("::ffff:10.0.0.1"), &ip_header(ip("::ffff:10.0.0.1")), &xff(&["[2001:db8::1]:443"]));
        assert_eq!(r.ip, ip("2001:db8::1"));
        assert_eq!(r.forwarded_for, "2001:db8::1, 10.0.0.1");
    }
}
