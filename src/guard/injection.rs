//! `[route.injection]`: SQL injection and XSS patterns in a request's values, as the backend
//! will read them (percent- and form-decoded, JSON escapes decoded), found by libinjection's
//! detectors (`libinjectionrs`: a Rust port checked against the C library over its corpus).
//! Every string value by default, or the route's `fields`. 403 `injection_detected`, or in
//! `monitor` recorded and forwarded.
//!
//! libinjection reads one value at a time and reports a pattern (its SQLi fingerprint); it is
//! built to keep false positives low on ordinary text, which the corpus tests hold it to.

use std::ops::ControlFlow;

use super::json_doc::JsonDoc;
use super::layer::Check;
use super::values::{self, Kind, Place, Text};
use super::Reject;
use crate::exchange::{Exchange, Parts};
use crate::rules::injection::{Fields, InjectionAction};
use crate::rules::Mode;

/// What was found, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub field: String,
    /// `sqli` or `xss`.
    pub kind: &'static str,
    /// libinjection's SQLi fingerprint (`s&sos`), empty for XSS.
    pub fingerprint: String,
}

/// The pattern in one value, if any. Each detector runs only on a value it could flag (see
/// [`may_be_sqli`] and [`may_be_xss`]): what is skipped is what libinjection would pass anyway.
pub fn detect(value: &[u8]) -> Option<(&'static str, String)> {
    // A value `may_be_sqli` clears has neither `<` nor `=`: `may_be_xss` would clear it too.
    if !may_be_sqli(value) {
        return None;
    }
    let sqli = libinjectionrs::detect_sqli(value);
    if sqli.is_injection() {
        let fingerprint = sqli.fingerprint.map(|f| f.as_str().to_owned()).unwrap_or_default();
        return Some(("sqli", fingerprint));
    }
    (may_be_xss(value) && libinjectionrs::detect_xss(value).is_injection()).then(|| ("xss", String::new()))
}

/// Longest run of letters and digits [`may_be_sqli`] reasons about; a longer one is left to
/// libinjection.
const MAX_PLAIN_WORD: usize = 64;

// The classes of the bytes a value `may_be_sqli` clears can hold; 0 for every other byte.
const LETTER: u8 = 1; // `A`–`Z`, `a`–`z`, `_`: a word starts here
const DIGIT: u8 = 2;
const DOT: u8 = 4;
const SPACE: u8 = 8; // whitespace and `,`
const AT: u8 = 16;
const SIGN: u8 = 32; // `-`, `+`
const QUOTE: u8 = 64;
const HASH: u8 = 128;
// A class from SPACE up ends a run of letters, digits and dots.

static CLASS: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = match b as u8 {
            b'A'..=b'Z' | b'a'..=b'z' | b'_' => LETTER,
            b'0'..=b'9' => DIGIT,
            b'.' => DOT,
            b' ' | b'\t' | b'\n' | b'\r' | b',' => SPACE,
            b'@' => AT,
            b'-' | b'+' => SIGN,
            b'\'' => QUOTE,
            b'#' => HASH,
            _ => 0,
        };
        b += 1;
    }
    table
};

