//! Floor 2 of issue #16: a thread-per-core, completion-based runtime. monoio on its io_uring
//! driver (no epoll fallback: it fails to start where io_uring is not available), one thread,
//! rustls through monoio-rustls with payguard's own TLS set-up (ALPN `http/1.1` only), and the
//! HTTP/1.1 path of `h1.rs` (the same as `floor-bytes`, so the two differ only in the runtime).
//! One backend connection per client connection.
//!
//! Usage: floor-uring LISTEN_ADDR CERT_PEM KEY_PEM BACKEND_ADDR
//!
//! `FLOOR_URING_SETUP` picks the io_uring's set-up flags:
//! - `defer` (the default): `SINGLE_ISSUER | DEFER_TASKRUN` (Linux 6.1+): completion work is
//!   run when the thread waits for completions, in a batch, not as it arrives;
//! - `coop`: `COOP_TASKRUN | TASKRUN_FLAG` (5.19+): no interrupt (IPI) to run it at once;
//! - `plain`: monoio's default set-up, where every completion's work interrupts the thread.
//!
//! `FLOOR_URING_ENTRIES`: the io_uring's submission queue size (monoio's default otherwise).

use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;

use anyhow::{bail, Context as _};
use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::{TcpListener, TcpStream};
use monoio::{IoUringDriver, RuntimeBuilder};
use monoio_rustls::TlsAcceptor;

mod h1;

fn main() -> anyhow::Result<()> {
    let (listen, backend, config) = h1::setup("floor-uring")?;
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let mut urb = io_uring::IoUring::builder();
    match std::env::var("FLOOR_URING_SETUP").as_deref() {
        Ok("plain") => {}
        Ok("coop") => {
            urb.setup_coop_taskrun().setup_taskrun_flag();
        }
        Ok("defer") | Err(_) => {
            urb.setup_single_issuer().setup_defer_taskrun();
        }
        Ok(other) => bail!("FLOOR_URING_SETUP={other}: one of defer, coop, plain"),
    }
    let mut builder = RuntimeBuilder::<IoUringDriver>::new().uring_builder(urb);
    if let Ok(n) = std::env::var("FLOOR_URING_ENTRIES") {
        builder = builder.with_entries(n.parse().context("FLOOR_URING_ENTRIES")?);
    }
    let mut rt = builder.build().context("monoio's io_uring driver")?;
    rt.block_on(serve(listen, acceptor, backend))
}

async fn serve(listen: SocketAddr, acceptor: TlsAcceptor, backend: SocketAddr) -> anyhow::Result<()> {
    let opts = monoio::net::ListenerOpts::new().reuse_port(false).backlog(4096);
    let listener = TcpListener::bind_with_config(listen, &opts)?;
    loop {
        let (tcp, peer) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        monoio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else { return };
            h1::serve(Mono(tls), peer.ip(), Backend(backend)).await;
        });
    }
}

/// A monoio byte stream as `h1` wants it: the buffer is lent to the runtime for the operation
/// (io_uring owns it until the completion) and put back.
struct Mono<T>(T);

impl<T: AsyncReadRent + AsyncWriteRent> h1::Io for Mono<T> {
    async fn read_more(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        let v = std::mem::take(buf);
        let (len, cap) = (v.len(), v.capacity());
        let (res, slice) = self.0.read(v.slice_mut(len..cap)).await;
        *buf = slice.into_inner();
        res
    }

    async fn write_all_of(&mut self, buf: &mut Vec<u8>, range: Range<usize>) -> io::Result<()> {
        if range.is_empty() {
            return Ok(());
        }
        let v = std::mem::take(buf);
        let (res, slice) = self.0.write_all(v.slice(range)).await;
        *buf = slice.into_inner();
        res.map(|_| ())
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        self.0.shutdown().await
    }
}

struct Backend(SocketAddr);

impl h1::Connect for Backend {
    type Conn = Mono<TcpStream>;

    async fn connect(&self) -> io::Result<Mono<TcpStream>> {
        let tcp = TcpStream::connect_addr(self.0).await?;
        tcp.set_nodelay(true)?;
        Ok(Mono(tcp))
    }
}
