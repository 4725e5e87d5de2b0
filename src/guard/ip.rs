//! IP allow/deny on the resolved client address. Deny beats allow; when an allow list is
//! present, only its addresses pass. IPv4-mapped IPv6 is matched as IPv4 (by [`IpMatcher`]).

use std::net::IpAddr;

use super::layer::Check;
use super::Reject;
use crate::exchange::Exchange;
use crate::rules::IpMatcher;

/// The pure decision.
pub fn check(ip: IpAddr, deny: &IpMatcher, allow: Option<&IpMatcher>) -> Result<(), Reject> {
    if deny.contains(ip) {
        return Err(Reject::IpDenied);
    }
    match allow {
        Some(a) if !a.contains(ip) => Err(Reject::IpDenied),
        _ => Ok(()),
    }
}

#[derive(Clone, Copy, Default)]
pub struct IpGuard;

impl Check for IpGuard {
    const NAME: &'static str = "ip";

    fn check(&self, ex: &mut Exchange) -> Result<(), Reject> {
        let ip = ex.client.ip;
        match &ex.route {
            Some(r) => check(ip, &r.ip_deny, r.ip_allow.as_ref()),
            None => {
                let d = ex.active.rules.defaults();
                check(ip, &d.ip_deny, d.ip_allow.as_ref())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn m(list: &[&str]) -> IpMatcher {
        IpMatcher::new(list.iter().map(|s| s.parse::<ipnet::IpNet>().unwrap()))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn deny_beats_allow() {
        let allow = m(&["10.0.0.0/8"]);
        let deny = m(&["10.1.0.0/16"]);
        assert!(check(ip("10.2.0.1"), &deny, Some(&allow)).is_ok());
        assert_eq!(check(ip("10.1.0.1"), &deny, Some(&allow)), Err(Reject::IpDenied));
        assert_eq!(check(ip("192.0.2.1"), &deny, Some(&allow)), Err(Reject::IpDenied));
        assert!(check(ip("192.0.2.1"), &deny, None).is_ok());
    }

    #[test]
    fn ipv4_mapped_ipv6_is_matched_as_ipv4() {
        let deny = m(&["203.0.113.0/24"]);
        assert_eq!(check(ip("::ffff:203.0.113.9"), &deny, None), Err(Reject::IpDenied));
        let allow = m(&["2001:db8::/32"]);
        assert!(check(ip("2001:db8::1"), &IpMatcher::empty(), Some(&allow)).is_ok());
        assert!(check(ip("2001:db9::1"), &IpMatcher::empty(), Some(&allow)).is_err());
    }

    #[test]
    fn empty_allow_list_allows_nobody() {
        assert!(check(ip("192.0.2.1"), &IpMatcher::empty(), Some(&IpMatcher::empty())).is_err());
    }
}
