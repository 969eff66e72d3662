//! Helpers shared by the overlay's integration tests (127.0.0.1 only).
#![allow(dead_code)]

use std::net::SocketAddr;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

/// Logs to the test's output, filtered by `RUST_LOG`.
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A loopback listener with room for the connection bursts the tests make. `TcpListener::bind`
/// listens with a backlog of 1024: when a test opens 1,000 streams through an exit at once and
/// the machine is loaded (the accept loop not scheduled for a while), the accept queue fills,
/// the kernel drops SYNs and final ACKs, and a connection the exit believes open is answered by
/// a reset (seen in a packet capture of the `thousand_concurrent_streams` flake). 4096 is the
/// kernel's usual `somaxconn`.
pub fn listener() -> TcpListener {
    let s = tokio::net::TcpSocket::new_v4().unwrap();
    s.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    s.listen(4096).unwrap()
}

/// A TCP echo server on loopback that half-closes after the client does; its address.
pub async fn tcp_echo() -> SocketAddr {
    let l = listener();
    let a = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            // an accept error (a connection reset before it was accepted, ECONNABORTED) must
            // not end the server: that would drop the listener and reset every connection
            // still in its backlog
            let s = match l.accept().await {
                Ok((s, _)) => s,
                Err(_) => {
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                    continue;
                }
            };
            tokio::spawn(async move {
                let (mut r, mut w) = s.into_split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    a
}

/// A TCP source on loopback: reads an 8-byte big-endian length, sends that many bytes (0x5a),
/// closes. Survives accept errors, as [`tcp_echo`] does.
pub async fn byte_source() -> SocketAddr {
    use tokio::io::AsyncReadExt;
    let l = listener();
    let a = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let mut s = match l.accept().await {
                Ok((s, _)) => s,
                Err(_) => {
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                    continue;
                }
            };
            tokio::spawn(async move {
                let mut n = [0u8; 8];
                if s.read_exact(&mut n).await.is_err() {
                    return;
                }
                let mut left = u64::from_be_bytes(n) as usize;
                let chunk = vec![0x5au8; 64 * 1024];
                while left > 0 {
                    let k = left.min(chunk.len());
                    if s.write_all(&chunk[..k]).await.is_err() {
                        return;
                    }
                    left -= k;
                }
                let _ = s.shutdown().await;
            });
        }
    });
    a
}

/// Writes `data` on `s` and half-closes it while reading everything that comes back (an echo
/// round trip); what came back.
pub async fn write_and_read_back(
    s: &mut overlay::BoxStream,
    data: &[u8],
) -> std::io::Result<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let (mut r, mut w) = tokio::io::split(s);
    let writer = async move {
        w.write_all(data).await?;
        w.shutdown().await
    };
    let reader = async move {
        let mut back = Vec::new();
        r.read_to_end(&mut back).await?;
        Ok::<_, std::io::Error>(back)
    };
    let (wr, back) = tokio::join!(writer, reader);
    wr?;
    back
}
