//! Decoding a backend's compressed answer (`content-encoding: gzip`, `deflate` or `br`) so that
//! it can be scanned. Compressed chunks are pushed in as they arrive and decoded pieces of at most
//! [`PIECE`] bytes are pulled out, so memory stays bounded whatever the compression ratio: a
//! decompression bomb yields many pieces, never one large buffer.
//!
//! gzip and deflate are flate2's decoders (every gzip member is decoded, as clients do); br is
//! brotli-decompressor with the window limited to RFC 7932's 16 MiB (its "large window"
//! extension is not HTTP's `br`).

use std::collections::VecDeque;
use std::io::{self, BufRead, Read};

use brotli_decompressor::{BrotliDecompressStream, BrotliResult, BrotliState, StandardAlloc};
use bytes::{Buf, Bytes};
use flate2::bufread::{DeflateDecoder, MultiGzDecoder, ZlibDecoder};
use http::header::CONTENT_ENCODING;

/// The most a single pull decodes.
pub const PIECE: usize = 16 * 1024;

/// The codings this module decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Gzip,
    Deflate,
    Br,
}

/// An answer whose `content-encoding` is not one coding this module decodes: an unknown one
/// (`zstd`, `compress`), or several applied in turn.
#[derive(Debug, thiserror::Error)]
#[error("content-encoding {0:?} cannot be decoded")]
pub struct Unsupported(pub String);

/// The compressed data is not what its coding says: corrupt, truncated, or followed by bytes
/// after its end.
#[derive(Debug, thiserror::Error)]
#[error("the answer's {coding} data cannot be decoded: {detail}")]
pub struct Corrupt {
    pub coding: &'static str,
    pub detail: String,
}

impl Coding {
    /// The coding of a message: `None` when it is not encoded (no `content-encoding`, or only
    /// `identity`).
    pub fn of(headers: &http::HeaderMap) -> Result<Option<Coding>, Unsupported> {
        let mut found = None;
        for value in headers.get_all(CONTENT_ENCODING) {
            let text = value.to_str().map_err(|_| Unsupported(String::from_utf8_lossy(value.as_bytes()).into()))?;
            for token in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                let coding = match token.to_ascii_lowercase().as_str() {
                    "identity" => continue,
                    "gzip" | "x-gzip" => Coding::Gzip,
                    "deflate" => Coding::Deflate,
                    "br" => Coding::Br,
                    _ => return Err(Unsupported(text.into())),
                };
                if found.replace(coding).is_some() {
                    return Err(Unsupported(text.into()));
                }
            }
        }
        Ok(found)
    }

    pub fn name(self) -> &'static str {
        match self {
            Coding::Gzip => "gzip",
            Coding::Deflate => "deflate",
            Coding::Br => "br",
        }
    }
}

/// What a pull gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Pull {
    Data(Bytes),
    /// Nothing more can be decoded until more input is pushed (or the input is ended).
    NeedInput,
    /// The input has ended and everything was decoded.
    Done,
}

/// A decoder for one answer.
pub struct Decoder {
    coding: Coding,
    inner: Inner,
    /// The compressed stream has ended; any further input is corrupt.
    finished: bool,
    /// Some input came: an empty body is an empty answer, whatever its coding says.
    any_input: bool,
}

enum Inner {
    Gzip(Box<MultiGzDecoder<Feed>>),
    /// deflate before its first two bytes came: RFC 9110 says zlib-wrapped, some servers send
    /// it raw, and clients accept both.
    DeflateUnsure(Feed),
    Zlib(Box<ZlibDecoder<Feed>>),
    Raw(Box<DeflateDecoder<Feed>>),
    Br(Box<Brotli>),
}

struct Brotli {
    state: BrotliState<StandardAlloc, StandardAlloc, StandardAlloc>,
    feed: Feed,
    total_out: usize,
}

impl Decoder {
    pub fn new(coding: Coding) -> Self {
        let inner = match coding {
            Coding::Gzip => Inner::Gzip(Box::new(MultiGzDecoder::new(Feed::default()))),
            Coding::Deflate => Inner::DeflateUnsure(Feed::default()),
            Coding::Br => Inner::Br(Box::new(Brotli {
                state: BrotliState::new_strict(
                    StandardAlloc::default(),
                    StandardAlloc::default(),
                    StandardAlloc::default(),
                ),
                feed: Feed::default(),
                total_out: 0,
            })),
        };
        Decoder { coding, inner, finished: false, any_input: false }
    }

    pub fn coding(&self) -> Coding {
        self.coding
    }

    /// More compressed input.
    pub fn push(&mut self, chunk: Bytes) {
        self.any_input |= !chunk.is_empty();
        self.feed().push(chunk);
    }

    /// The compressed input has ended.
    pub fn end(&mut self) {
        self.feed().ended = true;
    }

    fn feed(&mut self) -> &mut Feed {
        match &mut self.inner {
            Inner::Gzip(d) => d.get_mut(),
            Inner::DeflateUnsure(f) => f,
            Inner::Zlib(d) => d.get_mut(),
            Inner::Raw(d) => d.get_mut(),
            Inner::Br(b) => &mut b.feed,
        }
    }

