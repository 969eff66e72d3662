//! Streams that send nothing until flushed (arti's Tor streams behave so): a magnet download
//! between two warren sessions whose every stream buffers writes until `poll_flush` completes,
//! metadata exchange included. A write the engine forgets to flush (seen: the BitTorrent
//! handshake over Tor) stalls both sides; this test then times out instead of passing.

mod common;

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use common::*;
use share::connector::{BoxedStream, Connector, PeerAddr};
use share::make::{make_torrent, MakeOptions};
use share::session::{AddOptions, Session, SessionConfig, TorrentSource, TorrentState};
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};

/// Writes go to `pending` and reach `inner` only on flush.
struct FlushOnly {
    inner: DuplexStream,
    pending: Vec<u8>,
}

impl FlushOnly {
    fn new(inner: DuplexStream) -> FlushOnly {
        FlushOnly {
            inner,
            pending: Vec::new(),
        }
    }
}

impl AsyncRead for FlushOnly {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for FlushOnly {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.pending.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        while !this.pending.is_empty() {
            match Pin::new(&mut this.inner).poll_write(cx, &this.pending) {
                Poll::Ready(Ok(n)) => {
                    this.pending.drain(..n);
                }
                other => return other.map(|r| r.map(|_| ())),
            }
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.as_mut().poll_flush(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut self.inner).poll_shutdown(cx),
            other => other,
        }
    }
}

/// Connects every peer to `seed` through a pair of flush-only streams.
struct ToSeeder {
    seed: Session,
}

#[async_trait]
impl Connector for ToSeeder {
    async fn connect(&self, _peer: &PeerAddr) -> io::Result<BoxedStream> {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let from: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        self.seed
            .accept_inbound(Box::new(FlushOnly::new(b)), PeerAddr::Ip(from));
        Ok(Box::new(FlushOnly::new(a)))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn magnet_download_over_streams_that_send_only_when_flushed() {
    let src = tempfile::tempdir().unwrap();
    let data = payload(2 * 1024 * 1024 + 777, 5);
    std::fs::write(src.path().join("payload.bin"), &data).unwrap();
    let made = make_torrent(
        &src.path().join("payload.bin"),
        &MakeOptions {
            piece_length: Some(64 * 1024),
            ..Default::default()
        },
    )
    .unwrap();
    let seed = Session::new(
        SessionConfig {
            use_trackers: false,
            ..SessionConfig::default()
        },
        Arc::new(share::clearnet::TcpConnector::new()),
    )
    .unwrap();
    let sh = seed
        .add_torrent(
            TorrentSource::Metainfo(Box::new(made.metainfo.clone())),
            src.path(),
            AddOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(sh.status().state, TorrentState::Seeding);

    let leech = Session::new(
        SessionConfig {
            use_trackers: false,
            ..SessionConfig::default()
        },
        Arc::new(ToSeeder { seed: seed.clone() }),
    )
    .unwrap();
    let dl = tempfile::tempdir().unwrap();
    let h = leech
        .add_torrent(
            TorrentSource::Magnet(made.magnet.clone()),
            dl.path(),
            AddOptions {
                peers: vec![PeerAddr::Ip("127.0.0.1:6881".parse().unwrap())],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(30), h.wait_complete())
        .await
        .expect("stalled: some write was never flushed")
        .unwrap();
    assert!(same_file(
        &dl.path().join("payload.bin"),
        &src.path().join("payload.bin")
    ));
}
