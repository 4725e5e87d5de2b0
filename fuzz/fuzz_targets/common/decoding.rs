//! `payguard::decoding`: whatever bytes arrive under `content-encoding` gzip, deflate or br, the
//! decoder never panics, never gives a piece larger than `PIECE`, and ends in `Done` or an error
//! once the input has ended; the same input split otherwise decodes to the same bytes (or fails
//! too). The first byte picks the coding and the chunk size; the rest is the compressed input.
use bytes::Bytes;
use payguard::decoding::{Coding, Corrupt, Decoder, Pull, PIECE};

/// Decoded output of `input` pushed in chunks of `size`, at most `cap` bytes of it.
fn decode(coding: Coding, input: &[u8], size: usize, cap: usize) -> Result<Vec<u8>, Corrupt> {
    let mut d = Decoder::new(coding);
    let mut out = Vec::new();
    let mut chunks = input.chunks(size);
    loop {
        match d.pull()? {
            Pull::Data(piece) => {
                assert!(!piece.is_empty() && piece.len() <= PIECE, "a piece of {} bytes", piece.len());
                out.extend_from_slice(&piece);
                if out.len() > cap {
                    return Ok(out);
                }
            }
            Pull::NeedInput => match chunks.next() {
                Some(c) => d.push(Bytes::copy_from_slice(c)),
                None => d.end(),
            },
            Pull::Done => {
                assert!(chunks.next().is_none(), "done before the input ended");
                return Ok(out);
            }
        }
    }
}

pub fn run(data: &[u8]) {
    let Some((&knob, input)) = data.split_first() else { return };
    let coding = [Coding::Gzip, Coding::Deflate, Coding::Br][usize::from(knob % 3)];
    let size = usize::from(knob / 3) % 64 + 1;
    // A bomb in a fuzz input decodes a long way: stop after 4 MiB.
    let cap = 4 << 20;
    let whole = decode(coding, input, input.len().max(1), cap);
    let split = decode(coding, input, size, cap);
    match (whole, split) {
        (Ok(a), Ok(b)) => assert!(a.len() > cap || b.len() > cap || a == b, "chunks of {size} decode otherwise"),
        (Err(_), Err(_)) => {}
        (a, b) => panic!("whole {:?} but in chunks of {size} {:?}", a.map(|v| v.len()), b.map(|v| v.len())),
    }
}