    /// The next decoded piece.
    pub fn pull(&mut self) -> Result<Pull, Corrupt> {
        if !self.any_input {
            return Ok(if self.feed().ended { Pull::Done } else { Pull::NeedInput });
        }
        if let Inner::DeflateUnsure(feed) = &mut self.inner {
            match feed.peek2() {
                Some([b0, b1]) => {
                    let feed = std::mem::take(feed);
                    self.inner = if looks_zlib(b0, b1) {
                        Inner::Zlib(Box::new(ZlibDecoder::new(feed)))
                    } else {
                        Inner::Raw(Box::new(DeflateDecoder::new(feed)))
                    };
                }
                None if feed.ended && feed.is_empty() => return Ok(Pull::Done),
                None if feed.ended => return Err(self.corrupt("truncated")),
                None => return Ok(Pull::NeedInput),
            }
        }
        if self.finished {
            let feed = self.feed();
            return if !feed.is_empty() {
                Err(self.corrupt("data after the end of the stream"))
            } else if feed.ended {
                Ok(Pull::Done)
            } else {
                Ok(Pull::NeedInput)
            };
        }
        let mut out = vec![0u8; PIECE];
        let read = match &mut self.inner {
            Inner::Gzip(d) => d.read(&mut out),
            Inner::Zlib(d) => d.read(&mut out),
            Inner::Raw(d) => d.read(&mut out),
            Inner::Br(b) => return b.pull(out).map_err(|detail| self.corrupt(detail)),
            Inner::DeflateUnsure(_) => return Ok(Pull::NeedInput),
        };
        match read {
            Ok(0) => {
                // flate2 answers 0 only at the end of the stream (it asks for input otherwise).
                self.finished = true;
                self.pull()
            }
            Ok(n) => {
                out.truncate(n);
                Ok(Pull::Data(out.into()))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Pull::NeedInput),
            Err(e) => Err(self.corrupt(&e.to_string())),
        }
    }

    fn corrupt(&self, detail: &str) -> Corrupt {
        Corrupt { coding: self.coding.name(), detail: detail.to_owned() }
    }
}

impl Brotli {
    fn pull(&mut self, mut out: Vec<u8>) -> Result<Pull, &'static str> {
        let (mut avail_out, mut out_off) = (out.len(), 0);
        loop {
            let input = self.feed.front();
            let (mut avail_in, mut in_off) = (input.len(), 0);
            let result = BrotliDecompressStream(
                &mut avail_in,
                &mut in_off,
                input,
                &mut avail_out,
                &mut out_off,
                &mut out,
                &mut self.total_out,
                &mut self.state,
            );
            self.feed.consume(in_off);
            match result {
                BrotliResult::ResultFailure => return Err("corrupt brotli stream"),
                BrotliResult::NeedsMoreOutput => break,
                BrotliResult::ResultSuccess => {
                    if out_off == 0 {
                        return match (self.feed.is_empty(), self.feed.ended) {
                            (false, _) => Err("data after the end of the stream"),
                            (true, true) => Ok(Pull::Done),
                            (true, false) => Ok(Pull::NeedInput),
                        };
                    }
                    break;
                }
                BrotliResult::NeedsMoreInput => {
                    if out_off > 0 {
                        break;
                    }
                    if self.feed.is_empty() {
                        return if self.feed.ended { Err("truncated") } else { Ok(Pull::NeedInput) };
                    }
                }
            }
        }
        out.truncate(out_off);
        Ok(Pull::Data(out.into()))
    }
}

/// `deflate` with a zlib header (RFC 1950: method 8, window ≤ 32 KiB, header check).
fn looks_zlib(b0: u8, b1: u8) -> bool {
    b0 & 0x0F == 8 && (b0 >> 4) <= 7 && (u16::from(b0) << 8 | u16::from(b1)) % 31 == 0
}

/// The compressed input pushed so far, read by the decoders. Empty but not ended, it answers
/// `WouldBlock`, which flate2's decoders keep their state through.
#[derive(Default)]
struct Feed {
    chunks: VecDeque<Bytes>,
    ended: bool,
}

impl Feed {
    fn push(&mut self, chunk: Bytes) {
        if !chunk.is_empty() {
            self.chunks.push_back(chunk);
        }
    }

    fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    fn front(&self) -> &[u8] {
        self.chunks.front().map_or(&[], |c| c)
    }

    fn peek2(&self) -> Option<[u8; 2]> {
        let mut bytes = self.chunks.iter().flat_map(|c| c.iter().copied());
        Some([bytes.next()?, bytes.next()?])
    }
}

