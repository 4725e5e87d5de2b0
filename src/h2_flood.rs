//! HTTP/2 control-frame floods, seen on a connection's raw (decrypted) bytes.
//!
//! Every SETTINGS and PING frame a client sends costs the server an answer (an ACK). The h2
//! crate answers each one and reads no further until the answer is written, so a flood cannot
//! pile up memory, but it can keep a core busy for as long as the client likes (CVE-2019-9512
//! and -9515). Like nginx's and Envoy's flood limits, this counts those frames per connection
//! and closes the connection past a budget: a browser sends a handful, a client probing its
//! window a few per second.

use std::time::{Duration, Instant};

/// Frame types that cost an answer (RFC 9113 §6.5, §6.7).
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const ACK: u8 = 0x1;

/// The client connection preface (RFC 9113 §3.4), skipped unseen: h2 checks it.
const PREFACE_LEN: u8 = 24;

/// Past the budget: the connection must close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flood;

/// Follows the frame headers of a client's HTTP/2 byte stream and counts control frames in fixed
/// windows of [`ControlFrames::WINDOW`].
#[derive(Debug)]
pub struct ControlFrames {
    limit: u32,
    preface_left: u8,
    head: [u8; 9],
    head_len: u8,
    /// Payload bytes of the current frame not seen yet.
    skip: u32,
    window: Option<(Instant, u32)>,
    flooded: bool,
}

impl ControlFrames {
    pub const WINDOW: Duration = Duration::from_secs(10);

    pub fn new(limit: u32) -> Self {
        ControlFrames {
            limit,
            preface_left: PREFACE_LEN,
            head: [0; 9],
            head_len: 0,
            skip: 0,
            window: None,
            flooded: false,
        }
    }

    /// Sees the next bytes the client sent.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<(), Flood> {
        if self.flooded {
            return Err(Flood);
        }
        while !bytes.is_empty() {
            if self.preface_left > 0 {
                let n = bytes.len().min(usize::from(self.preface_left));
                self.preface_left -= n as u8;
                bytes = &bytes[n..];
            } else if self.skip > 0 {
                let n = bytes.len().min(self.skip as usize);
                self.skip -= n as u32;
                bytes = &bytes[n..];
            } else {
                let have = usize::from(self.head_len);
                let n = bytes.len().min(9 - have);
                self.head[have..have + n].copy_from_slice(&bytes[..n]);
                self.head_len += n as u8;
                bytes = &bytes[n..];
                if self.head_len == 9 {
                    self.head_len = 0;
                    self.skip = u32::from_be_bytes([0, self.head[0], self.head[1], self.head[2]]);
                    let (kind, flags) = (self.head[3], self.head[4]);
                    if matches!(kind, SETTINGS | PING) && flags & ACK == 0 {
                        self.count()?;
                    }
                }
            }
        }
        Ok(())
    }

    fn count(&mut self) -> Result<(), Flood> {
        let now = Instant::now();
        let w = match &mut self.window {
            Some(w) if now.duration_since(w.0) < Self::WINDOW => w,
            w => w.insert((now, 0)),
        };
        w.1 += 1;
        if w.1 > self.limit {
            self.flooded = true;
            return Err(Flood);
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let len = (payload.len() as u32).to_be_bytes();
        let mut f = vec![len[1], len[2], len[3], kind, flags, 0, 0, 0, 0];
        f.extend_from_slice(payload);
        f
    }

    fn stream(pings: usize, settings: usize) -> Vec<u8> {
        let mut s = PREFACE.to_vec();
        for _ in 0..settings {
            s.extend(frame(SETTINGS, 0, &[0, 4, 0, 0, 255, 255]));
            s.extend(frame(SETTINGS, ACK, &[]));
        }
        // HEADERS and DATA frames, whose payloads may look like anything, are not counted.
        s.extend(frame(0x1, 0x4, &frame(PING, 0, &[0; 8])));
        s.extend(frame(0x0, 0x1, &[PING; 300]));
        for _ in 0..pings {
            s.extend(frame(PING, 0, &[1; 8]));
            s.extend(frame(PING, ACK, &[1; 8]));
        }
        s
    }

    #[test]
    fn counts_settings_and_pings_up_to_the_limit() {
        let mut c = ControlFrames::new(10);
        assert_eq!(c.feed(&stream(5, 5)), Ok(()));
        let mut c = ControlFrames::new(10);
        assert_eq!(c.feed(&stream(6, 5)), Err(Flood));
        // Once flooded, it stays so.
        assert_eq!(c.feed(b""), Err(Flood));
    }

    #[test]
    fn frames_split_across_reads_at_every_byte() {
        let bytes = stream(11, 0);
        for split in 1..bytes.len() {
            let mut c = ControlFrames::new(10);
            let first = c.feed(&bytes[..split]);
            let second = c.feed(&bytes[split..]);
            assert_eq!((first.and(second)), Err(Flood), "split at {split}");
        }
        let mut c = ControlFrames::new(10);
        let ok = stream(10, 0);
        assert!(ok.iter().all(|b| c.feed(std::slice::from_ref(b)).is_ok()));
    }

    #[test]
    fn a_new_window_starts_a_new_count() {
        let mut c = ControlFrames::new(2);
        c.feed(PREFACE).unwrap();
        c.feed(&frame(PING, 0, &[0; 8])).unwrap();
        c.feed(&frame(PING, 0, &[0; 8])).unwrap();
        // The window began more than WINDOW ago: the count restarts.
        c.window = c.window.map(|(t, n)| (t.checked_sub(ControlFrames::WINDOW).unwrap_or(t), n));
        c.feed(&frame(PING, 0, &[0; 8])).unwrap();
        c.feed(&frame(PING, 0, &[0; 8])).unwrap();
        assert_eq!(c.feed(&frame(PING, 0, &[0; 8])), Err(Flood));
    }
}
