//! The real `payguard` binary as a child process, for tests that need what only a process has:
//! its own stdout and stderr (the log), its own file descriptors (`/proc/<pid>/fd`), signals.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_payguard");

/// Where the child's stdout goes.
pub enum Stdout {
    /// Read line by line into [`Payguard::log`].
    Captured,
    /// A file such as `/dev/full` (every write fails with ENOSPC).
    File(&'static str),
    /// A pipe that nobody reads: it fills up after 64 KiB and then every write blocks.
    Unread,
}

pub struct Payguard {
    pub child: Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    /// Captured stdout lines (with [`Stdout::Captured`]).
    pub lines: Arc<Mutex<Vec<String>>>,
    /// Captured stderr lines, always.
    pub errors: Arc<Mutex<Vec<String>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
    /// Kept open (never read) with [`Stdout::Unread`].
    unread: Option<std::process::ChildStdout>,
}

fn read_lines(src: impl std::io::Read + Send + 'static, sink: Arc<Mutex<Vec<String>>>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(src).lines() {
            let Ok(line) = line else { break };
            sink.lock().unwrap().push(line);
        }
    })
}

impl Payguard {
    /// Starts `payguard run --config <config>` with `env` set, and waits until both of its
    /// listeners accept (found from the process's own sockets, so this works whatever stdout is).
    pub async fn spawn(config: &std::path::Path, stdout: Stdout, env: &[(&str, &str)]) -> Payguard {
        let mut cmd = Command::new(BIN);
        cmd.args(["run", "--config"]).arg(config).args(["--threads", "2"]).env_remove("RUST_LOG");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stderr(Stdio::piped());
        match stdout {
            Stdout::Captured | Stdout::Unread => cmd.stdout(Stdio::piped()),
            Stdout::File(path) => cmd.stdout(std::fs::OpenOptions::new().write(true).open(path).unwrap()),
        };
        let mut child = cmd.spawn().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let mut readers = vec![read_lines(child.stderr.take().unwrap(), errors.clone())];
        let mut unread = None;
        match stdout {
            Stdout::Captured => readers.push(read_lines(child.stdout.take().unwrap(), lines.clone())),
            Stdout::Unread => unread = child.stdout.take(),
            Stdout::File(_) => {}
        }
        let pid = child.id();
        let found = Mutex::new(None);
        let ok = crate::common::eventually(Duration::from_secs(30), || {
            let found = &found;
            async move {
                let ports = listening(pid);
                if ports.len() < 2 {
                    return false;
                }
                // The admin listener answers plain HTTP; the other one is the TLS listener.
                for &p in &ports {
                    if admin_ok(p).await {
                        if let Some(&main) = ports.iter().find(|&&q| q != p) {
                            *found.lock().unwrap() = Some((main, p));
                            return true;
                        }
                    }
                }
                false
            }
        })
        .await;
        let errs = errors.lock().unwrap().clone();
        assert!(ok, "payguard did not start listening; stderr: {errs:?}");
        let (addr, admin) = found.into_inner().unwrap().unwrap();
        Payguard { child, addr, admin, lines, errors, readers, unread }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Open file descriptors of the process.
    pub fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid())).unwrap().count()
    }

    /// What each open file descriptor is (`socket:[…]`, `pipe:[…]`, a path), for messages.
    pub fn fd_targets(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .unwrap()
            .flatten()
            .map(|e| std::fs::read_link(e.path()).map(|t| t.display().to_string()).unwrap_or_default())
            .collect();
        v.sort();
        v
    }

    pub fn log(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    pub fn stderr(&self) -> Vec<String> {
        self.errors.lock().unwrap().clone()
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{}", self.addr.port(), path)
    }

    pub async fn metrics(&self) -> String {
        crate::common::admin_get(self.admin, "/metrics").await.text().await.unwrap()
    }

    /// The value of one sample of `/metrics` (0 when absent).
    pub async fn metric(&self, sample: &str) -> f64 {
        metric_value(&self.metrics().await, sample)
    }

    /// Sends SIGTERM and waits (at most `within`) for the exit; returns the exit code and the
    /// whole stderr.
    pub async fn terminate(mut self, within: Duration) -> (Option<i32>, Vec<String>) {
        let ok = Command::new("kill").args(["-s", "TERM", &self.pid().to_string()]).status().unwrap();
        assert!(ok.success());
        let deadline = std::time::Instant::now() + within;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(std::time::Instant::now() < deadline, "payguard did not exit within {within:?} of SIGTERM");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        drop(self.unread.take());
        for r in self.readers.drain(..) {
            let _ = tokio::task::spawn_blocking(move || r.join()).await;
        }
        (status.code(), self.stderr())
    }
}

impl Drop for Payguard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `sample value` lines of a Prometheus text page: the value of `sample` (exact name and
/// labels), 0 when absent.
pub fn metric_value(page: &str, sample: &str) -> f64 {
    page.lines()
        .find_map(|l| l.strip_prefix(sample).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The process's open TCP sockets connected to `port` (its pooled backend connections, when
/// `port` is the backend's).
pub fn sockets_to(pid: u32, port: u16) -> usize {
    let inodes = socket_inodes(pid);
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            f.len() > 9
                && inodes.contains(f[9])
                && f[2].split(':').nth(1).and_then(|p| u16::from_str_radix(p, 16).ok()) == Some(port)
        })
        .count()
}

fn socket_inodes(pid: u32) -> HashSet<String> {
    let mut inodes = HashSet::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return inodes };
    for e in dir.flatten() {
        if let Ok(target) = std::fs::read_link(e.path()) {
            let t = target.to_string_lossy();
            if let Some(inode) = t.strip_prefix("socket:[").and_then(|s| s.strip_suffix(']')) {
                inodes.insert(inode.to_string());
            }
        }
    }
    inodes
}

/// The TCP ports the process listens on, from its socket inodes and `/proc/<pid>/net/tcp`.
pub fn listening(pid: u32) -> Vec<SocketAddr> {
    let inodes = socket_inodes(pid);
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).unwrap_or_default();
    let mut out = Vec::new();
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        // local_address is f[1] (hex ip:port), st is f[3] (0A = LISTEN), inode is f[9].
        if f.len() > 9 && f[3] == "0A" && inodes.contains(f[9]) {
            if let Some(port) = f[1].split(':').nth(1).and_then(|p| u16::from_str_radix(p, 16).ok()) {
                out.push(SocketAddr::from(([127, 0, 0, 1], port)));
            }
        }
    }
    out
}

async fn admin_ok(addr: SocketAddr) -> bool {
    let Ok(client) = reqwest::Client::builder()
        .use_preconfigured_tls(crate::common::rustls_client(&[], &[]))
        .timeout(Duration::from_secs(2))
        .build()
    else {
        return false;
    };
    matches!(client.get(format!("http://{addr}/healthz")).send().await, Ok(r) if r.status() == 200)
}

/// A fresh HTTP/1.1 or HTTP/2 client (its own connections, so dropping it closes them).
pub fn client(cert: &crate::common::TestCert, h2: bool) -> reqwest::Client {
    if h2 {
        crate::common::h2_client(cert)
    } else {
        crate::common::h1_client(cert)
    }
}
