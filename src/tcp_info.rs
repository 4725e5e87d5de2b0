//! What the kernel knows about a client socket's send side: how many bytes the client has
//! acknowledged and how many are still waiting for it (`TCP_INFO`, Linux ≥ 4.19). The send
//! timeout uses it to see a slow reader as soon as data waits for it, not only once every buffer
//! between payguard and the client is full.

use std::os::fd::RawFd;

/// The send side of a socket at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// Bytes the client has acknowledged since the connection opened.
    pub acked: u64,
    /// Bytes written to the socket that the client has not acknowledged yet (in flight or not
    /// sent for want of window).
    pub waiting: u64,
}

/// The socket's [`Delivery`]; `None` when the kernel cannot say (not Linux, a kernel older than
/// 4.19, or the socket is gone).
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub fn delivery(fd: RawFd) -> Option<Delivery> {
    let mut info = std::mem::MaybeUninit::<libc::tcp_info>::zeroed();
    let size = std::mem::size_of::<libc::tcp_info>();
    let mut len = libc::socklen_t::try_from(size).ok()?;
    // SAFETY: getsockopt writes at most `len` bytes into `info`, which is `size` bytes of
    // zero-initialised plain integers; a stale or foreign fd yields an error or another socket's
    // numbers, never memory unsafety.
    let rc = unsafe { libc::getsockopt(fd, libc::SOL_TCP, libc::TCP_INFO, info.as_mut_ptr().cast(), &mut len) };
    if rc != 0 {
        return None;
    }
    // SAFETY: every field is an integer, for which all-zero bytes (where the kernel wrote
    // nothing) is a valid value.
    let info = unsafe { info.assume_init() };
    // Older kernels fill a prefix of the struct: the fields used here must all be in it.
    let needed = std::mem::offset_of!(libc::tcp_info, tcpi_bytes_retrans) + std::mem::size_of::<u64>();
    if (len as usize) < needed {
        return None;
    }
    let sent_once = info.tcpi_bytes_sent.saturating_sub(info.tcpi_bytes_retrans);
    let in_flight = sent_once.saturating_sub(info.tcpi_bytes_acked);
    Some(Delivery { acked: info.tcpi_bytes_acked, waiting: in_flight + u64::from(info.tcpi_notsent_bytes) })
}

#[cfg(not(target_os = "linux"))]
pub fn delivery(_fd: RawFd) -> Option<Delivery> {
    None
}

#[cfg(all(test, target_os = "linux"))]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    #[test]
    fn counts_what_the_peer_took_and_what_waits() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        let d = delivery(server.as_raw_fd()).unwrap();
        assert_eq!(d, Delivery { acked: 0, waiting: 0 });

        // The client reads everything: all of it is acknowledged, nothing waits.
        server.write_all(&[7; 1000]).unwrap();
        let mut buf = [0; 1000];
        client.read_exact(&mut buf).unwrap();
        let mut d = delivery(server.as_raw_fd()).unwrap();
        for _ in 0..100 {
            if d.acked == 1000 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
            d = delivery(server.as_raw_fd()).unwrap();
        }
        assert_eq!(d, Delivery { acked: 1000, waiting: 0 });

        // The client stops reading: once its receive buffer is full, the rest waits.
        server.set_nonblocking(true).unwrap();
        let mut written = 0u64;
        while let Ok(n) = server.write(&[7; 65536]) {
            written += n as u64;
        }
        let d = delivery(server.as_raw_fd()).unwrap();
        assert!(d.waiting > 0 && d.acked + d.waiting == 1000 + written, "{d:?} after {written} more bytes");
    }

    #[test]
    fn a_closed_descriptor_has_no_answer() {
        assert_eq!(delivery(-1), None);
    }
}
