//! Rule files: bytes -> UTF-8 (lossy) -> `payguard::rules::load_sources`.
//!
//! An input containing a NUL byte is split at the first NUL into two rule files, so
//! cross-file checks (duplicate route names, `@ip_set` references, `[defaults]` in two
//! files) are exercised too. Any `Err(diagnostics)` is fine; a panic is a bug.
//!
//! Note: rule files may name other files (`json_schema = "..."`, signature keys as
//! `file:...`, secrets as `env:`/`file:`); those resolve against the current directory,
//! exactly as `load_sources` does in production.
use std::path::PathBuf;

const SEPARATOR: u8 = 0;

pub fn run(data: &[u8]) {
    let files: Vec<(PathBuf, String)> = match data.iter().position(|&b| b == SEPARATOR) {
        Some(at) => vec![
            (PathBuf::from("f.toml"), String::from_utf8_lossy(&data[..at]).into_owned()),
            (PathBuf::from("g.toml"), String::from_utf8_lossy(&data[at + 1..]).into_owned()),
        ],
        None => vec![(PathBuf::from("f.toml"), String::from_utf8_lossy(data).into_owned())],
    };
    match payguard::rules::load_sources(&files) {
        Ok(set) => {
            // Touch the compiled result the way the proxy does.
            for route in set.routes() {
                let _ = route.allow_header();
                let _ = route.needs_body();
            }
            let _ = set.route(Some("example.com"), "/", &http::Method::GET);
        }
        Err(diags) => {
            // Diagnostics are rendered for the operator: formatting must not panic either.
            for d in &diags {
                let _ = d.to_string();
            }
        }
    }
}
