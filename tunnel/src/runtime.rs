//! The tunnel's async edge: device pumps, the userspace TCP/IP stack (netstack-smoltcp), TCP
//! flows relayed through `AnonProvider::connect`; the UDP NAT carried by provider datagrams and
//! the local DNS resolver are in `udp`. Decisions are made by the sans-IO modules (classify,
//! dns, fakeip, icmp, isolation, nat, flows); these modules only move bytes.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{FutureExt, SinkExt, StreamExt};
use overlay::{AnonProvider, BoxStream, IsolationKey, Target};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, info, warn};

use crate::classify::{classify, PacketClass};
use crate::device::Device;
use crate::fakeip::FakeIpPool;
use crate::flows::{FlowEntry, FlowGuard, FlowTable, Protocol, TunnelStatus};
use crate::isolation::{Destination, Isolator};

/// Everything the tunnel can be tuned with. `Default` gives the values `warren tunnel` uses.
#[derive(Debug, Clone)]
pub struct TunnelConfig {
    /// The wrapped program's address on the tun (inside the namespace).
    pub tun_addr: Ipv4Addr,
    /// Prefix length of the tun network (which contains the DNS address and the fake pool).
    pub prefix_len: u8,
    /// Where the tunnel's resolver answers (UDP port 53).
    pub dns_addr: Ipv4Addr,
    /// Fake-IP range handed out for names.
    pub fake_first: Ipv4Addr,
    pub fake_last: Ipv4Addr,
    pub dns_ttl: u32,
    pub mtu: usize,
    /// Per-flow TCP window of the userspace stack (bytes, each way). The stack keeps about four
    /// such buffers per flow.
    pub tcp_window: u32,
    /// Per-flow relay buffer (bytes, each way).
    pub relay_buffer: usize,
    pub max_tcp_flows: usize,
    pub connect_timeout: Duration,
    pub udp_idle: Duration,
    pub max_udp_assocs: usize,
    /// Datagrams queued per association before new ones are dropped.
    pub udp_queue: usize,
    /// How many destination groups may share one isolation key (circuit).
    pub groups_per_key: usize,
    /// Keeps the tunnel's isolation keys apart from the other users of the provider.
    pub isolation_base: u64,
}

impl Default for TunnelConfig {
    fn default() -> Self {
        Self {
            tun_addr: Ipv4Addr::new(198, 18, 0, 1),
            prefix_len: 15,
            dns_addr: Ipv4Addr::new(198, 18, 0, 2),
            fake_first: Ipv4Addr::new(198, 18, 0, 16),
            fake_last: Ipv4Addr::new(198, 19, 255, 254),
            dns_ttl: 60,
            // The tun is a virtual link between the namespace's kernel and this process only; a
            // large MTU cuts per-packet cost (1500: ~200 MB/s, 16000: ~530 MB/s measured).
            mtu: 16000,
            tcp_window: 128 * 1024,
            relay_buffer: 32 * 1024,
            max_tcp_flows: 512,
            connect_timeout: Duration::from_secs(60),
            udp_idle: Duration::from_secs(120),
            max_udp_assocs: 256,
            udp_queue: 64,
            groups_per_key: 4,
            isolation_base: rand::random::<u64>() & !0xffff_ffff,
        }
    }
}

impl TunnelConfig {
    /// Upper bound of the memory the TCP flows' buffers can take (bytes).
    pub fn tcp_memory_budget(&self) -> usize {
        self.max_tcp_flows * (4 * self.tcp_window as usize + 2 * self.relay_buffer)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    #[error("could not build the userspace TCP/IP stack: {0}")]
    Stack(std::io::Error),
    #[error("tun device: {0}")]
    Device(std::io::Error),
    #[error("network namespace: {0}")]
    Netns(String),
    #[error("could not run the wrapped program: {0}")]
    Spawn(std::io::Error),
}

/// What the TCP and UDP paths share: name mapping and isolation.
pub(crate) struct Shared {
    pub(crate) cfg: TunnelConfig,
    pool: Mutex<FakeIpPool>,
    isolator: Mutex<Isolator>,
    pub(crate) flows: FlowTable,
}

impl Shared {
    pub(crate) fn pool(&self) -> std::sync::MutexGuard<'_, FakeIpPool> {
        // ok: the pool's operations cannot panic half-way, a poisoned lock is still consistent
        self.pool.lock().unwrap_or_else(|e| e.into_inner())
    }
    pub(crate) fn isolator(&self) -> std::sync::MutexGuard<'_, Isolator> {
        self.isolator.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where a packet to `dst` should go: a name (fake IP) or an address. `None` for the
    /// tunnel's own addresses, unmapped fake addresses and IPv6.
    pub(crate) fn target_for(&self, dst: SocketAddr) -> Option<(Target, Destination)> {
        let IpAddr::V4(ip) = dst.ip() else {
            return None;
        };
        if ip == self.cfg.tun_addr || ip == self.cfg.dns_addr || ip.is_loopback() {
            return None;
        }
        let pool = self.pool();
        if pool.contains(ip) {
            let name = pool.lookup(ip)?.to_string();
            return Some((
                Target::Host(name.clone(), dst.port()),
                Destination::Name(name),
            ));
        }
        if in_prefix(ip, self.cfg.tun_addr, self.cfg.prefix_len) {
            return None;
        }
        Some((Target::Addr(dst), Destination::Ip(dst.ip())))
    }
}