impl Read for Feed {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for Feed {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        match self.chunks.front() {
            Some(c) => Ok(c),
            None if self.ended => Ok(&[]),
            None => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn consume(&mut self, amt: usize) {
        if let Some(c) = self.chunks.front_mut() {
            c.advance(amt.min(c.len()));
            if c.is_empty() {
                self.chunks.pop_front();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::io::Write;

    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn raw(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn br(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = brotli::CompressorWriter::new(&mut out, 4096, 9, 22);
        w.write_all(data).unwrap();
        drop(w);
        out
    }

    /// Decodes `encoded` pushed in chunks of `size`, pulling after each.
    fn decode(coding: Coding, encoded: &[u8], size: usize) -> Result<Vec<u8>, Corrupt> {
        let mut d = Decoder::new(coding);
        let mut out = Vec::new();
        let drain = |d: &mut Decoder, out: &mut Vec<u8>| -> Result<bool, Corrupt> {
            loop {
                match d.pull()? {
                    Pull::Data(b) => {
                        assert!(b.len() <= PIECE);
                        out.extend_from_slice(&b)
                    }
                    Pull::NeedInput => return Ok(false),
                    Pull::Done => return Ok(true),
                }
            }
        };
        for chunk in encoded.chunks(size.max(1)) {
            d.push(Bytes::copy_from_slice(chunk));
            assert!(!drain(&mut d, &mut out)?, "done before the input ended");
        }
        d.end();
        assert!(drain(&mut d, &mut out)?, "not done after the input ended");
        Ok(out)
    }

    fn sample() -> Vec<u8> {
        let mut s = Vec::new();
        for i in 0..3000 {
            writeln!(s, "{{\"line\":{i},\"card\":\"4111111111111111\"}}").unwrap();
        }
        s
    }

    #[test]
    fn every_coding_decodes_whatever_the_chunking() {
        let data = sample();
        for (coding, encoded) in [
            (Coding::Gzip, gzip(&data)),
            (Coding::Deflate, zlib(&data)),
            (Coding::Deflate, raw(&data)),
            (Coding::Br, br(&data)),
        ] {
            for size in [1, 7, 512, encoded.len()] {
                assert_eq!(decode(coding, &encoded, size).unwrap(), data, "{coding:?} in chunks of {size}");
            }
        }
    }

    #[test]
    fn every_gzip_member_is_decoded() {
        let mut two = gzip(b"first ");
        two.extend(gzip(b"second 4111111111111111"));
        assert_eq!(decode(Coding::Gzip, &two, 3).unwrap(), b"first second 4111111111111111");
    }

    #[test]
    fn a_bomb_comes_out_in_bounded_pieces() {
        let zeros = vec![0u8; 8 << 20];
        let encoded = gzip(&zeros);
        assert!(encoded.len() < 16 << 10);
        assert_eq!(decode(Coding::Gzip, &encoded, encoded.len()).unwrap().len(), zeros.len());
    }

    #[test]
    fn corrupt_truncated_and_trailing_data_are_errors() {
        let data = sample();
        for (coding, encoded) in [(Coding::Gzip, gzip(&data)), (Coding::Br, br(&data)), (Coding::Deflate, zlib(&data))]
        {
            let mut trailing = encoded.clone();
            trailing.extend_from_slice(b"junk");
            assert!(decode(coding, &trailing, 100).is_err(), "{coding:?} with data after its end");
            let mut flipped = encoded.clone();
            let mid = flipped.len() / 2;
            flipped[mid] ^= 0xff;
            let decoded = decode(coding, &flipped, 100);
            assert!(decoded.as_ref().map_or(true, |d| *d != data), "{coding:?} corrupt yet decoded as the original");
        }
        for (coding, encoded) in [(Coding::Gzip, gzip(&data)), (Coding::Br, br(&data))] {
            assert!(decode(coding, &encoded[..encoded.len() - 5], 100).is_err(), "{coding:?} truncated");
        }
        assert!(decode(Coding::Gzip, b"not gzip at all", 4).is_err());
        assert!(decode(Coding::Br, &[0xff; 64], 4).is_err());
    }

    #[test]
    fn an_empty_answer_decodes_to_nothing() {
        for coding in [Coding::Gzip, Coding::Deflate, Coding::Br] {
            let mut d = Decoder::new(coding);
            d.push(Bytes::new());
            assert_eq!(d.pull().unwrap(), Pull::NeedInput, "{coding:?}");
            d.end();
            assert_eq!(d.pull().unwrap(), Pull::Done, "{coding:?}");
        }
    }

    #[test]
    fn codings_are_read_from_the_headers() {
        let of = |values: &[&str]| {
            let mut h = http::HeaderMap::new();
            for v in values {
                h.append(CONTENT_ENCODING, v.parse().unwrap());
            }
            Coding::of(&h)
        };
        assert_eq!(of(&[]).unwrap(), None);
        assert_eq!(of(&["identity"]).unwrap(), None);
        assert_eq!(of(&["GZIP"]).unwrap(), Some(Coding::Gzip));
        assert_eq!(of(&["x-gzip"]).unwrap(), Some(Coding::Gzip));
        assert_eq!(of(&[" br "]).unwrap(), Some(Coding::Br));
        assert_eq!(of(&["deflate"]).unwrap(), Some(Coding::Deflate));
        assert!(of(&["zstd"]).is_err());
        assert!(of(&["gzip, br"]).is_err());
        assert!(of(&["gzip", "gzip"]).is_err());
    }
}
