//! Reading the files operators point payguard at (rules, schemas, keys, certificates), with a
//! size cap: a path that names `/dev/zero`, a FIFO or a runaway file must give an error, not
//! exhaust memory or hang a reload.

use std::io::{self, Read};
use std::path::Path;

/// The largest config, rule, schema, key or certificate file payguard reads.
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// Reads a regular file of at most `limit` bytes.
pub fn read_limited(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let file = std::fs::File::open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"));
    }
    let mut buf = Vec::new();
    file.take(limit + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > limit {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("larger than {limit} bytes")));
    }
    Ok(buf)
}

/// [`read_limited`] with the default cap.
pub fn read(path: &Path) -> io::Result<Vec<u8>> {
    read_limited(path, MAX_FILE_BYTES)
}

/// A secret reference: `env:NAME` (the variable's value) or `file:path` (the file's contents;
/// a relative path resolves against `base_dir`), trimmed of surrounding ASCII whitespace.
/// Inline values are refused, so no secret is ever written into a config or rule file. Errors
/// never contain the secret.
pub fn resolve_secret(spec: &str, base_dir: &Path) -> Result<Vec<u8>, String> {
    let raw = if let Some(name) = spec.strip_prefix("env:") {
        std::env::var_os(name).ok_or_else(|| format!("environment variable {name} is not set"))?.into_encoded_bytes()
    } else if let Some(path) = spec.strip_prefix("file:") {
        let full = base_dir.join(path);
        read(&full).map_err(|e| format!("cannot read {}: {e}", full.display()))?
    } else {
        return Err("secrets must be given as \"env:NAME\" or \"file:path\"".into());
    };
    Ok(raw.trim_ascii().to_vec())
}

/// [`read`] as UTF-8 text.
pub fn read_to_string(path: &Path) -> io::Result<String> {
    String::from_utf8(read(path)?).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not UTF-8 text"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn caps_size_and_refuses_devices() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"12345").unwrap();
        assert_eq!(read_limited(&p, 5).unwrap(), b"12345");
        assert!(read_limited(&p, 4).is_err());
        assert!(read(Path::new("/dev/zero")).is_err());
        assert!(read(dir.path()).is_err());
    }
}
