//! Logging: tracing with JSON output by default. Two record kinds with fixed targets so they can
//! be routed: `payguard::access` (one line per request) and `payguard::audit` (one line per guard
//! decision). Neither ever carries a header value, a query string or a body: those are where
//! secrets, tokens and card numbers travel; a card number inside the logged path is masked
//! ([`mask_card_numbers`]).
//!
//! Lines leave through a bounded, lossy queue drained by one writer thread ([`init`]): a log
//! consumer that stops reading (a full stdout pipe) or a full disk can never stall request
//! handling. What could not be written is counted (`payguard_log_lines_dropped_total`,
//! `payguard_log_write_errors_total`) instead of retried.

use std::borrow::Cow;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Lines that may wait for the writer thread. Past this the newest lines are dropped and
/// counted: a few MiB at most, and at 10k requests/s still a second of a stalled consumer.
pub const LOG_QUEUE_LINES: usize = 8_192;

/// Log lines dropped because the queue was full (the consumer did not keep up).
static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();
/// Log lines whose write failed (ENOSPC, EPIPE, ...).
static WRITE_ERRORS: AtomicU64 = AtomicU64::new(0);
/// When the write in progress started (ms since [`epoch`]), 0 when none is: tells a stuck
/// consumer (a full pipe blocks the write) from a busy one.
static WRITE_STARTED_MS: AtomicU64 = AtomicU64::new(0);

fn now_ms() -> u64 {
    static EPOCH: OnceLock<std::time::Instant> = OnceLock::new();
    // +1: 0 means "no write in progress".
    EPOCH.get_or_init(std::time::Instant::now).elapsed().as_millis() as u64 + 1
}

/// Whether a write to the log has been blocked for more than `for_ms`.
fn writer_stuck(for_ms: u64) -> bool {
    let started = WRITE_STARTED_MS.load(Ordering::Relaxed);
    started != 0 && now_ms().saturating_sub(started) > for_ms
}

/// Keeps the log writer thread running; on drop, flushes what is queued, bounded in time.
///
/// Bounded because the writer may be stuck for good (nobody reads the pipe), and the crate's
/// own guard then waits and finally prints to that same stuck stdout. So: with a stuck writer,
/// the queued lines are given up (they could not be written anyway); otherwise the guard is
/// dropped on a helper thread, waited for at most two seconds.
pub struct LogGuard(Option<WorkerGuard>);

impl Drop for LogGuard {
    fn drop(&mut self) {
        let Some(guard) = self.0.take() else { return };
        if writer_stuck(100) {
            std::mem::forget(guard);
            return;
        }
        let (done, wait) = std::sync::mpsc::channel();
        let flushing = std::thread::Builder::new().name("payguard-log-flush".into()).spawn(move || {
            drop(guard);
            let _ = done.send(());
        });
        if flushing.is_ok() {
            let _ = wait.recv_timeout(std::time::Duration::from_secs(2));
        }
    }
}

/// Log lines dropped so far because the log consumer did not keep up.
pub fn dropped_lines() -> u64 {
    DROPPED.get().map_or(0, |c| c.dropped_lines() as u64)
}

/// Log lines whose write failed so far.
pub fn write_errors() -> u64 {
    WRITE_ERRORS.load(Ordering::Relaxed)
}

/// Exposes [`dropped_lines`] and [`write_errors`] as `payguard_log_lines_dropped_total` and
/// `payguard_log_write_errors_total`.
#[derive(Debug)]
pub struct LogCollector;

impl Collector for LogCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counters = [
            ("log_lines_dropped", "Log lines dropped because the log consumer did not keep up", dropped_lines()),
            ("log_write_errors", "Log lines that could not be written (disk full, closed pipe)", write_errors()),
        ];
        for (name, help, value) in counters {
            let c = ConstCounter::new(value);
            let m = encoder.encode_descriptor(name, help, None, c.metric_type())?;
            c.encode(m)?;
        }
        Ok(())
    }
}

