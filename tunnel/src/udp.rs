//! The UDP side of the tunnel: the NAT table's associations carried by provider datagrams,
//! the local DNS resolver, and ICMP port unreachable for datagrams that cannot be carried.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use overlay::{AnonDatagram, AnonProvider, IsolationKey, Target};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::debug;

use crate::dns;
use crate::flows::{FlowGuard, Protocol};
use crate::nat::{NatDecision, NatTable};
use crate::runtime::Shared;

/// Raw IPv4 packets for the namespace (ICMP errors), written next to the stack's output.
pub(crate) type RawSender = mpsc::Sender<Vec<u8>>;

/// Tells the program that its datagram from `src` to `dst` was refused (best effort: a full
/// queue drops the notice, as a real network may).
fn refuse(raw: &RawSender, shared: &Shared, src: SocketAddr, dst: SocketAddr, len: usize) {
    shared.flows.count_event(|c| c.udp_datagrams_dropped += 1);
    if let (SocketAddr::V4(s), SocketAddr::V4(d)) = (src, dst) {
        let _ = raw.try_send(crate::icmp::port_unreachable(s, d, len));
    }
}

type UdpOut = (Vec<u8>, SocketAddr, SocketAddr);
/// (payload, where it goes, the destination as the program addressed it)
type AssocSender = mpsc::Sender<(Vec<u8>, Target, SocketAddr)>;

enum AssocEvent {
    Reply {
        src: SocketAddr,
        from: SocketAddr,
        payload: Vec<u8>,
    },
    Closed {
        src: SocketAddr,
        id: u64,
    },
}

pub(crate) async fn udp_loop(
    udp: netstack_smoltcp::UdpSocket,
    provider: Arc<dyn AnonProvider>,
    shared: Arc<Shared>,
    raw: RawSender,
) {
    let (mut rd, mut wr) = udp.split();
    let cfg = shared.cfg.clone();
    // One writer owns the stack's UDP sink.
    let (reply_tx, mut reply_rx) = mpsc::channel::<UdpOut>(1024);
    let writer = tokio::spawn(async move {
        while let Some(m) = reply_rx.recv().await {
            if let Err(e) = wr.send(m).await {
                debug!("UDP reply not delivered to the stack: {e}");
            }
        }
    });
    let mut nat = NatTable::new(cfg.udp_idle, cfg.max_udp_assocs);
    let mut senders: HashMap<SocketAddr, (u64, AssocSender)> = HashMap::new();
    let (ev_tx, mut ev_rx) = mpsc::channel::<AssocEvent>(1024);
    let mut assocs = JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1).min(cfg.udp_idle));
    loop {
        tokio::select! {
            m = rd.next() => {
                let Some((payload, src, dst)) = m else { break };
                while assocs.try_join_next().is_some() {}
                if dst.ip() == IpAddr::V4(cfg.dns_addr) {
                    if dst.port() == 53 {
                        if let Some(resp) = answer_dns(&shared, &payload) {
                            let _ = reply_tx.try_send((resp, dst, src));
                        }
                    }
                    continue;
                }
                let Some((target, _dest)) = shared.target_for(dst) else {
                    shared.flows.count_event(|c| c.udp_datagrams_dropped += 1);
                    continue;
                };
                let now = Instant::now();
                let id = match nat.outgoing(src, now) {
                    NatDecision::Existing(id) => id,
                    NatDecision::New(id) => {
                        let iso = shared.isolator().unique_key();
                        let (tx, rx) = mpsc::channel(cfg.udp_queue.max(1));
                        senders.insert(src, (id, tx));
                        let guard = shared.flows.open(Protocol::Udp, src, "udp (any)".into(), iso.0, now);
                        assocs.spawn(udp_assoc(provider.clone(), iso, src, id, rx, ev_tx.clone(), guard, cfg.connect_timeout, (raw.clone(), shared.clone())));
                        id
                    }
                    NatDecision::Full => {
                        shared.flows.count_event(|c| c.udp_datagrams_dropped += 1);
                        continue;
                    }
                };
                if matches!(target, Target::Host(..)) {
                    nat.note_host_target(src, dst);
                }
                match senders.get(&src) {
                    Some((sid, tx)) if *sid == id => {
                        if tx.try_send((payload, target, dst)).is_err() {
                            shared.flows.count_event(|c| c.udp_datagrams_dropped += 1);
                        }
                    }
                    _ => shared.flows.count_event(|c| c.udp_datagrams_dropped += 1),
                }
            }
            ev = ev_rx.recv() => {
                match ev {
                    Some(AssocEvent::Reply { src, from, payload }) => {
                        if let Some(shown) = nat.incoming(src, from, Instant::now()) {
                            if reply_tx.try_send((payload, shown, src)).is_err() {
                                shared.flows.count_event(|c| c.udp_datagrams_dropped += 1);
                            }
                        }
                    }
                    Some(AssocEvent::Closed { src, id }) => {
                        nat.remove(src, id);
                        if senders.get(&src).is_some_and(|(sid, _)| *sid == id) {
                            senders.remove(&src);
                        }
                    }
                    None => break,
                }
            }
            _ = tick.tick() => {
                for (src, id) in nat.expire(Instant::now()) {
                    debug!("UDP association {id} from {src} idle, closing");
                    if senders.get(&src).is_some_and(|(sid, _)| *sid == id) {
                        senders.remove(&src);
                    }
                }
            }
        }
    }
    writer.abort();
}

