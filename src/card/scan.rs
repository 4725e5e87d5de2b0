//! Card numbers (PANs) in a stream of bytes, in one pass: outside a run of digits eight bytes
//! are tested at a time; a run too short for a card number is passed over once counted; inside
//! a longer one, a byte is a table lookup (its first 13 digits and their separators were read
//! once already, to count them). The state between two chunks is a handful of digit groups, so
//! a number split across chunks is found and memory stays bounded however long the stream.
//!
//! A PAN (RULES.md, "Card data") is 13–19 digits that pass the Luhn check and carry a scheme's
//! issuer prefix for their length, written either as one run of digits that is not part of a
//! longer one, or in groups of 3–6 digits joined by single spaces or dashes
//! (`4111 1111 1111 1111`, `3782-822463-10005`). Among several groups (a PAN followed by a year,
//! say) the longest qualifying window of whole groups from the left wins.

use super::iin::{self, Scheme};

/// Groups held while a run is open. A PAN has at most five; more are evaluated from the front.
const MAX_GROUPS: usize = 8;
/// Digits kept per group; a longer group is longer than any PAN.
const GROUP_DIGITS: usize = 19;
const TOO_LONG: u8 = GROUP_DIGITS as u8 + 1;
/// Digits in the shortest card number.
const MIN_DIGITS: usize = 13;

const OTHER: u8 = 0;
const DIGIT: u8 = 1;
const SEPARATOR: u8 = 2;

static CLASS: [u8; 256] = {
    let mut t = [OTHER; 256];
    let mut b = b'0';
    while b <= b'9' {
        t[b as usize] = DIGIT;
        b += 1;
    }
    t[b' ' as usize] = SEPARATOR;
    t[b'-' as usize] = SEPARATOR;
    t
};

/// The high bit of each byte of `w` (little-endian) that may be an ASCII digit ("has a byte
/// less than n", Bit Twiddling Hacks, applied to `w ^ '0'`: a digit becomes a byte below 10).
/// Zero exactly when no byte is a digit, and its lowest bit marks the first digit exactly (a
/// byte is marked wrongly only above a digit, by the borrow out of it).
#[inline]
fn digit_bits(w: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let x = w ^ (ONES * u64::from(b'0'));
    x.wrapping_sub(ONES * 10) & !x & HIGH
}

/// Where the run of digits (joined by single separators) that starts at `start` ends, when it
/// ends within `buf` and holds fewer digits than any card number.
#[inline]
fn short_run(buf: &[u8], start: usize) -> Option<usize> {
    let (mut digits, mut separated) = (0, false);
    for (j, &b) in buf.iter().enumerate().skip(start) {
        match CLASS[usize::from(b)] {
            DIGIT => {
                digits += 1;
                if digits == MIN_DIGITS {
                    return None;
                }
                separated = false;
            }
            SEPARATOR if !separated => separated = true,
            _ => return Some(j),
        }
    }
    None
}

/// One card number found: where (offsets into the stream, `end` exclusive, separators
/// included), and the only digits of it payguard ever shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    pub start: u64,
    pub end: u64,
    /// Digits in the number.
    pub len: u8,
    pub scheme: Scheme,
    first6: [u8; 6],
    last4: [u8; 4],
}

impl Hit {
    /// The first six and last four digits, the rest as `*` (PCI DSS 3.4.1): `411111******1111`.
    pub fn masked(&self) -> String {
        let mut s = String::with_capacity(usize::from(self.len));
        s.extend(self.first6.iter().map(|&d| char::from(b'0' + d)));
        s.extend(std::iter::repeat_n('*', usize::from(self.len).saturating_sub(10)));
        s.extend(self.last4.iter().map(|&d| char::from(b'0' + d)));
        s
    }
}

