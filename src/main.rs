//! The `payguard` command: `run` the proxy, `check` its configuration, and the rule authors'
//! tools: `explain` one request, `test` rule test files, `sign` a test callback.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

// Allocation is a tenth of the per-request CPU with glibc's malloc (see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use payguard::config::Config;

#[derive(Parser)]
#[command(name = "payguard", version, about = "A TLS-terminating reverse proxy that guards payment APIs.", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (the default). Without --config, ./payguard.toml is used when present,
    /// else built-in defaults: listen on 127.0.0.1:8443 with a dev certificate, forward to
    /// http://127.0.0.1:3000, rules from ./rules.
    Run {
        /// Path to payguard.toml.
        #[arg(short, long, env = "PAYGUARD_CONFIG")]
        config: Option<PathBuf>,
        /// Worker threads (default: one per core).
        #[arg(long, env = "PAYGUARD_THREADS")]
        threads: Option<usize>,
    },
    /// Validate the config and every rule file; print each problem as file:line:col: message.
    /// Exits 0 when everything is valid, 1 otherwise.
    Check {
        /// Path to payguard.toml.
        #[arg(short, long, env = "PAYGUARD_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Decide one request offline: the route, every guard's decision and why, the answer.
    /// No backend is contacted (a stand-in answers 200 {}); signatures are really verified;
    /// shared state starts empty. Exits 0 whatever the decision, 2 on bad arguments.
    Explain {
        /// Path to payguard.toml.
        #[arg(short, long, env = "PAYGUARD_CONFIG")]
        config: Option<PathBuf>,
        /// Print one JSON object instead of the report.
        #[arg(long)]
        json: bool,
        /// GET, POST, …
        method: String,
        /// https://host/path?query, or /path?query (host: localhost unless -H Host is given).
        url: String,
        /// A request header, as 'Name: value' (repeatable).
        #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
        headers: Vec<String>,
        /// The request body: a file, or - for standard input.
        #[arg(long, value_name = "FILE|-")]
        body: Option<PathBuf>,
        /// The client's address.
        #[arg(long, default_value = "127.0.0.1", value_name = "IP")]
        from: std::net::IpAddr,
    },
    /// Run rule tests (TOML files of cases, docs/rules.md): each failure as file:line with
    /// expected and got, then "N passed, N failed". Exits 1 on any failure.
    Test {
        /// Path to payguard.toml.
        #[arg(short, long, env = "PAYGUARD_CONFIG")]
        config: Option<PathBuf>,
        /// Test files or directories (default: the tests/ directory of the rules directory).
        paths: Vec<PathBuf>,
    },
    /// Print the headers (and, for providers that sign the body, the signed body after a
    /// blank line) of a validly signed test callback, with the current time and a fresh nonce.
    Sign {
        /// stripe, standard-webhooks, hmac, adyen-hmac, wechatpay-v3 or alipay-rsa2.
        #[arg(long)]
        provider: String,
        /// The shared secret, as env:NAME or file:path (as in rule files).
        #[arg(long, required_unless_present = "private_key", conflicts_with = "private_key")]
        secret: Option<String>,
        /// An RSA private key (PEM) for wechatpay-v3 and alipay-rsa2.
        #[arg(long, value_name = "FILE")]
        private_key: Option<PathBuf>,
        /// The key id: WeChat Pay's certificate serial or public key id; hmac's key id.
        #[arg(long)]
        key_id: Option<String>,
        /// The callback body: a file, or - for standard input (default: empty).
        #[arg(long, value_name = "FILE|-")]
        body: Option<PathBuf>,
    },
}

fn config_path(given: Option<PathBuf>) -> Option<PathBuf> {
    given.or_else(|| Path::new("payguard.toml").exists().then(|| PathBuf::from("payguard.toml")))
}

