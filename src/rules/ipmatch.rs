//! A set of CIDRs compiled into sorted, merged, non-overlapping address ranges: a lookup is one
//! binary search with no allocation.
//!
//! IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are the IPv4 address: a peer reaching a
//! dual-stack socket as `::ffff:203.0.113.7` matches `203.0.113.0/24`, and an IPv6 CIDR covering
//! part of `::ffff:0:0/96` matches the corresponding plain IPv4 addresses too.

use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const MAPPED_PREFIX: u128 = 0xffff_u128 << 32;
const MAPPED_LAST: u128 = MAPPED_PREFIX | 0xffff_ffff;

/// Compiled CIDR set. Cheap to clone is not a goal; share it through the `Arc<Route>`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpMatcher {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

impl IpMatcher {
    /// A matcher that matches nothing.
    pub fn empty() -> Self {
        IpMatcher::default()
    }

    /// Builds from CIDRs (v4 and v6, in any order, overlapping or not).
    pub fn new<I: IntoIterator<Item = IpNet>>(nets: I) -> Self {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for net in nets {
            match net {
                IpNet::V4(n) => v4.push((u32::from(n.network()), u32::from(n.broadcast()))),
                IpNet::V6(n) => {
                    let (lo, hi) = (u128::from(n.network()), u128::from(n.broadcast()));
                    v6.push((lo, hi));
                    // The part that overlaps ::ffff:0:0/96 also matches plain IPv4.
                    let (mlo, mhi) = (lo.max(MAPPED_PREFIX), hi.min(MAPPED_LAST));
                    if mlo <= mhi {
                        // Both are within MAPPED_PREFIX..=MAPPED_LAST, so the low 32 bits are exact.
                        v4.push(((mlo & 0xffff_ffff) as u32, (mhi & 0xffff_ffff) as u32));
                    }
                }
            }
        }
        IpMatcher { v4: merge(v4), v6: merge(v6) }
    }

    /// True when no address matches.
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// Whether `ip` is in the set. IPv4-mapped IPv6 is looked up as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(v4) => self.contains_v4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => self.contains_v4(v4),
                None => self.contains_v6(v6),
            },
        }
    }

    fn contains_v4(&self, ip: Ipv4Addr) -> bool {
        find(&self.v4, u32::from(ip))
    }

    fn contains_v6(&self, ip: Ipv6Addr) -> bool {
        find(&self.v6, u128::from(ip))
    }

    /// Number of merged ranges (v4 + v6); for tests and metrics.
    pub fn range_count(&self) -> usize {
        self.v4.len() + self.v6.len()
    }
}

fn find<T: Ord + Copy>(ranges: &[(T, T)], x: T) -> bool {
    // Ranges are sorted and disjoint: the candidate is the last one starting at or before x.
    let i = ranges.partition_point(|&(lo, _)| lo <= x);
    i > 0 && ranges.get(i - 1).is_some_and(|&(_, hi)| x <= hi)
}

/// Sorts and merges overlapping or adjacent inclusive ranges.
fn merge<T>(mut ranges: Vec<(T, T)>) -> Vec<(T, T)>
where
    T: Ord + Copy + Adjacent,
{
    ranges.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for (lo, hi) in ranges {
        match out.last_mut() {
            Some(last) if lo <= last.1 || last.1.next_is(lo) => {
                if hi > last.1 {
                    last.1 = hi;
                }
            }
            _ => out.push((lo, hi)),
        }
    }
    out.shrink_to_fit();
    out
}

trait Adjacent {
    fn next_is(self, other: Self) -> bool;
}

impl Adjacent for u32 {
    fn next_is(self, other: Self) -> bool {
        self.checked_add(1) == Some(other)
    }
}