fn answer_dns(shared: &Shared, payload: &[u8]) -> Option<Vec<u8>> {
    shared.flows.count_event(|c| c.dns_queries += 1);
    match dns::parse_query(payload) {
        Ok(q) => {
            let answer =
                dns::answer_locally(&q, shared.cfg.dns_ttl, |name| shared.pool().assign(name));
            debug!("DNS {} type {} -> {:?}", q.name, q.qtype, answer);
            Some(dns::encode_response(&q, &answer))
        }
        Err(e) => {
            debug!("dropped a bad DNS query: {e}");
            shared.flows.count_event(|c| c.dns_bad += 1);
            None
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn udp_assoc(
    provider: Arc<dyn AnonProvider>,
    iso: IsolationKey,
    src: SocketAddr,
    id: u64,
    mut out: mpsc::Receiver<(Vec<u8>, Target, SocketAddr)>,
    events: mpsc::Sender<AssocEvent>,
    guard: FlowGuard,
    connect_timeout: Duration,
    (raw, shared): (RawSender, Arc<Shared>),
) {
    let dg: Arc<dyn AnonDatagram> =
        match tokio::time::timeout(connect_timeout, provider.datagram(iso)).await {
            Ok(Ok(d)) => Arc::from(d),
            Ok(Err(e)) => {
                debug!("UDP association for {src} could not be opened: {e}");
                let _ = events.send(AssocEvent::Closed { src, id }).await;
                // what was queued, and what arrives until the loop drops our sender, is refused
                while let Some((payload, _, dst)) = out.recv().await {
                    refuse(&raw, &shared, src, dst, payload.len());
                }
                return;
            }
            Err(_) => {
                debug!("UDP association for {src}: timed out opening");
                let _ = events.send(AssocEvent::Closed { src, id }).await;
                return;
            }
        };
    let entry = guard.entry.clone();
    let rdg = dg.clone();
    let rentry = entry.clone();
    let revents = events.clone();
    let mut receiver = tokio::spawn(async move {
        let mut buf = vec![0u8; 65535];
        loop {
            match rdg.recv_from(&mut buf).await {
                Ok((n, from)) => {
                    rentry.add_down(n);
                    let ev = AssocEvent::Reply {
                        src,
                        from,
                        payload: buf[..n].to_vec(),
                    };
                    if revents.send(ev).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    debug!("UDP association for {src} closed by the provider: {e}");
                    break;
                }
            }
        }
    });
    loop {
        tokio::select! {
            m = out.recv() => {
                let Some((payload, target, dst)) = m else { break };
                entry.add_up(payload.len());
                if let Err(e) = dg.send_to(&payload, &target).await {
                    debug!("UDP datagram to {target} not sent: {e}");
                    refuse(&raw, &shared, src, dst, payload.len());
                }
            }
            _ = &mut receiver => break,
        }
    }
    receiver.abort();
    let _ = events.send(AssocEvent::Closed { src, id }).await;
    drop(guard);
}