/// Whether libinjection's SQLi detector could flag `value`. It cannot when the value is only
/// words it does not know, numbers, whitespace, `.` and `,`, and at most one of: `@`; `-`/`+`
/// (no `--`); apostrophes; `#`. `London`, `NW1 6XE`, `ana@example.com`, `A-1029-55`,
/// `Ana O'Brien`, `Flat 3 #12, 221B Baker St.`. That is much of what a shop's forms hold, and
/// libinjection passes all of it:
/// - such a value is tokenized into barewords (`n`), numbers (`1`), `.`, `,`, and one of:
///   variables (`v`, from `@`); operators (`o`, from `-`, `+`); strings (`s`, from `'`, in the
///   pass as written and in the pass that reads the value as if a quote came before it); or, for
///   `#`, an operator in the ANSI pass and a comment (`c`, to the end of the line) in the MySQL
///   pass it triggers. The letters that open a string (`b`, `e`, `n`, `q`, `u`, `x`) do so only
///   before a quote, and make a string or a number (`x'41'`). The double-quote pass needs a `"`;
/// - a word becomes something else only when it, a part of it before a `.`, or it and the
///   words after it, are in libinjection's keyword table: every word the tokenizer can make here
///   is looked up ([`known_word`], which also counts the first word of a multi-word entry such
///   as `GROUP BY` as known), whichever side of a quote or `#` it is on;
/// - its folding rules change types only next to other kinds of tokens, and no fingerprint on
///   its list is made of `n`, `1`, `.`, `,` and one of `v`, `o`, `s` (the tests check the table;
///   `1ov`, `1sv` and `sos` are on it, hence one kind only). With `#`: only `1c` and `nc` are,
///   and a two-token fingerprint whose second token starts with `#` is libinjection's own
///   exception (`3 #12`), unless the value holds `sp_password`, which is left to it.
///
/// One pass over the bytes, by class: each run between delimiters is looked at when it ends.
pub fn may_be_sqli(value: &[u8]) -> bool {
    // `seen`: the delimiters' classes so far; `run`: the classes of the current run.
    let (mut seen, mut run, mut start) = (0u8, 0u8, 0usize);
    for (i, &b) in value.iter().enumerate() {
        let class = CLASS[usize::from(b)];
        if class < SPACE {
            if class == 0 {
                return true;
            }
            run |= class;
            continue;
        }
        if b == b'-' && value.get(i + 1) == Some(&b'-') {
            return true;
        }
        seen |= class;
        // Two words merge into a multi-word keyword (`ORDER BY`) only when a delimiter
        // separates them: a run with one before or after it may be the first of two.
        if i > start && run_known(&value[start..i], run, true) {
            return true;
        }
        (start, run) = (i + 1, 0);
    }
    if (seen & !SPACE).count_ones() > 1 {
        return true;
    }
    if seen & HASH != 0 && memchr::memmem::find(value, b"sp_password").is_some() {
        return true;
    }
    // A value of one run (`order`, a JSON name) has no word for its own to merge with.
    start < value.len() && run_known(&value[start..], run, seen != 0)
}

/// Whether a run without delimiters (`classes`: those of its bytes) holds a word libinjection
/// knows, or is longer than [`MAX_PLAIN_WORD`]. A run that starts with a letter is one word (up
/// to a `.` before which it is a keyword); in one that starts with a digit or a `.`, numbers
/// and dots come first and a word may start at any letter. `multi_word_firsts`: whether the
/// first word of a multi-word keyword counts as known.
#[inline(always)]
fn run_known(run: &[u8], classes: u8, multi_word_firsts: bool) -> bool {
    if run.len() > MAX_PLAIN_WORD {
        return true;
    }
    if classes & LETTER == 0 {
        return false;
    }
    if classes & DOT == 0 && CLASS[usize::from(run[0])] == LETTER {
        return known_word(run, multi_word_firsts);
    }
    words_known(run, classes & DOT != 0, multi_word_firsts)
}

/// [`run_known`] for a run with dots or starting with a digit.
#[inline(never)]
fn words_known(run: &[u8], dots: bool, multi_word_firsts: bool) -> bool {
    // The word from `start`, and each part of it before a `.`.
    let known_from = |start: usize| {
        let word = &run[start..];
        known_word(word, multi_word_firsts)
            || (dots && (1..word.len()).any(|j| word[j] == b'.' && known_word(&word[..j], multi_word_firsts)))
    };
    if CLASS[usize::from(run[0])] == LETTER {
        known_from(0)
    } else {
        (1..run.len()).filter(|&i| CLASS[usize::from(run[i])] == LETTER).any(known_from)
    }
}

/// In libinjection's keyword table, or the first word of one of its multi-word entries
/// (`word`: bytes of a run, ASCII letters, digits, `_` and `.`). Without
/// `multi_word_firsts` (a word with no other word to merge with), neither a first word alone
/// nor an entry of type bareword (`ORDER`, listed for `ORDER BY`) counts: the tokenizer makes
/// such a word a bareword, as it does any word it does not know, and splits nothing at it.
#[inline]
fn known_word(word: &[u8], multi_word_firsts: bool) -> bool {
    may_be_listed(word) && listed(word, multi_word_firsts)
}

