//! `payguard::card`: the scanner never panics; what it finds is the same however the input is
//! split into chunks (the first byte picks the split size); every hit is 13–19 digits inside
//! the input; masking as a stream gives exactly the whole input masked in place, of the same
//! length, and scanning that finds no card number any more (chunks passed as slices or as
//! `Bytes`, copied or not); a JSON masker gives the same output whatever the chunks, and leaves
//! no card number either.
use bytes::Bytes;
use payguard::card::{find_all, mask, Masker, Scanner};

pub fn run(data: &[u8]) {
    let Some((&knob, input)) = data.split_first() else { return };
    let whole = find_all(input);
    for h in &whole {
        assert!((13..=19).contains(&h.len), "hit of {} digits", h.len);
        assert!(h.start < h.end && h.end <= input.len() as u64, "hit outside the input: {h:?}");
    }
    let size = usize::from(knob % 64) + 1;
    let mut chunked = Vec::new();
    let mut s = Scanner::new();
    for c in input.chunks(size) {
        s.feed(c, |h| chunked.push(h));
    }
    s.finish(|h| chunked.push(h));
    assert_eq!(chunked, whole, "chunks of {size} found something else");

    let mut in_place = input.to_vec();
    for h in &whole {
        let (Ok(a), Ok(b)) = (usize::try_from(h.start), usize::try_from(h.end)) else { return };
        mask(&mut in_place[a..b], h.len);
    }
    let through = |mut m: Masker, size: usize| {
        let mut out = Vec::new();
        for (i, c) in input.chunks(size).enumerate() {
            let released =
                if (usize::from(knob >> 6) + i) % 2 == 0 { m.push(c) } else { m.push_bytes(Bytes::copy_from_slice(c)) };
            out.extend(released.unwrap_or_default());
        }
        out.extend(m.finish().unwrap_or_default());
        (out, m.found().0)
    };
    let (streamed, found) = through(Masker::new(), size);
    assert_eq!(streamed, in_place, "streamed masking differs from masking in place");
    assert_eq!(found, whole.len());
    assert!(find_all(&streamed).is_empty(), "a card number survived masking");

    let (json_whole, _) = through(Masker::json(), input.len().max(1));
    let (json_chunked, _) = through(Masker::json(), size);
    assert_eq!(json_chunked, json_whole, "JSON masking in chunks of {size} differs");
    assert!(find_all(&json_chunked).is_empty(), "a card number survived JSON masking");
}
