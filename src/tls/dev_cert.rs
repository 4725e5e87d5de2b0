//! A self-signed certificate for trying payguard out. Never for production: it is logged loudly.

use std::path::{Path, PathBuf};

use super::TlsError;

/// Returns `dir/dev.crt` and `dir/dev.key`, generating them first if either is missing.
pub fn ensure_dev_cert(dir: &Path) -> Result<(PathBuf, PathBuf), TlsError> {
    let cert = dir.join("dev.crt");
    let key = dir.join("dev.key");
    tracing::warn!(
        target: "payguard::tls",
        cert = %cert.display(),
        "NO tls_cert/tls_key CONFIGURED: serving a self-signed development certificate. Clients will not trust it; configure [server] tls_cert and tls_key for production."
    );
    if cert.exists() && key.exists() {
        restrict(&key)?;
        return Ok((cert, key));
    }
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
    let generated = rcgen::generate_simple_self_signed(names).map_err(|e| TlsError::DevCert(e.to_string()))?;
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Read { path: dir.into(), source })?;
    write_private(&key, generated.key_pair.serialize_pem().as_bytes())?;
    std::fs::write(&cert, generated.cert.pem()).map_err(|source| TlsError::Read { path: cert.clone(), source })?;
    Ok((cert, key))
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), TlsError> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(|source| TlsError::Read { path: path.into(), source })?;
    // `mode` applies only when the file is created: an existing one keeps its mode otherwise.
    restrict(path)?;
    f.write_all(data).map_err(|source| TlsError::Read { path: path.into(), source })
}

/// The private key is readable by its owner only (0600), whatever mode an existing file had.
fn restrict(path: &Path) -> Result<(), TlsError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let err = |source| TlsError::Read { path: path.into(), source };
        let mode = std::fs::metadata(path).map_err(err)?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(target: "payguard::tls", key = %path.display(), mode = format!("{:o}", mode & 0o777), "development key was readable by others; set to 0600");
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn generates_once_and_reuses() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = ensure_dev_cert(&dir.path().join("certs")).unwrap();
        let first = std::fs::read(&c).unwrap();
        let provider = crate::tls::provider();
        crate::tls::load_certified_key(&c, &k, &provider).unwrap();
        let (c2, _) = ensure_dev_cert(&dir.path().join("certs")).unwrap();
        assert_eq!(first, std::fs::read(c2).unwrap());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&k).unwrap().permissions().mode() & 0o777, 0o600);
            // A key left world-readable (an old checkout, a copy) is tightened on the next start.
            std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o644)).unwrap();
            ensure_dev_cert(&dir.path().join("certs")).unwrap();
            assert_eq!(std::fs::metadata(&k).unwrap().permissions().mode() & 0o777, 0o600);
            std::fs::remove_file(&c).unwrap();
            std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o666)).unwrap();
            ensure_dev_cert(&dir.path().join("certs")).unwrap();
            assert_eq!(std::fs::metadata(&k).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }
}