fn in_prefix(ip: Ipv4Addr, net: Ipv4Addr, len: u8) -> bool {
    let len = u32::from(len.min(32));
    if len == 0 {
        return true;
    }
    let mask = u32::MAX << (32 - len);
    u32::from(ip) & mask == u32::from(net) & mask
}

/// A running tunnel. Dropping it stops every task (and so every flow).
pub struct Tunnel {
    flows: FlowTable,
    tasks: Vec<JoinHandle<()>>,
    device_closed: watch::Receiver<bool>,
}

impl Tunnel {
    /// Starts the tunnel over `device`. Must be called inside a tokio runtime.
    pub fn start(
        device: Arc<dyn Device>,
        provider: Arc<dyn AnonProvider>,
        cfg: TunnelConfig,
    ) -> Result<Tunnel, TunnelError> {
        let (stack, runner, udp, tcp) = netstack_smoltcp::StackBuilder::default()
            .enable_tcp(true)
            .enable_udp(true)
            .enable_icmp(false)
            .mtu(cfg.mtu)
            .tcp_recv_buffer_size(cfg.tcp_window)
            .tcp_send_buffer_size(cfg.tcp_window)
            .build()
            .map_err(TunnelError::Stack)?;
        let (Some(runner), Some(udp), Some(tcp)) = (runner, udp, tcp) else {
            return Err(TunnelError::Stack(std::io::Error::other(
                "stack built without TCP or UDP",
            )));
        };
        let flows = FlowTable::default();
        let shared = Arc::new(Shared {
            pool: Mutex::new(FakeIpPool::new(cfg.fake_first, cfg.fake_last)),
            isolator: Mutex::new(Isolator::new(cfg.isolation_base, cfg.groups_per_key, 4096)),
            flows: flows.clone(),
            cfg,
        });
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = runner.await {
                warn!("tunnel TCP/IP stack stopped: {e}");
            }
        }));
        let (mut stack_sink, mut stack_stream) = stack.split();
        let (closed_tx, device_closed) = watch::channel(false);

        // tun -> stack
        let dev = device.clone();
        let sh = shared.clone();
        tasks.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            loop {
                let n = match dev.recv(&mut buf).await {
                    Ok(0) => continue,
                    Ok(n) => n,
                    Err(e) => {
                        info!("tunnel device closed: {e}");
                        break;
                    }
                };
                let pkt = &buf[..n];
                match classify(pkt) {
                    PacketClass::Tcp | PacketClass::Udp => {
                        let total = usize::from(u16::from_be_bytes([pkt[2], pkt[3]]));
                        if let Err(e) = stack_sink.send(pkt[..total].to_vec()).await {
                            debug!("stack refused a packet: {e}");
                        }
                    }
                    PacketClass::Icmp => sh.flows.count_event(|c| c.dropped_icmp += 1),
                    PacketClass::Ipv6 => sh.flows.count_event(|c| c.dropped_ipv6 += 1),
                    PacketClass::Other(p) => {
                        debug!("dropped packet of protocol {p}");
                        sh.flows.count_event(|c| c.dropped_other += 1)
                    }
                    PacketClass::Invalid => sh.flows.count_event(|c| c.dropped_other += 1),
                }
            }
            let _ = closed_tx.send(true);
        }));

        // stack -> tun, and the tunnel's own ICMP errors
        let dev = device;
        let (raw_tx, mut raw_rx) = mpsc::channel::<Vec<u8>>(256);
        tasks.push(tokio::spawn(async move {
            loop {
                let pkt = tokio::select! {
                    p = stack_stream.next() => match p {
                        Some(Ok(p)) => p,
                        _ => break,
                    },
                    Some(p) = raw_rx.recv() => p,
                };
                if let Err(e) = dev.send(&pkt).await {
                    info!("tunnel device write failed: {e}");
                    break;
                }
            }
        }));

        tasks.push(tokio::spawn(tcp_accept(
            tcp,
            provider.clone(),
            shared.clone(),
        )));
        tasks.push(tokio::spawn(crate::udp::udp_loop(
            udp, provider, shared, raw_tx,
        )));
        Ok(Tunnel {
            flows,
            tasks,
            device_closed,
        })
    }

    /// The flow table and counters, for the dashboard.
    pub fn status(&self) -> TunnelStatus {
        self.flows.snapshot(Instant::now())
    }

    /// A handle on the flow table (cheap to clone, outlives nothing).
    pub fn flow_table(&self) -> FlowTable {
        self.flows.clone()
    }

    /// Resolves when the device stops delivering packets (the tun is gone).
    pub async fn device_closed(&mut self) {
        let _ = self.device_closed.wait_for(|c| *c).await;
    }

    /// Stops every task and flow.
    pub fn shutdown(mut self) {
        self.abort_all();
    }

    fn abort_all(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        self.abort_all();
    }
}