fn main() -> ExitCode {
    no_huge_pages();
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run { config: None, threads: None }) {
        Command::Check { config } => check(config_path(config).as_deref()),
        Command::Run { config, threads } => run(config_path(config).as_deref(), threads),
        Command::Explain { config, json, method, url, headers, body, from } => {
            let probe = match probe(&method, &url, &headers, body.as_deref(), from) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("payguard explain: {e}");
                    return ExitCode::from(2);
                }
            };
            explain(config_path(config).as_deref(), &probe, json)
        }
        Command::Test { config, paths } => rule_tests(config_path(config).as_deref(), paths),
        Command::Sign { provider, secret, private_key, key_id, body } => {
            match sign(&provider, secret.as_deref(), private_key.as_deref(), key_id.as_deref(), body.as_deref()) {
                Ok(text) => print_out(&text),
                Err(e) => {
                    eprintln!("payguard sign: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
    }
}

/// Opts this process out of transparent huge pages. mimalloc reserves its heap in 1 GiB arenas;
/// with huge pages every 2 MiB of them that is touched becomes resident whole: an idle payguard
/// held 30 MiB instead of 15, and a busy one 98 MiB instead of 58. CPU per request measured the
/// same without them (BENCHMARKS.md, "Handshakes with ECDSA P-256, idle memory, idle
/// connections"). The mimalloc feature `no_thp` stops its own request for them; this covers
/// hosts where the kernel gives them unasked (`always`).
fn no_huge_pages() {
    #[cfg(target_os = "linux")]
    #[allow(unsafe_code)]
    // SAFETY: PR_SET_THP_DISABLE reads no memory; it sets a flag on this process. A kernel
    // without it returns an error, which changes nothing.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

/// Reads a body argument: a file, `-` for standard input, or nothing.
fn read_body(body: Option<&Path>) -> anyhow::Result<bytes::Bytes> {
    use anyhow::Context as _;
    Ok(match body {
        None => bytes::Bytes::new(),
        Some(p) if p == Path::new("-") => {
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf).context("cannot read the body from stdin")?;
            buf.into()
        }
        Some(p) => std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?.into(),
    })
}

/// `payguard sign`: the signed callback's headers as `Name: value` lines, then the signed body
/// when signing changed it.
fn sign(
    provider: &str,
    secret: Option<&str>,
    private_key: Option<&Path>,
    key_id: Option<&str>,
    body: Option<&Path>,
) -> anyhow::Result<String> {
    use anyhow::Context as _;
    use payguard::signature::sign::{self, SigningKey};
    let key = match (secret, private_key) {
        // As in rule files: never the secret itself, which shell history and `ps` would show.
        (Some(spec), _) => {
            SigningKey::Secret(payguard::files::resolve_secret(spec, Path::new(".")).map_err(anyhow::Error::msg)?)
        }
        (None, Some(path)) => {
            let pem = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            SigningKey::rsa_pem(&pem)?
        }
        (None, None) => anyhow::bail!("give --secret or --private-key"),
    };
    let body = read_body(body)?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let req = sign::Unsigned { method: "POST", path: "/", query: None, body: &body };
    let signed = sign::sign(provider, None, &key, key_id, &req, i64::try_from(now)?)?;
    let mut out = String::new();
    for (name, value) in &signed.headers {
        out.push_str(&format!("{name}: {value}\n"));
    }
    if let Some(body) = &signed.body {
        out.push('\n');
        out.push_str(&String::from_utf8_lossy(body));
        out.push('\n');
    }
    Ok(out)
}

/// A request from `explain`'s arguments.
fn probe(
    method: &str,
    url: &str,
    headers: &[String],
    body: Option<&Path>,
    from: std::net::IpAddr,
) -> anyhow::Result<payguard::offline::Probe> {
    use anyhow::Context as _;
    let method = http::Method::from_bytes(method.as_bytes()).context("invalid method")?;
    let headers = headers
        .iter()
        .map(|h| {
            let (name, value) = h.split_once(':').with_context(|| format!("header {h:?} is not 'Name: value'"))?;
            let name =
                http::HeaderName::try_from(name.trim()).with_context(|| format!("invalid header name in {h:?}"))?;
            let value =
                http::HeaderValue::try_from(value.trim()).with_context(|| format!("invalid header value in {h:?}"))?;
            Ok((name, value))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let body = read_body(body)?;
    Ok(payguard::offline::Probe { method, url: url.to_string(), headers, body, from, backend: Default::default() })
}

/// The configuration, or its problems printed.
fn load_config(path: Option<&Path>) -> Option<Config> {
    match Config::load(path) {
        Ok(c) => Some(c),
        Err(problems) => {
            for p in &problems {
                eprintln!("{p}");
            }
            None
        }
    }
}

/// A runtime on this thread, for the offline commands.
fn current_thread() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("cannot start runtime: {e}");
            None
        }
    }
}

/// `payguard test`: runs the rule tests in `paths` (default: `<rules dir>/tests`).
fn rule_tests(path: Option<&Path>, paths: Vec<PathBuf>) -> ExitCode {
    let Some(config) = load_config(path) else { return ExitCode::FAILURE };
    let Some(rt) = current_thread() else { return ExitCode::FAILURE };
    let paths = if paths.is_empty() { vec![config.rules.dir.join("tests")] } else { paths };
    let (files, errors) = payguard::ruletest::collect(&paths);
    for e in &errors {
        eprintln!("{e}");
    }
    if files.is_empty() {
        eprintln!(
            "payguard test: no test files (*.toml) in {}",
            paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        );
        return ExitCode::FAILURE;
    }
    let report = rt.block_on(async {
        let offline = payguard::offline::Offline::new(config).await?;
        Ok::<_, payguard::offline::OfflineError>(payguard::ruletest::run(&offline, &files).await)
    });
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            eprintln!("payguard test: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut text = String::new();
    for line in &report.lines {
        text.push_str(line);
        text.push('\n');
    }
    text.push_str(&report.summary());
    text.push('\n');
    match print_out(&text) {
        _ if report.failed > 0 || !errors.is_empty() => ExitCode::FAILURE,
        code => code,
    }
}

/// `payguard explain`: decides `probe` against the configured rules and prints the report.
fn explain(path: Option<&Path>, probe: &payguard::offline::Probe, json: bool) -> ExitCode {
    let Some(config) = load_config(path) else { return ExitCode::FAILURE };
    let Some(rt) = current_thread() else { return ExitCode::FAILURE };
    let decided = rt.block_on(async {
        let offline = payguard::offline::Offline::new(config).await?;
        let decision = offline.session().decide(probe).await;
        decision
    });
    let decision = match decided {
        Ok(d) => d,
        Err(e @ payguard::offline::OfflineError::Request(_)) => {
            eprintln!("payguard explain: {e}");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("payguard explain: {e}");
            return ExitCode::FAILURE;
        }
    };
    let text = if json {
        let mut v = serde_json::to_value(&decision).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.insert("added_headers".into(), serde_json::json!(decision.added_headers(&probe.headers)));
        }
        format!("{v:#}\n")
    } else {
        decision.render(&probe.headers)
    };
    print_out(&text)
}

/// Writes `text` to stdout; a stdout that cannot be written is an error exit, not a panic.
fn print_out(text: &str) -> ExitCode {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if out.write_all(text.as_bytes()).and_then(|()| out.flush()).is_err() {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// Prints `payguard check`'s report. A stdout that cannot be written (a full disk, a closed
/// pipe) is an error exit, not a panic as `println!` would make it.
fn check(path: Option<&Path>) -> ExitCode {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let (lines, problems) = match payguard::check(path) {
        Ok(summary) => (vec![summary], 0),
        Err(problems) => (problems.iter().map(ToString::to_string).collect(), problems.len()),
    };
    for line in lines {
        if writeln!(out, "{line}").is_err() {
            return ExitCode::FAILURE;
        }
    }
    if out.flush().is_err() {
        return ExitCode::FAILURE;
    }
    if problems > 0 {
        let _ = writeln!(std::io::stderr(), "{problems} problem(s) found");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn run(path: Option<&Path>, threads: Option<usize>) -> ExitCode {
    let Some(config) = load_config(path) else { return ExitCode::FAILURE };
    // Held until run() returns: dropping it flushes the log queue.
    let _log = payguard::telemetry::init(&config.log);
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(n) = threads {
        rt.worker_threads(n.max(1));
    }
    let rt = match rt.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(target: "payguard", error = %e, "payguard failed to start");
            eprintln!("payguard: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    // Install the signal handlers before anything listens: a SIGTERM that arrived before them
    // would kill the process with requests in flight.
    let mut signals = Signals::install()?;
    let running = payguard::start(config).await?;
    let token = running.shutdown_token();
    let reloader = running.reloader.clone();
    tokio::spawn(async move {
        while let Signal::Reload = signals.recv().await {
            tracing::info!(target: "payguard", "SIGHUP: reloading rules and certificates");
            reloader.request();
        }
        tracing::info!(target: "payguard", "shutdown signal received; draining");
        token.cancel();
    });
    running.wait().await;
    tracing::info!(target: "payguard", "stopped");
    Ok(())
}

struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    hup: tokio::signal::unix::Signal,
}

enum Signal {
    /// SIGTERM, SIGINT: drain and stop.
    Stop,
    /// SIGHUP: reload rules and certificates.
    Reload,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Signals {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
                hup: signal(SignalKind::hangup())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    async fn recv(&mut self) -> Signal {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => Signal::Stop,
            _ = self.int.recv() => Signal::Stop,
            _ = self.hup.recv() => Signal::Reload,
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            Signal::Stop
        }
    }
}