#[inline(never)]
fn listed(word: &[u8], multi_word_firsts: bool) -> bool {
    use libinjectionrs::sqli::sqli_data::lookup_bytes_type;
    use libinjectionrs::sqli::TokenType;
    match packed_upper(word) {
        Some(w) => WORDS.get(w) & if multi_word_firsts { AS_FIRST } else { ALONE } != 0,
        // Longer than any first word of a multi-word entry (the tests check).
        None => lookup_bytes_type(word).is_some_and(|t| multi_word_firsts || t != TokenType::Bareword),
    }
}

/// Per length (31: 31 or more) and first byte of a word, upper-cased, the upper-cased last
/// bytes of the table's words (and first words of multi-word entries) that have them, as bits
/// (`& 0x3f` keeps letters, digits and `_` apart; other bytes may share a bit, which only lets
/// more through). Most words of a shop's values are not there, and are known not to be
/// keywords without a lookup.
static LISTED: [u64; 32 * 32] = {
    use libinjectionrs::sqli::sqli_data::SQL_KEYWORDS;
    let mut seen = [0u64; 32 * 32];
    let mut k = 0;
    while k < SQL_KEYWORDS.len() {
        let word = SQL_KEYWORDS[k].word.as_bytes();
        // Fingerprints (type `F`) start with `0`; the words asked about start with a letter.
        if SQL_KEYWORDS[k].token_type != b'F' {
            let mut len = 0;
            while len < word.len() && word[len] != b' ' {
                len += 1;
            }
            if len > 0 {
                let (at, bit) = slot(len, word[0], word[len - 1]);
                seen[at] |= 1 << bit;
            }
        }
        k += 1;
    }
    seen
};

const fn slot(len: usize, first: u8, last: u8) -> (usize, u32) {
    let len = if len < 31 { len } else { 31 };
    (len * 32 + (first.to_ascii_uppercase() & 0x1f) as usize, (last.to_ascii_uppercase() & 0x3f) as u32)
}

/// Whether a word of the keyword table (or the first word of a multi-word entry) has the
/// length, first and last letters of `word`.
#[inline]
fn may_be_listed(word: &[u8]) -> bool {
    let (Some(&first), Some(&last)) = (word.first(), word.last()) else { return false };
    let (at, bit) = slot(word.len(), first, last);
    LISTED.get(at).is_some_and(|seen| seen >> bit & 1 != 0)
}

/// [`WORDS`]: a word the tokenizer makes something other than a bareword on its own.
const ALONE: u8 = 1;
/// [`WORDS`]: a word in the table, or the first word of a multi-word entry.
const AS_FIRST: u8 = 2;

/// The keyword table's words of at most 16 bytes and the first words of its multi-word
/// entries, by [`packed_upper`], with what they are ([`ALONE`], [`AS_FIRST`]): one probe of an
/// open-addressed table, not a hash of the word's bytes and a string comparison.
struct Words {
    /// A power of two long; a key of 0 (no word packs to 0) is an empty slot.
    slots: Vec<(u128, u8)>,
}

impl Words {
    fn home(w: u128) -> usize {
        let x = (w as u64) ^ ((w >> 64) as u64).rotate_left(29);
        (x.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - WORD_BITS)) as usize
    }

    fn get(&self, w: u128) -> u8 {
        let mut i = Self::home(w);
        loop {
            match self.slots.get(i) {
                Some(&(k, flags)) if k == w => return flags,
                Some(&(0, _)) | None => return 0,
                _ => i = (i + 1) & (self.slots.len() - 1),
            }
        }
    }

    fn add(&mut self, w: u128, flags: u8) {
        let mut i = Self::home(w);
        loop {
            match self.slots.get_mut(i) {
                Some(slot) if slot.0 == w || slot.0 == 0 => {
                    *slot = (w, slot.1 | flags);
                    return;
                }
                Some(_) => i = (i + 1) & (self.slots.len() - 1),
                None => return,
            }
        }
    }
}

/// Builds the keyword tables the pre-check and libinjection read (once per process), so that
/// the first request on a route with `[route.injection]` does not wait for it. Called at start
/// when the rules have such a route; otherwise the first request that needs them builds them.
pub fn prepare() {
    std::sync::LazyLock::force(&WORDS);
}

/// [`Words`] has 2^14 slots: the table's 9,352 entries fill at most 57% of them.
const WORD_BITS: u32 = 14;

