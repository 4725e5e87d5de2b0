//! `payguard::route::normalize_path`: never panics, and when it accepts a path the result is
//! canonical: absolute, no empty/`.`/`..` segments (a trailing `/` is kept), no backslash,
//! and normalizing it again gives the same string (idempotence). A non-idempotent result
//! means two spellings of one path could route differently.
use payguard::route::normalize_path;

pub fn run(data: &[u8]) {
    let input = String::from_utf8_lossy(data);
    let Ok(once) = normalize_path(&input) else { return };
    let once: &str = &once;
    assert!(once.starts_with('/'), "normalized path is not absolute: {once:?} (from {input:?})");
    assert!(!once.contains('\\'), "normalized path has a backslash: {once:?} (from {input:?})");
    let segments: Vec<&str> = once[1..].split('/').collect();
    for (i, seg) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        assert!(
            !(seg.is_empty() && !last && once != "/"),
            "normalized path has an empty segment: {once:?} (from {input:?})"
        );
        assert!(*seg != "." && *seg != "..", "normalized path has a dot segment: {once:?} (from {input:?})");
    }
    match normalize_path(once) {
        Ok(twice) => assert_eq!(&*twice, once, "normalize_path is not idempotent for {input:?}"),
        Err(e) => panic!("normalize_path accepted {input:?} as {once:?} but rejects that: {e}"),
    }
}
