//! Masking card numbers in a stream (a backend's answer) with bounded memory: bytes are let go
//! as soon as they can no longer be part of a card number; the few that still may (an open run
//! of digit groups, at most a few dozen bytes) are held until the next chunk decides them. The
//! length never changes, so a `content-length` stays true, except in a JSON document
//! ([`Masker::json`]), where a card number written as a JSON number becomes a string of the same
//! digits masked (`555555******4444` would not parse), two bytes longer.

use std::collections::VecDeque;

use bytes::{BufMut, Bytes, BytesMut};

use super::scan::{mask, Hit, Scanner};

#[derive(Debug, Default)]
pub struct Masker {
    scanner: Scanner,
    /// Bytes not yet let go; `held[0]` is at stream offset `base`.
    held: BytesMut,
    base: u64,
    found: usize,
    first: Option<Hit>,
    /// A JSON document: where it is inside a string, and where quotes go.
    json: Option<Json>,
}

#[derive(Debug, Default)]
struct Json {
    /// Bytes before this offset have been read for the string state.
    read_to: u64,
    in_string: bool,
    escaped: bool,
    /// The last byte let go (what precedes `held[0]`).
    before: Option<u8>,
    /// Offsets before which a `"` goes, ascending.
    quotes: VecDeque<u64>,
}

impl Json {
    /// Reads `bytes` (the stream from `read_to`) for the string state.
    fn read(&mut self, bytes: &[u8]) {
        for &b in bytes {
            match (self.in_string, self.escaped, b) {
                (true, true, _) => self.escaped = false,
                (true, false, b'\\') => self.escaped = true,
                (_, false, b'"') => self.in_string = !self.in_string,
                _ => {}
            }
        }
        self.read_to += bytes.len() as u64;
    }
}

impl Masker {
    pub fn new() -> Self {
        Self::default()
    }

    /// A masker for a JSON document: a card number that is a JSON number is quoted.
    pub fn json() -> Self {
        Masker { json: Some(Json::default()), ..Self::default() }
    }

    /// Takes a chunk; returns what can be let go now (masked), if anything. A chunk that holds
    /// no card number and ends outside a run of digits, with nothing held before it, is let go
    /// as it came (no copy).
    pub fn push_bytes(&mut self, data: Bytes) -> Option<Bytes> {
        if !self.held.is_empty() {
            return self.push(&data);
        }
        let mut hits = Vec::new();
        self.scanner.feed(&data, |h| hits.push(h));
        if hits.is_empty() && self.scanner.held_from().is_none() {
            self.base += data.len() as u64;
            if let Some(json) = self.json.as_mut() {
                json.read(&data);
                json.before = data.last().copied().or(json.before);
            }
            return (!data.is_empty()).then_some(data);
        }
        self.held.extend_from_slice(&data);
        self.settle(&hits)
    }

    /// Takes a chunk; returns what can be let go now (masked), if anything.
    pub fn push(&mut self, data: &[u8]) -> Option<Bytes> {
        let mut hits = Vec::new();
        self.scanner.feed(data, |h| hits.push(h));
        self.held.extend_from_slice(data);
        self.settle(&hits)
    }

    /// Masks what the scan found and lets go of what can no longer be part of a card number.
    fn settle(&mut self, hits: &[Hit]) -> Option<Bytes> {
        self.apply(hits);
        let keep_from = self.scanner.held_from().unwrap_or(self.scanner.position());
        self.release(keep_from)
    }

    /// The end of the stream: the rest, masked.
    pub fn finish(&mut self) -> Option<Bytes> {
        let mut hits = Vec::new();
        self.scanner.finish(|h| hits.push(h));
        self.apply(&hits);
        self.release(self.scanner.position())
    }

    /// Whether what comes out is as long as what went in (a JSON masker may add quotes).
    pub fn keeps_length(&self) -> bool {
        self.json.is_none()
    }

    /// Card numbers masked so far, and the first of them.
    pub fn found(&self) -> (usize, Option<Hit>) {
        (self.found, self.first)
    }

    fn apply(&mut self, hits: &[Hit]) {
        for hit in hits {
            // Every hit lies in what is held: bytes are let go only before an open run.
            let (Ok(from), Ok(to)) = (usize::try_from(hit.start - self.base), usize::try_from(hit.end - self.base))
            else {
                continue;
            };
            if let Some(bytes) = self.held.get_mut(from..to) {
                mask(bytes, hit.len);
                self.found += 1;
                self.first.get_or_insert(*hit);
            }
            self.quote_if_number(hit, from, to);
        }
    }