static WORDS: std::sync::LazyLock<Words> = std::sync::LazyLock::new(|| {
    use libinjectionrs::sqli::sqli_data::{lookup_bytes_type, SQL_KEYWORDS};
    use libinjectionrs::sqli::TokenType;
    let mut words = Words { slots: vec![(0, 0); 1 << WORD_BITS] };
    for k in SQL_KEYWORDS.iter().filter(|k| !k.word.is_empty() && !k.word.contains('\0')) {
        let alone = lookup_bytes_type(k.word.as_bytes()).is_some_and(|t| t != TokenType::Bareword);
        if let Some(w) = packed_upper(k.word.as_bytes()) {
            words.add(w, AS_FIRST | if alone { ALONE } else { 0 });
        }
        let first = k.word.split_once(' ').map(|(first, _)| first).filter(|first| !first.is_empty());
        if let Some(w) = first.and_then(|first| packed_upper(first.as_bytes())) {
            words.add(w, AS_FIRST);
        }
    }
    words
});

/// A word of at most 16 bytes, upper-cased, as one integer: distinct words of ASCII bytes other
/// than NUL (as every word asked about and every word of the table), distinct integers, none 0.
#[inline]
fn packed_upper(word: &[u8]) -> Option<u128> {
    let mut bytes = [0u8; 16];
    bytes.get_mut(..word.len())?.copy_from_slice(word);
    // Eight bytes at a time: 0x20 off each byte from `a` to `z`.
    let upper = |x: u64| {
        const ONES: u64 = 0x0101_0101_0101_0101;
        let low = x & (0x7f * ONES);
        let from_a = low + (0x80 - u64::from(b'a')) * ONES;
        let past_z = low + (0x80 - u64::from(b'z') - 1) * ONES;
        x - (((from_a & !past_z & !x) & (0x80 * ONES)) >> 2)
    };
    let (lo, hi) = bytes.split_at(8);
    let (lo, hi) = (u64::from_le_bytes(lo.try_into().ok()?), u64::from_le_bytes(hi.try_into().ok()?));
    Some(u128::from(upper(lo)) | u128::from(upper(hi)) << 64)
}

/// Whether libinjection's XSS detector could flag `value`: only through a tag (`<`) or an
/// attribute's value (after `=`), in whichever of its five HTML contexts.
pub fn may_be_xss(value: &[u8]) -> bool {
    value.iter().any(|&b| b == b'<' || b == b'=')
}

/// The first value of the request with a pattern: the query's values, then a JSON or form
/// body's (other bodies are not looked at: no field to decode).
pub fn in_request(
    query: Option<&str>,
    content_type: Option<&[u8]>,
    body: &[u8],
    fields: Option<&Fields>,
) -> Option<Finding> {
    let doc;
    let body = match Kind::of(content_type) {
        _ if body.is_empty() => Body::None,
        Kind::Json => {
            doc = JsonDoc::parse(body);
            Body::Json(&doc)
        }
        Kind::Form => Body::Form(body),
        Kind::Other => Body::None,
    };
    in_values(query, body, fields)
}

/// A request body, by what the guard looks at in it.
enum Body<'a> {
    None,
    Json(&'a JsonDoc),
    Form(&'a [u8]),
}

fn in_values(query: Option<&str>, body: Body<'_>, fields: Option<&Fields>) -> Option<Finding> {
    let mut look = |place: Place<'_>, text: Text, value: &[u8]| {
        let wanted = text == Text::String
            && match (fields, place) {
                (None, Place::Query(_) | Place::Form(_) | Place::Json(_)) => true,
                (Some(f), Place::Query(n) | Place::Form(n)) => f.has_name(n),
                (Some(f), Place::Json(p)) => f.has_pointer(p),
                (_, Place::QueryName | Place::FormName | Place::JsonName(_)) => false,
            };
        match wanted.then(|| detect(value)).flatten() {
            Some((kind, fingerprint)) => ControlFlow::Break(Finding { field: place.describe(), kind, fingerprint }),
            None => ControlFlow::Continue(()),
        }
    };
    if let Some(q) = query {
        if let ControlFlow::Break(f) = values::pairs(q.as_bytes(), true, &mut look) {
            return Some(f);
        }
    }
    match body {
        // Every string, no names and no numbers: a pointer is built only for a finding.
        Body::Json(doc) if fields.is_none() => doc.strings().find_map(|(i, value)| {
            let (kind, fingerprint) = detect(value.as_bytes())?;
            Some(Finding { field: Place::Json(&doc.pointer(i)).describe(), kind, fingerprint })
        }),
        Body::Json(doc) => doc.visit(&mut look).break_value(),
        Body::Form(form) => values::pairs(form, false, &mut look).break_value(),
        Body::None => None,
    }
}

