//! `payguard.toml`: bytes -> UTF-8 (lossy) -> `payguard::config::Config::parse(text, None)`.
//! Any `Err(diagnostics)` is fine; a panic is a bug.

pub fn run(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match payguard::config::Config::parse(&text, None) {
        Ok(config) => {
            let _ = format!("{config:?}");
        }
        Err(diags) => {
            for d in &diags {
                let _ = d.to_string();
            }
        }
    }
}