    /// In a JSON document, a hit outside any string that is a whole JSON number (one run of
    /// digits, where a value may start and end) is to be quoted.
    fn quote_if_number(&mut self, hit: &Hit, from: usize, to: usize) {
        let Some(json) = self.json.as_mut() else { return };
        if let Some(unread) = json
            .read_to
            .checked_sub(self.base)
            .and_then(|r| usize::try_from(r).ok())
            .and_then(|r| self.held.get(r..from))
        {
            json.read(unread);
        }
        let one_run = hit.end - hit.start == u64::from(hit.len);
        let before = if from == 0 { json.before } else { self.held.get(from - 1).copied() };
        let after = self.held.get(to).copied();
        // What may stand around a JSON number (the stream's start or end included).
        let opens = |b: Option<u8>| matches!(b, None | Some(b':' | b'[' | b',' | b' ' | b'\t' | b'\n' | b'\r'));
        let closes = |b: Option<u8>| matches!(b, None | Some(b',' | b']' | b'}' | b' ' | b'\t' | b'\n' | b'\r'));
        if !json.in_string && one_run && opens(before) && closes(after) {
            json.quotes.push_back(hit.start);
            json.quotes.push_back(hit.end);
        }
    }

    fn release(&mut self, up_to: u64) -> Option<Bytes> {
        let n = usize::try_from(up_to.saturating_sub(self.base)).unwrap_or(usize::MAX).min(self.held.len());
        if n == 0 {
            return None;
        }
        let base = self.base;
        self.base += n as u64;
        let out = self.held.split_to(n);
        let Some(json) = self.json.as_mut() else { return Some(out.freeze()) };
        if let Some(unread) =
            json.read_to.checked_sub(base).and_then(|r| usize::try_from(r).ok()).and_then(|r| out.get(r..))
        {
            json.read(unread);
        }
        json.before = out.last().copied();
        if json.quotes.front().is_none_or(|&q| q > self.base) {
            return Some(out.freeze());
        }
        let mut quoted = BytesMut::with_capacity(out.len() + 2);
        let mut from = 0;
        while let Some(at) = json.quotes.front().copied().filter(|&q| q <= self.base) {
            json.quotes.pop_front();
            let at = usize::try_from(at - base).unwrap_or(out.len()).min(out.len());
            quoted.put_slice(&out[from..at]);
            quoted.put_u8(b'"');
            from = at;
        }
        quoted.put_slice(&out[from..]);
        Some(quoted.freeze())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn through(chunks: &[&[u8]]) -> (Vec<u8>, usize) {
        let mut m = Masker::new();
        let mut out = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            let released = if i % 2 == 0 { m.push(c) } else { m.push_bytes(Bytes::copy_from_slice(c)) };
            out.extend(released.unwrap_or_default());
        }
        out.extend(m.finish().unwrap_or_default());
        (out, m.found().0)
    }

    #[test]
    fn masks_across_chunks_keeping_the_length() {
        let text = b"{\"pan\":\"4111 1111 1111 1111\",\"n\":5555555555554444,\"id\":20211203220014000512345}";
        let expected = b"{\"pan\":\"4111 11** **** 1111\",\"n\":555555******4444,\"id\":20211203220014000512345}";
        for size in 1..text.len() {
            let chunks: Vec<&[u8]> = text.chunks(size).collect();
            let (out, found) = through(&chunks);
            assert_eq!(out, expected, "chunks of {size}");
            assert_eq!(found, 2);
        }
    }

    fn through_json(chunks: &[&[u8]]) -> Vec<u8> {
        let mut m = Masker::json();
        let mut out = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            let released = if i % 2 == 1 { m.push(c) } else { m.push_bytes(Bytes::copy_from_slice(c)) };
            out.extend(released.unwrap_or_default());
        }
        out.extend(m.finish().unwrap_or_default());
        out
    }

    #[test]
    fn a_json_number_becomes_a_masked_string() {
        let text = br#"{"n":5555555555554444,"s":"4111111111111111","a":[378282246310005],"t":"x\" 4111111111111111 \\","m":-4111111111111111,"e":4111111111111111e2,"z":6011111111111117}"#;
        let expected = br#"{"n":"555555******4444","s":"411111******1111","a":["378282*****0005"],"t":"x\" 411111******1111 \\","m":-411111******1111,"e":411111******1111e2,"z":"601111******1117"}"#;
        for size in 1..text.len() {
            let chunks: Vec<&[u8]> = text.chunks(size).collect();
            assert_eq!(
                String::from_utf8(through_json(&chunks)).unwrap(),
                String::from_utf8(expected.to_vec()).unwrap(),
                "chunks of {size}"
            );
        }
        let parsed: serde_json::Value = serde_json::from_slice(&through_json(&[br#"[4111111111111111]"#])).unwrap();
        assert_eq!(parsed, serde_json::json!(["411111******1111"]));
    }

    #[test]
    fn holds_back_only_an_open_run() {
        let mut m = Masker::new();
        assert_eq!(m.push(b"total: 12").as_deref(), Some(&b"total: "[..]));
        assert_eq!(m.push(b"50 EUR").as_deref(), Some(&b"1250 EUR"[..]));
        assert_eq!(m.finish(), None);
    }
}