#[derive(Clone, Copy, Default)]
pub struct InjectionGuard;

impl Check for InjectionGuard {
    const NAME: &'static str = "injection";

    fn check(&self, ex: &mut Exchange) -> Result<(), Reject> {
        let Parts { req, route, json, content, .. } = &mut **ex;
        let Some(rule) = route.as_ref().and_then(|r| r.injection.as_ref()) else { return Ok(()) };
        if rule.action == InjectionAction::Off {
            return Ok(());
        }
        let (query, fields) = (req.uri().query(), rule.fields.as_ref());
        let content = values::content(content, req);
        let found = match content.kind {
            _ if req.body().buffered().is_none_or(<[u8]>::is_empty) => in_values(query, Body::None, fields),
            Kind::Json => in_values(query, Body::Json(values::json_doc(json, req, content, route.as_deref())?), fields),
            Kind::Form => in_values(query, Body::Form(&values::body_of(req, content, route.as_deref())?), fields),
            Kind::Other => {
                // Not looked at, but a coding payguard cannot decode is refused here as on
                // every route whose content guards read requests.
                values::body_of(req, content, route.as_deref())?;
                in_values(query, Body::None, fields)
            }
        };
        match found {
            None => Ok(()),
            Some(f) => Err(Reject::InjectionDetected { field: f.field, kind: f.kind, fingerprint: f.fingerprint }),
        }
    }