/// Where the writer thread puts lines: stdout, unbuffered (one write per line, so a failed
/// write loses that line only and nothing piles up in a buffer), each failure counted.
struct CountingWriter<W> {
    inner: W,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        WRITE_STARTED_MS.store(now_ms(), Ordering::Relaxed);
        let r = self.inner.write(buf);
        WRITE_STARTED_MS.store(0, Ordering::Relaxed);
        if matches!(&r, Err(e) if e.kind() != std::io::ErrorKind::Interrupted) {
            WRITE_ERRORS.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Our own handle on fd 1, bypassing std's line buffer (which would keep a failed line and
/// grow); falls back to `std::io::Stdout` where that is not possible.
fn stdout_sink() -> Box<dyn Write + Send> {
    #[cfg(unix)]
    {
        use std::os::fd::AsFd;
        if let Ok(fd) = std::io::stdout().as_fd().try_clone_to_owned() {
            return Box::new(std::fs::File::from(fd));
        }
    }
    Box::new(std::io::stdout())
}

/// Installs the global subscriber. `RUST_LOG` overrides the configured level when set.
///
/// Keep the returned guard for the life of the process: dropping it flushes the queue (at most
/// two seconds; not at all when the consumer is stuck) and stops the writer thread.
#[must_use = "dropping the guard stops the log writer"]
pub fn init(cfg: &LogConfig) -> LogGuard {
    // rustls warns per connection about things clients control (an IP address as SNI): keep
    // it to errors so no client can make payguard write a line per connection.
    let from_env = std::env::var(EnvFilter::DEFAULT_ENV).ok().filter(|s| crate::config::valid_log_filter(s));
    let filter = EnvFilter::new(from_env.unwrap_or_else(|| format!("{},rustls=error", cfg.level)));
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .thread_name("payguard-log")
        .finish(CountingWriter { inner: stdout_sink() });
    let dropped = writer.error_counter();
    let registry = tracing_subscriber::registry().with(filter);
    let result = match cfg.format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(false)
                    .with_writer(writer),
            )
            .try_init(),
        LogFormat::Pretty => registry.with(tracing_subscriber::fmt::layer().with_writer(writer)).try_init(),
    };
    // A subscriber already installed (tests, embedding) is fine: keep it.
    match result {
        Ok(()) => {
            let _ = DROPPED.set(dropped);
            LogGuard(Some(guard))
        }
        Err(_) => LogGuard(None),
    }
}

/// Masks every card number (PAN) in `path`: a run of 12–19 digits, optionally grouped by single
/// `-`, space or `%20`, that passes the Luhn check keeps its first 6 and last 4 digits (what
/// PCI DSS allows to be shown) and has the rest replaced by `*`. Borrowed when there is none.
pub fn mask_card_numbers(path: &str) -> Cow<'_, str> {
    let b = path.as_bytes();
    // Cheap exit: no run of 12 digits, not even with separators, means nothing to mask.
    if b.iter().filter(|c| c.is_ascii_digit()).count() < 12 {
        return Cow::Borrowed(path);
    }
    let mut out: Option<Vec<u8>> = None;
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_digit() || (i > 0 && b[i - 1].is_ascii_digit()) {
            i += 1;
            continue;
        }
        // A candidate starts here: digits, with single separators between digit groups.
        let mut digits: Vec<usize> = Vec::with_capacity(19);
        let mut j = i;
        let mut end = i;
        loop {
            if j < b.len() && b[j].is_ascii_digit() {
                digits.push(j);
                j += 1;
                end = j;
                continue;
            }
            let sep = separator_len(&b[j..]);
            if sep > 0 && j + sep < b.len() && b[j + sep].is_ascii_digit() && !digits.is_empty() {
                j += sep;
                continue;
            }
            break;
        }
        if (12..=19).contains(&digits.len()) && luhn(digits.iter().map(|&k| b[k] - b'0')) {
            let o = out.get_or_insert_with(|| b.to_vec());
            for &k in &digits[6..digits.len() - 4] {
                o[k] = b'*';
            }
        }
        i = end.max(i + 1);
    }
    match out {
        // Only ASCII digits were replaced by an ASCII byte: still UTF-8.
        Some(o) => Cow::Owned(String::from_utf8(o).unwrap_or_default()),
        None => Cow::Borrowed(path),
    }
}

fn separator_len(b: &[u8]) -> usize {
    match b {
        [b'-' | b' ', ..] => 1,
        [b'%', b'2', b'0', ..] => 3,
        _ => 0,
    }
}

/// The Luhn check over digits given most significant first.
fn luhn(digits: impl DoubleEndedIterator<Item = u8>) -> bool {
    let sum: u32 = digits
        .rev()
        .enumerate()
        .map(|(i, d)| {
            let d = u32::from(d);
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 {
                    x - 9
                } else {
                    x
                }
            } else {
                d
            }
        })
        .sum();
    sum % 10 == 0
}

/// What the access line says about one finished request.
pub struct AccessRecord<'a> {
    pub request_id: &'a str,
    /// The `x-request-id` an untrusted client sent (replaced by `request_id`).
    pub client_request_id: Option<&'a str>,
    pub client_ip: std::net::IpAddr,
    pub method: &'a http::Method,
    pub path: &'a str,
    pub version: http::Version,
    pub route: &'a str,
    pub status: u16,
    pub duration: std::time::Duration,
    /// Time from the request head to forwarding it: what the guards took. `None` when the
    /// request was not forwarded.
    pub guards: Option<std::time::Duration>,
    pub bytes_out: u64,
    pub completed: bool,
}