impl Adjacent for u128 {
    fn next_is(self, other: Self) -> bool {
        self.checked_add(1) == Some(other)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use ipnet::{Ipv4Net, Ipv6Net};
    use proptest::prelude::*;

    fn m(cidrs: &[&str]) -> IpMatcher {
        IpMatcher::new(cidrs.iter().map(|c| c.parse::<IpNet>().unwrap()))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn empty_matches_nothing() {
        let e = IpMatcher::empty();
        assert!(e.is_empty());
        assert!(!e.contains(ip("0.0.0.0")));
        assert!(!e.contains(ip("::")));
        assert!(!m(&["10.0.0.0/8"]).is_empty());
    }

    #[test]
    fn v4_and_v6_bounds() {
        let s = m(&["203.0.113.0/24", "2001:db8::/32"]);
        assert!(s.contains(ip("203.0.113.0")));
        assert!(s.contains(ip("203.0.113.255")));
        assert!(!s.contains(ip("203.0.112.255")));
        assert!(!s.contains(ip("203.0.114.0")));
        assert!(s.contains(ip("2001:db8::")));
        assert!(s.contains(ip("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff")));
        assert!(!s.contains(ip("2001:db9::")));
        assert!(!s.contains(ip("2001:db7:ffff:ffff:ffff:ffff:ffff:ffff")));
    }

    #[test]
    fn ipv4_mapped_ipv6_is_ipv4() {
        let s = m(&["203.0.113.0/24"]);
        assert!(s.contains(ip("::ffff:203.0.113.7")));
        assert!(!s.contains(ip("::ffff:203.0.114.7")));
        // A v6 CIDR over the mapped range matches plain v4 as well.
        let s = m(&["::ffff:10.0.0.0/104"]);
        assert!(s.contains(ip("10.1.2.3")));
        assert!(s.contains(ip("::ffff:10.1.2.3")));
        assert!(!s.contains(ip("11.0.0.0")));
    }

    #[test]
    fn full_ranges_and_merging() {
        let s = m(&["0.0.0.0/0", "::/0"]);
        assert!(s.contains(ip("255.255.255.255")));
        assert!(s.contains(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")));
        let s = m(&["10.0.0.0/25", "10.0.0.128/25", "10.0.0.64/26", "10.0.1.0/24"]);
        assert_eq!(s.v4, vec![(0x0a00_0000, 0x0a00_01ff)]);
        let s = m(&["1.1.1.1/32", "1.1.1.3/32"]);
        assert_eq!(s.range_count(), 2);
        assert!(!s.contains(ip("1.1.1.2")));
    }

    fn arb_net() -> impl Strategy<Value = IpNet> {
        prop_oneof![
            (any::<u32>(), 0u8..=32).prop_map(|(a, p)| IpNet::V4(Ipv4Net::new(Ipv4Addr::from(a), p).unwrap().trunc())),
            // Bias v6 towards the mapped range and a small neighbourhood so hits happen.
            (any::<u32>(), 96u8..=128).prop_map(|(a, p)| IpNet::V6(
                Ipv6Net::new(Ipv6Addr::from(MAPPED_PREFIX | u128::from(a)), p).unwrap().trunc()
            )),
            (any::<u128>(), 0u8..=128)
                .prop_map(|(a, p)| IpNet::V6(Ipv6Net::new(Ipv6Addr::from(a), p).unwrap().trunc())),
        ]
    }

    fn arb_ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<u32>().prop_map(|a| IpAddr::V4(Ipv4Addr::from(a))),
            any::<u32>().prop_map(|a| IpAddr::V6(Ipv6Addr::from(MAPPED_PREFIX | u128::from(a)))),
            any::<u128>().prop_map(|a| IpAddr::V6(Ipv6Addr::from(a))),
        ]
    }

    /// The model: any CIDR contains the address or its v4/v4-mapped twin.
    fn naive(nets: &[IpNet], ip: IpAddr) -> bool {
        let twin = match ip {
            IpAddr::V4(v4) => Some(IpAddr::V6(v4.to_ipv6_mapped())),
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
        };
        nets.iter().any(|n| n.contains(&ip) || twin.is_some_and(|t| n.contains(&t)))
    }

    proptest! {
        #[test]
        fn agrees_with_naive_model(nets in proptest::collection::vec(arb_net(), 0..12),
                                   probes in proptest::collection::vec(arb_ip(), 1..32)) {
            let matcher = IpMatcher::new(nets.iter().copied());
            for p in probes {
                prop_assert_eq!(matcher.contains(p), naive(&nets, p), "ip {}", p);
            }
            // Boundary addresses of every net are exact hits, and just outside follows the model.
            for n in &nets {
                for edge in [n.network(), n.broadcast()] {
                    prop_assert!(matcher.contains(edge));
                }
                if let (IpAddr::V4(lo), IpAddr::V4(hi)) = (n.network(), n.broadcast()) {
                    if let Some(below) = u32::from(lo).checked_sub(1) {
                        let b = IpAddr::V4(Ipv4Addr::from(below));
                        prop_assert_eq!(matcher.contains(b), naive(&nets, b));
                    }
                    if let Some(above) = u32::from(hi).checked_add(1) {
                        let a = IpAddr::V4(Ipv4Addr::from(above));
                        prop_assert_eq!(matcher.contains(a), naive(&nets, a));
                    }
                }
            }
        }

        #[test]
        fn merged_ranges_are_sorted_and_disjoint(nets in proptest::collection::vec(arb_net(), 0..24)) {
            let matcher = IpMatcher::new(nets);
            for w in matcher.v4.windows(2) {
                prop_assert!(w[0].1 < w[1].0 && !w[0].1.next_is(w[1].0));
            }
            for w in matcher.v6.windows(2) {
                prop_assert!(w[0].1 < w[1].0 && !w[0].1.next_is(w[1].0));
            }
        }
    }
}