    fn mode(&self, ex: &Exchange) -> Mode {
        match ex.route.as_ref().and_then(|r| r.injection.as_ref()).map(|i| i.action) {
            Some(InjectionAction::Monitor) => Mode::Monitor,
            _ => ex.mode(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn find(query: Option<&str>, ct: &str, body: &str) -> Option<(String, &'static str)> {
        in_request(query, Some(ct.as_bytes()), body.as_bytes(), None).map(|f| (f.field, f.kind))
    }

    #[test]
    fn patterns_in_decoded_values_with_their_place() {
        let json = "application/json";
        assert_eq!(find(None, json, r#"{"name":"Ana"}"#), None);
        assert_eq!(find(None, json, r#"{"q":"1' OR '1'='1"}"#), Some(("/q".into(), "sqli")));
        assert_eq!(find(None, json, r#"{"a":{"b":"<script>alert(1)</script>"}}"#), Some(("/a/b".into(), "xss")));
        assert_eq!(find(None, json, r#"{"a":"\u003cscript>alert(1)\u003c/script>"}"#), Some(("/a".into(), "xss")));
        assert_eq!(find(Some("id=1%27%20OR%20%271%27%3D%271"), "", ""), Some(("query:id".into(), "sqli")));
        assert_eq!(
            find(None, "application/x-www-form-urlencoded", "note=%3Cimg+src%3Dx+onerror%3Dalert(1)%3E"),
            Some(("form:note".into(), "xss"))
        );
        // Other bodies have no fields to decode.
        assert_eq!(find(None, "text/plain", "1' OR '1'='1"), None);
    }

    /// A small deterministic generator, so the property tests below need no seed file.
    struct Lcg(u64);

    /// Generated values per property test; `INJECTION_ROUNDS` raises it for a longer run.
    fn rounds() -> usize {
        std::env::var("INJECTION_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(200_000)
    }
    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            self.0 >> 33
        }
        fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
            &items[self.next() as usize % items.len()]
        }
    }

    #[test]
    fn no_listed_fingerprint_is_made_of_the_tokens_of_a_plain_value() {
        let table = libinjectionrs::sqli::sqli_data::SQL_KEYWORDS;
        let fingerprints: Vec<&str> = table.iter().filter(|k| k.token_type == b'F').map(|k| k.word).collect();
        assert!(fingerprints.len() > 8000, "the fingerprint list is in the table");
        // Fingerprints are listed as "0" and the token types, upper case.
        let made_of = |alphabet: &[u8]| -> Vec<&str> {
            fingerprints
                .iter()
                .copied()
                .filter(|f| f.len() > 1 && f[1..].bytes().all(|b| alphabet.contains(&b)))
                .collect()
        };
        for alphabet in [&b"N1.,V"[..], b"N1.,O", b"N1.,S"] {
            assert!(made_of(alphabet).is_empty(), "{:?}", made_of(alphabet));
        }
        // `#`: an operator in the ANSI pass, a comment in the MySQL one. Only two-token
        // fingerprints are listed, and libinjection lets those pass when the comment is a `#`.
        assert_eq!(made_of(b"N1.,OC"), ["01C", "0NC"]);
        for (a, b) in
            [("01OV", "variables and operators"), ("01SV", "strings and variables"), ("0SOS", "strings and operators")]
        {
            assert!(fingerprints.contains(&a), "{b} together are listed");
        }
    }

    #[test]
    fn values_skipped_are_values_libinjection_passes() {
        let table = libinjectionrs::sqli::sqli_data::SQL_KEYWORDS;
        let keywords: Vec<&str> = table
            .iter()
            .map(|k| k.word)
            .filter(|w| w.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
            .collect();
        let words = [
            "London",
            "EUR",
            "NW1",
            "6XE",
            "door",
            "Ana",
            "x",
            "b",
            "e",
            "n",
            "q",
            "u",
            "0x",
            "0b1",
            "1e",
            "1e5",
            "12d",
            "3f",
            "_",
            "a_b",
            "9",
            "007",
            "1a2b",
            "0xfg",
            "1eunion",
            "1union",
            "1select",
            "2or",
            "4and",
            ".",
            "..",
            ",",
            "@",
            "@@",
            "-",
            "+",
            "1.5",
            ".5",
            "x.y",
            "St.",
            "a@b.c",
            "A-1",
            "select.x",
            "1.e",
            "\n",
            "1-",
            "-1",
            "@version",
            "@@version",
            "u.select",
            "1.union",
            "sp_password",
            "N",
            "_latin1",
            "order",
            "group",
            "by",
            "natural",
            "left",
            "outer",
            "join",
            "cross",
        ];
        let mut rng = Lcg(7);
        let (mut skipped, mut flagged) = (0, 0);
        for _ in 0..rounds() {
            let n = 1 + rng.next() as usize % 6;
            let mut value = String::new();
            for i in 0..n {
                if i > 0 {
                    let separators = [" ", " ", " ", "  ", "", "", ".", ",", "-", "+", "@", "\t", "'", "#", " #", "' "];
                    let separator = *rng.pick(&separators);
                    value.push_str(separator);
                }
                let word = if rng.next() % 3 == 0 { rng.pick(&keywords) } else { rng.pick(&words) };
                if rng.next() % 2 == 0 {
                    value.push_str(&word.to_ascii_lowercase());
                } else {
                    value.push_str(word);
                }
            }
            let sqli = libinjectionrs::detect_sqli(value.as_bytes()).is_injection();
            flagged += usize::from(sqli);
            if !may_be_sqli(value.as_bytes()) {
                skipped += 1;
                assert!(!sqli, "{value:?} skipped, yet libinjection flags it");
            }
        }
        assert!(skipped > 10_000 && flagged > 100, "skipped {skipped}, flagged {flagged}: the test covers both sides");
    }

    #[test]
    fn values_without_a_tag_or_an_attribute_value_are_not_xss() {
        let parts = [
            "onerror",
            "onload",
            "style",
            "href",
            "src",
            "javascript:alert(1)",
            "\"",
            "'",
            "`",
            ">",
            "/",
            " ",
            "\t",
            "&#x3c;",
            "alert(1)",
            "x",
            "expression(",
            "data:text/html",
            "<",
            "=",
            "!--",
            "?",
            "[if",
            "xml",
        ];
        let mut rng = Lcg(11);
        let (mut skipped, mut flagged) = (0, 0);
        for _ in 0..rounds() {
            let n = 1 + rng.next() as usize % 8;
            let value: String = (0..n).map(|_| *rng.pick(&parts)).collect();
            let xss = libinjectionrs::detect_xss(value.as_bytes()).is_injection();
            flagged += usize::from(xss);
            // `detect` asks `may_be_xss` only of what `may_be_sqli` passes on.
            assert!(!may_be_xss(value.as_bytes()) || may_be_sqli(value.as_bytes()), "{value:?}");
            if !may_be_xss(value.as_bytes()) {
                skipped += 1;
                assert!(!xss, "{value:?} skipped, yet libinjection flags it");
            }
        }
        assert!(skipped > 10_000 && flagged > 1_000, "skipped {skipped}, flagged {flagged}");
    }

    #[test]
    fn the_prefilters_pass_what_they_must() {
        for v in [
            "EUR",
            "London",
            "NW1 6XE",
            "ord_123abc",
            "4 2 7",
            "ana@example.com",
            "A-1029-55",
            "TS-42",
            "St.",
            "+44 20",
            "Ana O'Brien",
            "rock 'n' roll",
            "x'1'",
            "#1",
            "Flat 3 #12, 221B Baker St.",
            "order",
            "order.by",
        ] {
            assert!(!may_be_sqli(v.as_bytes()), "{v}");
        }
        for v in [
            "leave at the door",
            "1union select 1",
            "1 union select 1",
            "group by",
            "O'Brien-Smith",
            "x'1'@",
            "#1'",
            "1 #sp_password",
            "Ana O'Brien or 1",
            "order by",
            "x order",
            "order,1",
            "1--",
            "a-@b",
            "select.x",
            "1.union",
        ] {
            assert!(may_be_sqli(v.as_bytes()), "{v}");
        }
        assert!(!may_be_xss(b"leave at the door"));
        assert!(may_be_xss(b"<b>") && may_be_xss(b"x onload=alert(1)"));
    }

    #[test]
    fn known_words_are_found_in_any_case_and_multi_word_firsts_fit_the_lookup() {
        let table = libinjectionrs::sqli::sqli_data::SQL_KEYWORDS;
        for k in table {
            if let Some((first, _)) = k.word.split_once(' ') {
                assert!(first.len() <= 16 && !first.bytes().any(|b| b.is_ascii_lowercase()), "{first}");
                let lower = first.to_ascii_lowercase();
                assert!(known_word(first.as_bytes(), true) && known_word(lower.as_bytes(), true), "{first}");
            }
        }
        for w in ["select", "UNION", "Group", "lock", "at"] {
            assert!(known_word(w.as_bytes(), true), "{w}");
        }
        for w in ["London", "EUR", "Baker", "door", "x".repeat(40).as_str()] {
            assert!(!known_word(w.as_bytes(), true), "{w}");
        }
        for k in table.iter().filter(|k| k.token_type != b'F') {
            // The words asked about have no space: of a multi-word entry, its first word.
            let w = k.word.split_once(' ').map_or(k.word, |(first, _)| first);
            assert!(may_be_listed(w.as_bytes()) && may_be_listed(w.to_ascii_lowercase().as_bytes()), "{w}");
        }
        assert!(!may_be_listed(b"amount") && !may_be_listed(b"London") && may_be_listed(b"leave"));
        // A first word alone: `ORDER` only as `ORDER BY`.
        assert!(known_word(b"order", true) && !known_word(b"order", false) && known_word(b"select", false));
    }

    #[test]
    fn only_the_listed_fields_when_there_are_fields() {
        let body = r#"{"shipping":{"name":"1' OR '1'='1"},"note":"<script>alert(1)</script>"}"#;
        let fields = Fields::of;
        let only_shipping = fields(&["/shipping/*"]);
        let f = in_request(None, Some(b"application/json"), body.as_bytes(), Some(&only_shipping)).unwrap();
        assert_eq!((f.field.as_str(), f.kind), ("/shipping/name", "sqli"));
        let only_q = fields(&["q"]);
        assert_eq!(in_request(None, Some(b"application/json"), body.as_bytes(), Some(&only_q)), None);
        assert!(in_request(Some("q=%3Cscript%3Ealert(1)%3C/script%3E"), None, b"", Some(&only_q)).is_some());
    }
}