pub fn access(r: &AccessRecord<'_>) {
    tracing::info!(
        target: "payguard::access",
        request_id = r.request_id,
        client_request_id = r.client_request_id.map(mask_card_numbers).as_deref(),
        client_ip = %r.client_ip,
        method = %r.method,
        path = &*mask_card_numbers(r.path),
        version = ?r.version,
        route = r.route,
        status = r.status,
        duration_ms = r.duration.as_secs_f64() * 1000.0,
        guards_ms = r.guards.map(|d| d.as_secs_f64() * 1000.0),
        bytes = r.bytes_out,
        completed = r.completed,
    );
}

/// One guard decision, as the audit line records it.
pub struct Decision<'a> {
    pub request_id: &'a str,
    pub route: Option<&'a str>,
    pub client_ip: std::net::IpAddr,
    pub guard: &'static str,
    /// `block`, `would_block` (monitor mode) or `allow`.
    pub decision: &'static str,
    /// The stable reject code, e.g. `ip_denied`.
    pub reason: &'static str,
    /// Human text; must never contain request values.
    pub detail: &'a str,
    pub key_id: Option<&'a str>,
    pub skew_secs: Option<i64>,
    /// The guards the request had passed before this decision, in order (`ip,rate_limit`).
    pub passed: Option<&'a str>,
    /// Time from the request head to this decision.
    pub elapsed: Option<std::time::Duration>,
}

/// The target of every audit line.
pub const AUDIT_TARGET: &str = "payguard::audit";

pub fn audit(d: &Decision<'_>) {
    tracing::info!(
        target: AUDIT_TARGET,
        request_id = d.request_id,
        route = d.route,
        client_ip = %d.client_ip,
        guard = d.guard,
        decision = d.decision,
        reason = d.reason,
        detail = d.detail,
        key_id = d.key_id,
        skew_secs = d.skew_secs,
        passed = d.passed,
        elapsed_ms = d.elapsed.map(|e| e.as_secs_f64() * 1000.0),
    );
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn luhn_valid_card_numbers_in_paths_are_masked() {
        let cases = [
            ("/pay/4111111111111111", "/pay/411111******1111"),
            ("/pay/5500005555555559/confirm", "/pay/550000******5559/confirm"),
            ("/pay/378282246310005", "/pay/378282*****0005"),
            ("/pay/4111-1111-1111-1111", "/pay/4111-11**-****-1111"),
            ("/pay/4111%201111%201111%201111", "/pay/4111%2011**%20****%201111"),
            ("/pay/4111 1111 1111 1111", "/pay/4111 11** **** 1111"),
            // 12 and 19 digits, the bounds.
            ("/x/123456789015", "/x/123456**9015"),
            ("/x/4000000000000000006", "/x/400000*********0006"),
            // Two in one path.
            ("/a/4111111111111111/b/5500005555555559", "/a/411111******1111/b/550000******5559"),
        ];
        for (path, want) in cases {
            assert_eq!(mask_card_numbers(path), want, "{path}");
        }
    }

    #[test]
    fn other_paths_are_untouched() {
        for path in [
            "/",
            "/api/orders/12345",
            // Luhn-invalid 16 digits (an order number).
            "/orders/4111111111111112",
            // 11 and 20 digits: not a PAN length.
            "/x/12345678903",
            "/x/41111111111111111113",
            // Double separators end a run.
            "/pay/4111--1111-1111-1111",
            "/résumé/ünïcode",
        ] {
            assert!(matches!(mask_card_numbers(path), Cow::Borrowed(_)), "{path}");
        }
    }

    #[test]
    fn luhn_reference_values() {
        let d = |s: &str| s.bytes().map(|c| c - b'0').collect::<Vec<_>>();
        assert!(luhn(d("79927398713").into_iter()));
        assert!(!luhn(d("79927398710").into_iter()));
        assert!(luhn(d("4111111111111111").into_iter()));
        assert!(!luhn(d("4111111111111112").into_iter()));
    }

    #[test]
    fn write_failures_are_counted_once_per_failed_write() {
        let before = write_errors();
        let mut w = CountingWriter { inner: std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap() };
        assert!(w.write_all(b"line\n").is_err());
        assert!(w.write_all(b"line\n").is_err());
        assert_eq!(write_errors() - before, 2);
        let mut ok = CountingWriter { inner: Vec::new() };
        ok.write_all(b"fine\n").unwrap();
        assert_eq!(write_errors() - before, 2);
    }
}
