//! `[state] redis_url` values: checked when the configuration loads, and redacted wherever they
//! are shown.

use redis::IntoConnectionInfo;

/// A URL for logs: any user and password replaced.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
        _ => url.to_string(),
    }
}

/// Checks one URL the way the client will read it (scheme, host, port, database).
pub fn check_url(url: &str) -> Result<(), String> {
    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
        return Err("expected a redis:// or rediss:// URL".into());
    }
    if url.contains('#') {
        // The client reads `#insecure` as "skip certificate checks", which this build cannot do:
        // every connection would fail, and only the logs would say why.
        return Err("a URL fragment (#insecure) is not supported: the server certificate is always verified \
                    against the system's trusted roots"
            .into());
    }
    url.into_connection_info().map(|_| ()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn urls_are_redacted_for_logs() {
        assert_eq!(redact("redis://user:pw@r.example:6379/0"), "redis://***@r.example:6379/0");
        assert_eq!(redact("rediss://:pw@r.example"), "rediss://***@r.example");
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }

    #[test]
    fn url_check() {
        assert!(check_url("redis://127.0.0.1:6379").is_ok());
        assert!(check_url("rediss://cache.example:6380/2").is_ok());
        assert!(check_url("redis://127.0.0.1:notaport").is_err());
        assert!(check_url("http://127.0.0.1:6379").is_err());
        assert!(check_url("127.0.0.1:6379").is_err());
        assert!(check_url("rediss://cache.example:6380/2#insecure").unwrap_err().contains("always verified"));
    }
}