/// Masks the number `hit` found, in `bytes` (the stream's bytes from `hit.start` to
/// `hit.end`): every digit but the first six and the last four becomes `*`, the length kept.
pub fn mask(bytes: &mut [u8], len: u8) {
    let keep_to = usize::from(len).saturating_sub(4);
    for (i, b) in bytes.iter_mut().filter(|b| b.is_ascii_digit()).enumerate() {
        if (6..keep_to).contains(&i) {
            *b = b'*';
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Group {
    start: u64,
    end: u64,
    /// Digits, `TOO_LONG` past `GROUP_DIGITS`.
    len: u8,
    digits: [u8; GROUP_DIGITS],
}

const EMPTY: Group = Group { start: 0, end: 0, len: 0, digits: [0; GROUP_DIGITS] };

/// The scanner's state; feed it chunks in order, then [`Scanner::finish`] at the end of a value.
#[derive(Debug, Clone)]
pub struct Scanner {
    /// Offset of the next byte.
    pos: u64,
    groups: [Group; MAX_GROUPS],
    /// Groups held (the open run).
    held: usize,
    /// The last byte was a digit: `groups[held - 1]` is still growing.
    in_group: bool,
    /// One separator followed the run's last group.
    separated: bool,
}

impl Default for Scanner {
    fn default() -> Self {
        Scanner { pos: 0, groups: [EMPTY; MAX_GROUPS], held: 0, in_group: false, separated: false }
    }
}

impl Scanner {
    pub fn new() -> Self {
        Self::default()
    }

    /// Where the bytes that may still turn out part of a card number start (an open run), for a
    /// caller that must hold them back; `None` when nothing is open.
    pub fn held_from(&self) -> Option<u64> {
        (self.held > 0).then(|| self.groups[0].start)
    }

    /// Offset of the next byte to be fed.
    pub fn position(&self) -> u64 {
        self.pos
    }

    pub fn feed(&mut self, buf: &[u8], mut on_hit: impl FnMut(Hit)) {
        let base = self.pos;
        let mut i = 0;
        while i < buf.len() {
            if self.held == 0 {
                while let Some(w) = buf.get(i..i + 8) {
                    let mut word = [0; 8];
                    word.copy_from_slice(w);
                    let digits = digit_bits(u64::from_le_bytes(word));
                    if digits != 0 {
                        i += digits.trailing_zeros() as usize / 8;
                        break;
                    }
                    i += 8;
                }
                while i < buf.len() && CLASS[usize::from(buf[i])] != DIGIT {
                    i += 1;
                }
                if i == buf.len() {
                    break;
                }
                // A run that ends in this chunk with fewer digits than any card number is
                // passed over whole, without keeping its groups.
                if let Some(end) = short_run(buf, i) {
                    i = end;
                    continue;
                }
            }
            let b = buf[i];
            let at = base + i as u64;
            match CLASS[usize::from(b)] {
                DIGIT => self.digit(b - b'0', at, &mut on_hit),
                SEPARATOR if self.in_group => {
                    self.in_group = false;
                    self.separated = true;
                }
                _ => self.end_run(&mut on_hit),
            }
            i += 1;
        }
        self.pos = base + buf.len() as u64;
    }

    /// The end of a value (or of the stream): an open run ends here.
    pub fn finish(&mut self, mut on_hit: impl FnMut(Hit)) {
        self.end_run(&mut on_hit);
    }

    fn digit(&mut self, d: u8, at: u64, on_hit: &mut impl FnMut(Hit)) {
        if !self.in_group {
            if self.held == MAX_GROUPS {
                let dropped = self.evaluate_front(on_hit);
                self.drop_front(dropped);
            }
            // Only the first `len` digits of a group are ever read: they need no clearing.
            let g = &mut self.groups[self.held];
            (g.start, g.len) = (at, 0);
            self.held += 1;
            self.in_group = true;
            self.separated = false;
        }
        let g = &mut self.groups[self.held - 1];
        if usize::from(g.len) < GROUP_DIGITS {
            g.digits[usize::from(g.len)] = d;
            g.len += 1;
        } else {
            g.len = TOO_LONG;
        }
        g.end = at + 1;
    }

    fn end_run(&mut self, on_hit: &mut impl FnMut(Hit)) {
        // Most runs (an amount, a house number, a date) hold fewer digits than any card number:
        // no window of them can make one.
        let digits: usize = self.groups[..self.held].iter().map(|g| usize::from(g.len)).sum();
        if digits < MIN_DIGITS {
            self.held = 0;
        }
        while self.held > 0 {
            let dropped = self.evaluate_front(on_hit);
            self.drop_front(dropped);
        }
        self.in_group = false;
        self.separated = false;
    }

    fn drop_front(&mut self, n: usize) {
        self.groups.copy_within(n..self.held, 0);
        self.held -= n;
    }

    /// Reports the longest card number made of whole groups from the first held one, if any;
    /// returns how many groups are done with (those of the number, or the first).
    fn evaluate_front(&self, on_hit: &mut impl FnMut(Hit)) -> usize {
        let groups = &self.groups[..self.held];
        for last in (0..groups.len()).rev() {
            let window = &groups[..=last];
            if let Some(hit) = card_number(window) {
                on_hit(hit);
                return last + 1;
            }
        }
        1
    }
}

/// The card number these groups make, if they make one.
fn card_number(window: &[Group]) -> Option<Hit> {
    let len: usize = window.iter().map(|g| usize::from(g.len)).sum();
    if !(MIN_DIGITS..=19).contains(&len) || (window.len() > 1 && window.iter().any(|g| !(3..=6).contains(&g.len))) {
        return None;
    }
    let mut digits = window.iter().flat_map(|g| g.digits[..usize::from(g.len)].iter().copied());
    let mut first6 = [0; 6];
    for d in &mut first6 {
        *d = digits.next()?;
    }
    let prefix = first6.iter().fold(0, |acc, &d| acc * 10 + u32::from(d));
    let scheme = iin::scheme(prefix, len)?;
    if !luhn(window) {
        return None;
    }
    let mut last4 = [0; 4];
    let mut from_end = window.iter().rev().flat_map(|g| g.digits[..usize::from(g.len)].iter().rev().copied());
    for d in last4.iter_mut().rev() {
        *d = from_end.next()?;
    }
    Some(Hit { start: window[0].start, end: window[window.len() - 1].end, len: len as u8, scheme, first6, last4 })
}

fn luhn(window: &[Group]) -> bool {
    const DOUBLED: [u8; 10] = [0, 2, 4, 6, 8, 1, 3, 5, 7, 9];
    let mut sum = 0u32;
    let digits = window.iter().rev().flat_map(|g| g.digits[..usize::from(g.len)].iter().rev());
    for (i, &d) in digits.enumerate() {
        sum += u32::from(if i % 2 == 1 { DOUBLED[usize::from(d)] } else { d });
    }
    sum % 10 == 0
}

/// Every card number in `bytes`, one value.
pub fn find_all(bytes: &[u8]) -> Vec<Hit> {
    let mut hits = Vec::new();
    let mut s = Scanner::new();
    s.feed(bytes, |h| hits.push(h));
    s.finish(|h| hits.push(h));
    hits
}

/// The first card number in `bytes`, one value.
pub fn first(bytes: &[u8]) -> Option<Hit> {
    let mut found = None;
    let mut s = Scanner::new();
    s.feed(bytes, |h| {
        found.get_or_insert(h);
    });
    s.finish(|h| {
        found.get_or_insert(h);
    });
    found
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn masked(text: &str) -> Vec<String> {
        find_all(text.as_bytes()).iter().map(Hit::masked).collect()
    }

    #[test]
    fn finds_numbers_of_every_scheme_plain_and_grouped() {
        for pan in [
            "4111111111111111",
            "4222222222222",
            "5555555555554444",
            "2223003122003222",
            "378282246310005",
            "6011111111111117",
            "6445644564456445",
            "3530111333300000",
            "30569309025904",
            "6200000000000005",
            "6759649826438453",
        ] {
            let hits = find_all(format!("card {pan}.").as_bytes());
            assert_eq!(hits.len(), 1, "{pan}");
            assert_eq!((hits[0].start, hits[0].end, usize::from(hits[0].len)), (5, 5 + pan.len() as u64, pan.len()));
        }
        assert_eq!(masked("{\"pan\":\"4111 1111 1111 1111\"}"), ["411111******1111"]);
        assert_eq!(masked("4111-1111-1111-1111"), ["411111******1111"]);
        assert_eq!(masked("amex 3782 822463 10005!"), ["378282*****0005"]);
        assert_eq!(masked("[6011111111111117,5555555555554444]"), ["601111******1117", "555555******4444"]);
        assert_eq!(first(b"4111111111111111").map(|h| h.scheme), Some(Scheme::Visa));
    }

    #[test]
    fn what_is_not_a_card_number() {
        for text in [
            "4111111111111112",                // Luhn fails
            "41111111111111111",               // 17 digits: not a Visa length
            "1234567812345670",                // no scheme starts with 1
            "94111111111111111",               // inside a longer run
            "41111111111111110000",            // inside a longer run
            "4111  1111 1111 1111",            // a double separator breaks the run
            "4111_1111_1111_1111",             // not a separator
            "4 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1", // groups of one digit
            "order 2021120322001400051234567890 paid",
            "",
            "no digits at all, only words",
        ] {
            assert_eq!(find_all(text.as_bytes()), [], "{text:?}");
        }
    }

    #[test]
    fn a_number_among_other_groups_is_found() {
        assert_eq!(masked("4111 1111 1111 1111 2024"), ["411111******1111"]);
        assert_eq!(masked("ref 123 4111 1111 1111 1111"), ["411111******1111"]);
        assert_eq!(masked("4111111111111111-12"), ["411111******1111"]);
    }

    #[test]
    fn chunk_boundaries_change_nothing() {
        // Short runs (passed over when they end in the chunk) next to numbers, and a 12-digit
        // run that a separator joins to a card number.
        let text = b"{\"a\":\"x 4111 1111 1111 1111\",\"b\":5555555555554444,\"c\":\"3782-822463-10005\",\
            \"d\":\"12 34-56 78 9012\",\"e\":1250,\"f\":\"9 - 9  1\"} 123456789012 6011111111111117";
        let whole = find_all(text);
        assert_eq!(whole.len(), 4);
        for size in 1..text.len() {
            let mut hits = Vec::new();
            let mut s = Scanner::new();
            for chunk in text.chunks(size) {
                s.feed(chunk, |h| hits.push(h));
            }
            s.finish(|h| hits.push(h));
            assert_eq!(hits, whole, "chunks of {size}");
        }
    }

    #[test]
    fn held_bytes_are_bounded() {
        let mut s = Scanner::new();
        let mut hits = 0;
        let long = "1234 ".repeat(10_000);
        s.feed(long.as_bytes(), |_| hits += 1);
        let held = s.held_from().map(|from| s.position() - from);
        assert!(held.is_some_and(|n| n <= (MAX_GROUPS * 7) as u64), "{held:?}");
        s.finish(|_| hits += 1);
        assert_eq!(s.held_from(), None);
    }

    #[test]
    fn masking_keeps_length_and_separators() {
        let mut text = *b"x 3782-822463-10005 y";
        let hit = first(&text).unwrap();
        mask(&mut text[hit.start as usize..hit.end as usize], hit.len);
        assert_eq!(&text, b"x 3782-82****-*0005 y");
        let mut text = *b"4111111111111111";
        mask(&mut text, 16);
        assert_eq!(&text, b"411111******1111");
    }

    #[test]
    fn the_digit_test_is_exact_and_marks_the_first_digit() {
        for b in 0..=255u8 {
            let w = u64::from_le_bytes([b'a', b'b', b, b'c', b'd', b'e', b'f', b'g']);
            assert_eq!(digit_bits(w) != 0, b.is_ascii_digit(), "{b}");
        }
        // Every word of two bytes from a set that crosses the class edges, in every position:
        // the lowest mark is the first digit.
        let edge = [b'/', b'0', b'5', b'9', b':', b';', 0, 9, 10, 11, 0x30 ^ 0x80, 0xff, b'a', b' '];
        for &x in &edge {
            for &y in &edge {
                for at in 0..7 {
                    let mut bytes = [b'/'; 8];
                    (bytes[at], bytes[at + 1]) = (x, y);
                    let first = bytes.iter().position(u8::is_ascii_digit);
                    let bits = digit_bits(u64::from_le_bytes(bytes));
                    assert_eq!(first, (bits != 0).then(|| bits.trailing_zeros() as usize / 8), "{bytes:?}");
                }
            }
        }
    }
}