async fn tcp_accept(
    mut listener: netstack_smoltcp::TcpListener,
    provider: Arc<dyn AnonProvider>,
    shared: Arc<Shared>,
) {
    // Owned here: when this task is aborted every flow task goes with it.
    let mut flows = JoinSet::new();
    while let Some((stream, local, remote)) = listener.next().await {
        while flows.try_join_next().is_some() {}
        if flows.len() >= shared.cfg.max_tcp_flows {
            debug!("refusing TCP flow {local} -> {remote}: flow limit reached");
            shared.flows.count_event(|c| c.tcp_flows_refused += 1);
            refuse(stream);
            continue;
        }
        let Some((target, dest)) = shared.target_for(remote) else {
            debug!("refusing TCP flow {local} -> {remote}: not a routable destination");
            shared.flows.count_event(|c| c.tcp_flows_refused += 1);
            refuse(stream);
            continue;
        };
        let iso = shared.isolator().key_for(&dest);
        let guard = shared.flows.open(
            Protocol::Tcp,
            local,
            target.to_string(),
            iso.0,
            Instant::now(),
        );
        flows.spawn(relay_tcp(
            stream,
            provider.clone(),
            target,
            iso,
            guard,
            shared.cfg.connect_timeout,
            shared.cfg.relay_buffer,
        ));
    }
}

/// Closes a flow we will not carry. The stack hands the stream over on the SYN; closing it before
/// the handshake has completed leaves the program's socket hanging, so the close waits a moment
/// (bounded; one small task per refused flow).
fn refuse(stream: netstack_smoltcp::TcpStream) {
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(stream);
    });
}

async fn relay_tcp(
    stream: netstack_smoltcp::TcpStream,
    provider: Arc<dyn AnonProvider>,
    target: Target,
    iso: IsolationKey,
    guard: FlowGuard,
    connect_timeout: Duration,
    buf_size: usize,
) {
    let upstream: BoxStream =
        match tokio::time::timeout(connect_timeout, provider.connect(&target, iso)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                debug!("tunnel flow to {target} failed: {e}");
                refuse(stream);
                return;
            }
            Err(_) => {
                debug!("tunnel flow to {target}: connect timed out");
                refuse(stream);
                return;
            }
        };
    let (mut pr, mut pw) = tokio::io::split(stream);
    let (mut ur, mut uw) = tokio::io::split(upstream);
    let entry = guard.entry.clone();
    let up = async {
        let r = copy_counted(&mut pr, &mut uw, buf_size, &entry, true).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), uw.shutdown()).await;
        r
    };
    let down = async {
        let r = copy_counted(&mut ur, &mut pw, buf_size, &entry, false).await;
        // One poll starts the close (FIN once the queued data is sent); the stack finishes it on
        // its own, so the flow does not wait out TIME-WAIT here.
        let _ = pw.shutdown().now_or_never();
        r
    };
    let (a, b) = tokio::join!(up, down);
    if let Err(e) = a.and(b) {
        debug!("tunnel flow to {target} ended: {e}");
    }
    drop(guard);
}

