//! Floor 3 of issue #16 (tokio side): an HTTP/1.1 path of our own (`h1.rs`: heads parsed with
//! httparse and forwarded as bytes, edited in place; bodies passed through) behind tokio-rustls
//! with payguard's own TLS set-up (ALPN `http/1.1` only), on tokio's current-thread runtime as
//! `floor-hyper` runs. One backend connection per client connection. Against `floor-hyper`: what
//! hyper's server and client and payguard's pool cost over a bare byte path on the same
//! runtime; against `floor-uring`: what tokio and epoll cost over io_uring on the same path.
//!
//! Usage: floor-bytes LISTEN_ADDR CERT_PEM KEY_PEM BACKEND_ADDR

use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

mod h1;

fn main() -> anyhow::Result<()> {
    let (listen, backend, config) = h1::setup("floor-bytes")?;
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(serve(listen, acceptor, backend))
}

async fn serve(listen: SocketAddr, acceptor: TlsAcceptor, backend: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    loop {
        let (tcp, peer) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else { return };
            h1::serve(Tokio(tls), peer.ip(), Backend(backend)).await;
        });
    }
}

/// A tokio byte stream as `h1` wants it.
struct Tokio<T>(T);

impl<T: AsyncRead + AsyncWrite + Unpin> h1::Io for Tokio<T> {
    async fn read_more(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        self.0.read_buf(buf).await
    }

    async fn write_all_of(&mut self, buf: &mut Vec<u8>, range: Range<usize>) -> io::Result<()> {
        self.0.write_all(&buf[range]).await?;
        self.0.flush().await
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        self.0.shutdown().await
    }
}

struct Backend(SocketAddr);

impl h1::Connect for Backend {
    type Conn = Tokio<TcpStream>;

    async fn connect(&self) -> io::Result<Tokio<TcpStream>> {
        let tcp = TcpStream::connect(self.0).await?;
        tcp.set_nodelay(true)?;
        Ok(Tokio(tcp))
    }
}
