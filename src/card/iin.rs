//! Issuer prefixes of the card schemes RULES.md names (Visa, Mastercard, American Express,
//! Discover, JCB, UnionPay, Diners Club, Maestro), with the lengths each issues. This is the one
//! table of them in payguard.
//!
//! Sources: the IIN table of Wikipedia's "Payment card number" article (section "Issuer
//! identification number (IIN)"), cross-checked with braintree/credit-card-type
//! (`src/lib/card-types.ts`, MIT). Where the two differ, the wider set of lengths is kept (a PAN
//! missed is worse than a digit string looked at twice: it must still pass the Luhn check) and
//! the narrower prefixes (Maestro's published ranges, not every number starting with 6).

/// A card scheme, as named in audit lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Visa,
    Mastercard,
    Amex,
    Discover,
    Jcb,
    UnionPay,
    Diners,
    Maestro,
}

impl Scheme {
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Visa => "visa",
            Scheme::Mastercard => "mastercard",
            Scheme::Amex => "amex",
            Scheme::Discover => "discover",
            Scheme::Jcb => "jcb",
            Scheme::UnionPay => "unionpay",
            Scheme::Diners => "diners",
            Scheme::Maestro => "maestro",
        }
    }
}

/// Lengths `lo..=hi` as a bit set (bit n: n digits).
const fn lengths(lo: u32, hi: u32) -> u32 {
    let mut set = 0;
    let mut n = lo;
    while n <= hi {
        set |= 1 << n;
        n += 1;
    }
    set
}

/// (first six digits from, to, scheme, lengths). More specific ranges come first: the
/// Discover co-brand inside UnionPay's 62.
const TABLE: &[(u32, u32, Scheme, u32)] = &[
    (622_126, 622_925, Scheme::Discover, lengths(16, 19)),
    (601_100, 601_199, Scheme::Discover, lengths(16, 19)),
    (644_000, 659_999, Scheme::Discover, lengths(16, 19)),
    (620_000, 629_999, Scheme::UnionPay, lengths(14, 19)),
    (810_000, 817_199, Scheme::UnionPay, lengths(14, 19)),
    (340_000, 349_999, Scheme::Amex, lengths(15, 15)),
    (370_000, 379_999, Scheme::Amex, lengths(15, 15)),
    (352_800, 358_999, Scheme::Jcb, lengths(16, 19)),
    (300_000, 305_999, Scheme::Diners, lengths(14, 19)),
    (309_500, 309_599, Scheme::Diners, lengths(14, 19)),
    (360_000, 369_999, Scheme::Diners, lengths(14, 19)),
    (380_000, 399_999, Scheme::Diners, lengths(14, 19)),
    (222_100, 272_099, Scheme::Mastercard, lengths(16, 16)),
    (510_000, 559_999, Scheme::Mastercard, lengths(16, 16)),
    (501_800, 501_899, Scheme::Maestro, lengths(12, 19)),
    (502_000, 502_099, Scheme::Maestro, lengths(12, 19)),
    (503_800, 503_899, Scheme::Maestro, lengths(12, 19)),
    (589_300, 589_399, Scheme::Maestro, lengths(12, 19)),
    (630_400, 630_499, Scheme::Maestro, lengths(12, 19)),
    (675_900, 675_999, Scheme::Maestro, lengths(12, 19)),
    (676_100, 676_399, Scheme::Maestro, lengths(12, 19)),
    // Visa issues 13, 16 and 19 digits; 18 is in braintree's list.
    (400_000, 499_999, Scheme::Visa, (1 << 13) | (1 << 16) | (1 << 18) | (1 << 19)),
];

/// The scheme that issues `len`-digit numbers starting with `first6`, if any.
pub fn scheme(first6: u32, len: usize) -> Option<Scheme> {
    let &(_, _, scheme, lens) = TABLE.iter().find(|&&(lo, hi, _, _)| (lo..=hi).contains(&first6))?;
    (len < 32 && lens & (1 << len) != 0).then_some(scheme)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_by_prefix_and_length() {
        assert_eq!(scheme(411_111, 16), Some(Scheme::Visa));
        assert_eq!(scheme(422_222, 13), Some(Scheme::Visa));
        assert_eq!(scheme(411_111, 15), None);
        assert_eq!(scheme(555_555, 16), Some(Scheme::Mastercard));
        assert_eq!(scheme(222_300, 16), Some(Scheme::Mastercard));
        assert_eq!(scheme(272_100, 16), None);
        assert_eq!(scheme(378_282, 15), Some(Scheme::Amex));
        assert_eq!(scheme(378_282, 16), None);
        assert_eq!(scheme(601_111, 16), Some(Scheme::Discover));
        assert_eq!(scheme(622_126, 16), Some(Scheme::Discover));
        assert_eq!(scheme(620_000, 16), Some(Scheme::UnionPay));
        assert_eq!(scheme(353_011, 16), Some(Scheme::Jcb));
        assert_eq!(scheme(305_693, 14), Some(Scheme::Diners));
        assert_eq!(scheme(675_964, 16), Some(Scheme::Maestro));
        assert_eq!(scheme(100_000, 16), None);
        assert_eq!(scheme(700_000, 16), None);
    }
}