async fn copy_counted<R, W>(
    r: &mut R,
    w: &mut W,
    buf_size: usize,
    entry: &FlowEntry,
    up: bool,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; buf_size.max(1024)];
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        w.write_all(&buf[..n]).await?;
        w.flush().await?;
        if up {
            entry.add_up(n);
        } else {
            entry.add_down(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::tests::ipv4;
    use crate::device::ChannelDevice;
    use crate::dns;
    use async_trait::async_trait;
    use overlay::AnonDatagram;
    use overlay::ProviderError;

    #[test]
    fn prefix_and_budget() {
        let c = TunnelConfig::default();
        assert!(in_prefix(Ipv4Addr::new(198, 19, 3, 4), c.tun_addr, 15));
        assert!(!in_prefix(Ipv4Addr::new(198, 20, 3, 4), c.tun_addr, 15));
        assert!(in_prefix(Ipv4Addr::new(1, 2, 3, 4), c.tun_addr, 0));
        // 512 flows x (4 x 128 KiB + 2 x 32 KiB) = 288 MiB
        assert_eq!(c.tcp_memory_budget(), 512 * 576 * 1024);
    }

    /// Echoes every datagram back, reporting a fixed public source; records the targets.
    struct MockProvider {
        sent: Arc<Mutex<Vec<Target>>>,
    }
    struct MockDatagram {
        sent: Arc<Mutex<Vec<Target>>>,
        tx: mpsc::Sender<(Vec<u8>, SocketAddr)>,
        rx: tokio::sync::Mutex<mpsc::Receiver<(Vec<u8>, SocketAddr)>>,
    }
    #[async_trait]
    impl AnonDatagram for MockDatagram {
        async fn send_to(&self, payload: &[u8], target: &Target) -> Result<(), ProviderError> {
            self.sent.lock().unwrap().push(target.clone());
            let port = match target {
                Target::Addr(a) => a.port(),
                Target::Host(_, p) => *p,
            };
            let from = SocketAddr::new(Ipv4Addr::new(203, 0, 113, 7).into(), port);
            let _ = self.tx.send((payload.to_vec(), from)).await;
            Ok(())
        }
        async fn recv_from(&self, buf: &mut [u8]) -> Result<(usize, SocketAddr), ProviderError> {
            let (p, from) = self
                .rx
                .lock()
                .await
                .recv()
                .await
                .ok_or_else(|| ProviderError::Closed("mock".into()))?;
            buf[..p.len()].copy_from_slice(&p);
            Ok((p.len(), from))
        }
    }
    #[async_trait]
    impl AnonProvider for MockProvider {
        fn name(&self) -> &'static str {
            "mock"
        }
        async fn connect(&self, _: &Target, _: IsolationKey) -> Result<BoxStream, ProviderError> {
            Err(ProviderError::Unsupported("TCP"))
        }
        async fn datagram(&self, _: IsolationKey) -> Result<Box<dyn AnonDatagram>, ProviderError> {
            let (tx, rx) = mpsc::channel(8);
            Ok(Box::new(MockDatagram {
                sent: self.sent.clone(),
                tx,
                rx: tokio::sync::Mutex::new(rx),
            }))
        }
        async fn resolve(&self, _: &str, _: IsolationKey) -> Result<Vec<IpAddr>, ProviderError> {
            Err(ProviderError::Unsupported("resolve"))
        }
    }

    fn udp(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Vec<u8> {
        let (IpAddr::V4(s), IpAddr::V4(d)) = (src.ip(), dst.ip()) else {
            unreachable!()
        };
        let mut u = Vec::new();
        u.extend_from_slice(&src.port().to_be_bytes());
        u.extend_from_slice(&dst.port().to_be_bytes());
        u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        u.extend_from_slice(&[0, 0]); // no checksum (allowed in IPv4)
        u.extend_from_slice(payload);
        ipv4(17, s.octets(), d.octets(), &u)
    }

    /// (src, dst, payload) of a UDP packet the stack wrote.
    fn parse_udp(p: &[u8]) -> (SocketAddr, SocketAddr, Vec<u8>) {
        let ihl = usize::from(p[0] & 0x0f) * 4;
        let s = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
        let d = Ipv4Addr::new(p[16], p[17], p[18], p[19]);
        let sp = u16::from_be_bytes([p[ihl], p[ihl + 1]]);
        let dp = u16::from_be_bytes([p[ihl + 2], p[ihl + 3]]);
        ((s, sp).into(), (d, dp).into(), p[ihl + 8..].to_vec())
    }

    /// Refuses every datagram association, as Tor does.
    struct NoUdp;
    #[async_trait]
    impl AnonProvider for NoUdp {
        fn name(&self) -> &'static str {
            "no-udp"
        }
        async fn connect(&self, _: &Target, _: IsolationKey) -> Result<BoxStream, ProviderError> {
            Err(ProviderError::Unsupported("TCP"))
        }
        async fn datagram(&self, _: IsolationKey) -> Result<Box<dyn AnonDatagram>, ProviderError> {
            Err(ProviderError::Unsupported("UDP"))
        }
        async fn resolve(&self, _: &str, _: IsolationKey) -> Result<Vec<IpAddr>, ProviderError> {
            Err(ProviderError::Unsupported("resolve"))
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refused_datagrams_get_port_unreachable() {
        let (dev, mut peer) = ChannelDevice::pair(64);
        let _tunnel =
            Tunnel::start(Arc::new(dev), Arc::new(NoUdp), TunnelConfig::default()).unwrap();
        let me: SocketAddr = "198.18.0.1:40001".parse().unwrap();
        let to: SocketAddr = "203.0.113.9:6969".parse().unwrap();
        for _ in 0..2 {
            peer.to_stack.send(udp(me, to, b"announce")).await.unwrap();
            let out = tokio::time::timeout(Duration::from_secs(5), peer.from_stack.recv())
                .await
                .unwrap()
                .unwrap();
            let SocketAddr::V4(m) = me else {
                unreachable!()
            };
            let SocketAddr::V4(t) = to else {
                unreachable!()
            };
            assert_eq!(out, crate::icmp::port_unreachable(m, t, 8));
        }
    }

    #[tokio::test]
    async fn dns_udp_nat_and_drops_over_a_channel_device() {
        let (dev, mut peer) = ChannelDevice::pair(64);
        let sent = Arc::new(Mutex::new(Vec::new()));
        let provider = Arc::new(MockProvider { sent: sent.clone() });
        let tunnel = Tunnel::start(Arc::new(dev), provider, TunnelConfig::default()).unwrap();
        let me: SocketAddr = "198.18.0.1:40000".parse().unwrap();
        let dns_srv: SocketAddr = "198.18.0.2:53".parse().unwrap();
        let q = dns::encode_query(0x77, "peer.example", dns::TYPE_A).unwrap();
        peer.to_stack.send(udp(me, dns_srv, &q)).await.unwrap();
        let wait = Duration::from_secs(5);
        let out = tokio::time::timeout(wait, peer.from_stack.recv())
            .await
            .unwrap()
            .unwrap();
        let (s, d, payload) = parse_udp(&out);
        assert_eq!((s, d), (dns_srv, me));
        let (id, rcode, ips) = dns::parse_response_a(&payload).unwrap();
        assert_eq!((id, rcode, ips.len()), (0x77, 0, 1));
        let fake = SocketAddr::new(ips[0].into(), 6881);

        // UDP to the fake address travels by name and the reply comes back from it
        peer.to_stack
            .send(udp(me, fake, b"d1:ad2:id20:"))
            .await
            .unwrap();
        let out = tokio::time::timeout(wait, peer.from_stack.recv())
            .await
            .unwrap()
            .unwrap();
        let (s, d, payload) = parse_udp(&out);
        assert_eq!((s, d, payload.as_slice()), (fake, me, &b"d1:ad2:id20:"[..]));
        // by address: the reply shows the exit-reported source
        let real: SocketAddr = "203.0.113.7:51413".parse().unwrap();
        peer.to_stack.send(udp(me, real, b"x")).await.unwrap();
        let out = tokio::time::timeout(wait, peer.from_stack.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(parse_udp(&out).0, real);
        assert_eq!(
            *sent.lock().unwrap(),
            vec![
                Target::Host("peer.example".into(), 6881),
                Target::Addr(real)
            ]
        );

        // ICMP, IPv6, a bad DNS query: dropped, counted, nothing written
        peer.to_stack
            .send(ipv4(
                1,
                [198, 18, 0, 1],
                [203, 0, 113, 7],
                &[8, 0, 0, 0, 0, 0, 0, 0],
            ))
            .await
            .unwrap();
        let mut v6 = vec![0x60];
        v6.extend_from_slice(&[0; 39]);
        peer.to_stack.send(v6).await.unwrap();
        peer.to_stack
            .send(udp(me, dns_srv, b"\x12\x34bad"))
            .await
            .unwrap();
        let t = Instant::now();
        loop {
            let c = tunnel.status().counters;
            if c.dropped_icmp == 1 && c.dropped_ipv6 == 1 && c.dns_bad == 1 {
                assert_eq!(c.udp_assocs_total, 1, "one association per source");
                break;
            }
            assert!(t.elapsed() < wait, "{c:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(peer.from_stack.try_recv().is_err());
        let st = tunnel.status();
        assert_eq!(st.flows.len(), 1);
        assert_eq!(st.flows[0].bytes_up, 13);
    }
}
