//! `payguard::client_ip::TrustedProxies::resolve` over arbitrary trusted networks, peers and
//! `X-Forwarded-For` lines (values `HeaderValue` rejects are skipped, as hyper would never
//! produce them).
//!
//! Input: the text format of `common/mod.rs`. The first line is
//! `<peer> <trusted net> <trusted net> ...` (a bare address is a /32 or /128, so
//! `::ffff:10.0.0.1` style peers are expressible); the header lines are the request's
//! headers (`X-Forwarded-For` lines, repeated or not, and look-alikes that must be ignored).
//! A peer that does not parse falls back to a fixed address derived from the input.
//!
//! Besides "no panic", checks the invariants the rest of the proxy relies on:
//! - an untrusted peer is the client, whatever the headers say;
//! - the resolved address is canonical (no IPv4-mapped IPv6: deny lists compare canonical
//!   addresses);
//! - the forwarded chain starts with the client, ends with the peer, and is all addresses;
//!   every hop skipped between them is trusted;
//! - the `x-real-ip` value is the resolved client.
use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use payguard::client_ip::{canonical, ip_header, TrustedProxies};

fn net(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>().ok().or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

pub fn run(data: &[u8]) {
    let text = super::parse(data);
    let mut words = text.first_line.split_ascii_whitespace();
    let peer = words.next().and_then(|w| w.parse::<IpAddr>().ok()).unwrap_or(IpAddr::V4(Ipv4Addr::new(
        10,
        0,
        0,
        data.len() as u8,
    )));
    let nets: Vec<IpNet> = words.filter_map(net).collect();
    let headers = super::header_map(&text.headers);

    let trusted = TrustedProxies::new(nets);
    // As the server does: the peer's header value is formatted once per connection.
    let got = trusted.resolve(peer, &ip_header(peer), &headers);
    let peer_c = canonical(peer);
    let forwarded_for = got.forwarded_for.to_str().expect("x-forwarded-for value is visible ASCII");
    let client_header = got.ip_header.to_str().expect("x-real-ip value is visible ASCII");

    assert_eq!(canonical(got.ip), got.ip, "resolved client address {} is not canonical", got.ip);
    if !trusted.contains(peer) {
        assert_eq!(got.ip, peer_c, "untrusted peer but the client was taken from the headers");
        assert_eq!(forwarded_for, peer_c.to_string());
    }
    assert_eq!(client_header, got.ip.to_string(), "x-real-ip value is not the resolved client");
    let chain: Vec<&str> = forwarded_for.split(", ").collect();
    assert_eq!(chain.last().copied(), Some(peer_c.to_string().as_str()), "chain does not end with the peer");
    assert_eq!(chain.first().copied(), Some(got.ip.to_string().as_str()), "chain does not start with the client");
    for hop in &chain {
        assert!(hop.parse::<IpAddr>().is_ok(), "forwarded chain entry {hop:?} is not an address");
    }
    // Every hop to the right of the client is a trusted proxy (that is why it was skipped).
    for hop in chain.iter().skip(1).take(chain.len().saturating_sub(2)) {
        let ip: IpAddr = hop.parse().unwrap_or(peer_c);
        assert!(trusted.contains(ip), "skipped untrusted hop {hop} to reach client {}", got.ip);
    }
}
