//! Masking card numbers in a stream (a backend's answer) with bounded memory: bytes are let go
//! as soon as they can no longer be part of a card number; the few that still may (an open run
//! of digit groups, at most a few dozen bytes) are held until the next chunk decides them. The
//! length never changes, so a `content-length` stays true.

use bytes::{Bytes, BytesMut};

use super::scan::{mask, Hit, Scanner};

#[derive(Debug, Default)]
pub struct Masker {
    scanner: Scanner,
    /// Bytes not yet let go; `held[0]` is at stream offset `base`.
    held: BytesMut,
    base: u64,
    found: usize,
    first: Option<Hit>,
}

impl Masker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes a chunk; returns what can be let go now (masked), if anything.
    pub fn push(&mut self, data: &[u8]) -> Option<Bytes> {
        self.held.extend_from_slice(data);
        let mut hits = Vec::new();
        self.scanner.feed(data, |h| hits.push(h));
        self.apply(&hits);
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
        }
    }

    fn release(&mut self, up_to: u64) -> Option<Bytes> {
        let n = usize::try_from(up_to.saturating_sub(self.base)).unwrap_or(usize::MAX).min(self.held.len());
        if n == 0 {
            return None;
        }
        self.base += n as u64;
        Some(self.held.split_to(n).freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn through(chunks: &[&[u8]]) -> (Vec<u8>, usize) {
        let mut m = Masker::new();
        let mut out = Vec::new();
        for c in chunks {
            out.extend(m.push(c).unwrap_or_default());
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

    #[test]
    fn holds_back_only_an_open_run() {
        let mut m = Masker::new();
        assert_eq!(m.push(b"total: 12").as_deref(), Some(&b"total: "[..]));
        assert_eq!(m.push(b"50 EUR").as_deref(), Some(&b"1250 EUR"[..]));
        assert_eq!(m.finish(), None);
    }
}
