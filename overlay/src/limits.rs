//! Flood limits and bandwidth caps as plain state machines: the caller passes the time in and
//! carries out the decision (drop a socket, send DESTROY, sleep before forwarding). No I/O here.
//!
//! - [`TokenBucket`]: a rate with a burst; `try_take` for admission, `take` (may go into debt and
//!   says how long to wait) for byte-rate caps.
//! - [`LinkGate`]: admission of inbound links: a rate of new links per source address, a cap on
//!   handshakes pending per source and in total (when the total is full, a newcomer from a less
//!   loaded source evicts the oldest pending handshake of the most loaded one, so a flood from a
//!   few addresses cannot lock honest peers out), and caps on open links per source and in total.
//! - [`CircuitGate`]: per link, a rate of CREATEs and caps on circuits per link and in total.
//! - [`RefusalLog`]: says when to log refusals: once per burst, with how many were suppressed.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// A token bucket: `rate` tokens per second, at most `burst` saved.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: f64, burst: f64, now: Instant) -> TokenBucket {
        let burst = burst.max(1.0);
        TokenBucket {
            rate: rate.max(0.0),
            burst,
            tokens: burst,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
    }

    /// Takes `n` tokens if there are that many; otherwise takes none.
    pub fn try_take(&mut self, n: f64, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }

    /// Takes `n` tokens, going into debt if needed, and returns how long the caller must wait
    /// before using them so that the long-run rate stays at `rate` (zero if it may go at once).
    pub fn take(&mut self, n: f64, now: Instant) -> Duration {
        self.refill(now);
        self.tokens -= n;
        if self.tokens >= 0.0 || self.rate <= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }

    /// Whether the bucket has refilled completely (its state carries no information any more).
    pub fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.burst
    }

    pub fn tokens(&mut self, now: Instant) -> f64 {
        self.refill(now);
        self.tokens
    }
}

/// The numbers. Defaults are sized for a relay on a small machine; see docs/THREAT_MODEL.md
/// ("Floods and limits") for why.
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    /// Inbound link handshakes in progress, in total.
    pub max_pending_handshakes: usize,
    /// Inbound link handshakes in progress from one source address.
    pub max_pending_per_source: usize,
    /// New inbound links per second from one source address, and the burst allowed.
    pub links_per_source_rate: f64,
    pub links_per_source_burst: f64,
    /// Established inbound links, in total and from one source address.
    pub max_links: usize,
    pub max_links_per_source: usize,
    /// How long an inbound link may take to complete its handshake.
    pub handshake_timeout: Duration,
    /// Circuits one link may carry, and circuits the node carries in total.
    pub max_circuits_per_link: usize,
    pub max_circuits: usize,
    /// Circuits created over all links from one source address.
    pub max_circuits_per_source: usize,
    /// CREATEs per second one link may send, and the burst allowed.
    pub creates_per_link_rate: f64,
    pub creates_per_link_burst: f64,
    /// Bytes of cells a node holds queued on all its links together; past it, the circuits with
    /// the oldest queued data are destroyed (Tor's MaxMemInQueues and OOM killer).
    pub max_queued_bytes: usize,
    /// What an exit holds open for one circuit (TCP streams, UDP associations, resolutions in
    /// progress) and for all circuits together (sockets, resolutions): past a cap a request is
    /// answered with END (or RESOLVED) `resource limit`.
    pub max_streams_per_circuit: usize,
    pub max_udp_per_circuit: usize,
    pub max_resolves_per_circuit: usize,
    pub max_exit_sockets: usize,
    pub max_exit_resolves: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_pending_handshakes: 256,
            max_pending_per_source: 32,
            links_per_source_rate: 32.0,
            links_per_source_burst: 128.0,
            max_links: 2048,
            max_links_per_source: 256,
            handshake_timeout: Duration::from_secs(5),
            max_circuits_per_link: 1024,
            max_circuits: 16384,
            max_circuits_per_source: 4096,
            creates_per_link_rate: 64.0,
            creates_per_link_burst: 256.0,
            // 64 circuits with a whole window queued each
            max_queued_bytes: 256 << 20,
            // `warren tunnel` carries all of a program's flows on one circuit: a BitTorrent client
            // keeps hundreds of peer connections (TCP and uTP), and the tunnel's own test opens
            // 500 at once; the exit's fd budget stays well under a 20k-65k `ulimit -n`
            max_streams_per_circuit: 1024,
            max_udp_per_circuit: 512,
            max_resolves_per_circuit: 32,
            max_exit_sockets: 8192,
            max_exit_resolves: 256,
        }
    }
}

/// Why a link or a circuit was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("too many new links from this address per second")]
    LinkRate,
    #[error("too many handshakes pending from this address")]
    PendingFromSource,
    #[error("too many handshakes pending")]
    PendingHandshakes,
    #[error("too many links open from this address")]
    LinksFromSource,
    #[error("too many links open")]
    Links,
    #[error("handshake evicted to make room for another source")]
    Evicted,
    #[error("too many CREATEs per second on this link")]
    CreateRate,
    #[error("too many circuits on this link")]
    CircuitsPerLink,
    #[error("too many circuits from this address")]
    CircuitsFromSource,
    #[error("too many circuits")]
    Circuits,
    #[error("the peer does not read its link")]
    NotReading,
    #[error("the exit's stream, UDP or resolve cap")]
    ExitBusy,
}

/// A pending inbound handshake admitted by [`LinkGate::on_accept`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admitted {
    /// This handshake's id (pass it to `on_established` / `on_failed`).
    pub id: u64,
    /// A pending handshake the caller must abort to make room for this one.
    pub evict: Option<u64>,
}

/// Source-address buckets kept at most; full (idle) ones are dropped first.
const MAX_SOURCES: usize = 8192;

/// Admission of inbound links.
#[derive(Debug)]
pub struct LinkGate {
    limits: Limits,
    next_id: u64,
    /// id → source, oldest first.
    pending: BTreeMap<u64, IpAddr>,
    pending_from: HashMap<IpAddr, usize>,
    open_from: HashMap<IpAddr, usize>,
    open: usize,
    rates: HashMap<IpAddr, TokenBucket>,
}

impl LinkGate {
    pub fn new(limits: Limits) -> LinkGate {
        LinkGate {
            limits,
            next_id: 1,
            pending: BTreeMap::new(),
            pending_from: HashMap::new(),
            open_from: HashMap::new(),
            open: 0,
            rates: HashMap::new(),
        }
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    pub fn open(&self) -> usize {
        self.open
    }

    /// A TCP connection arrived from `src`: admit its handshake or refuse it.
    pub fn on_accept(&mut self, src: IpAddr, now: Instant) -> Result<Admitted, Refusal> {
        let l = &self.limits;
        if self.open >= l.max_links {
            return Err(Refusal::Links);
        }
        if self.open_from.get(&src).copied().unwrap_or(0) >= l.max_links_per_source {
            return Err(Refusal::LinksFromSource);
        }
        let mine = self.pending_from.get(&src).copied().unwrap_or(0);
        if mine >= l.max_pending_per_source {
            return Err(Refusal::PendingFromSource);
        }
        if self.rates.len() >= MAX_SOURCES && !self.rates.contains_key(&src) {
            self.rates.retain(|_, b| !b.is_full(now));
            if self.rates.len() >= MAX_SOURCES {
                return Err(Refusal::LinkRate);
            }
        }
        let (rate, burst) = (l.links_per_source_rate, l.links_per_source_burst);
        let bucket = self
            .rates
            .entry(src)
            .or_insert_with(|| TokenBucket::new(rate, burst, now));
        if !bucket.try_take(1.0, now) {
            return Err(Refusal::LinkRate);
        }
        let mut evict = None;
        if self.pending.len() >= self.limits.max_pending_handshakes {
            // the most loaded source gives up its oldest handshake, if it is more loaded than us
            let heaviest = self
                .pending_from
                .iter()
                .max_by_key(|(ip, n)| (**n, **ip))
                .map(|(ip, n)| (*ip, *n));
            match heaviest {
                Some((ip, n)) if n > mine + 1 => {
                    let oldest = self
                        .pending
                        .iter()
                        .find(|(_, s)| **s == ip)
                        .map(|(id, _)| *id);
                    if let Some(id) = oldest {
                        self.remove_pending(id);
                        evict = Some(id);
                    }
                }
                _ => {}
            }
            if evict.is_none() {
                return Err(Refusal::PendingHandshakes);
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        self.pending.insert(id, src);
        *self.pending_from.entry(src).or_insert(0) += 1;
        Ok(Admitted { id, evict })
    }

    fn remove_pending(&mut self, id: u64) -> Option<IpAddr> {
        let src = self.pending.remove(&id)?;
        if let Some(n) = self.pending_from.get_mut(&src) {
            *n -= 1;
            if *n == 0 {
                self.pending_from.remove(&src);
            }
        }
        Some(src)
    }

    /// The handshake completed: the link is open (until `on_closed`). Refused (the caller closes
    /// it) if the handshake was evicted meanwhile.
    pub fn on_established(&mut self, id: u64) -> Result<IpAddr, Refusal> {
        let src = self.remove_pending(id).ok_or(Refusal::Evicted)?;
        self.open += 1;
        *self.open_from.entry(src).or_insert(0) += 1;
        Ok(src)
    }

    /// The handshake failed, timed out or was aborted (no-op if it was evicted).
    pub fn on_failed(&mut self, id: u64) {
        self.remove_pending(id);
    }

    /// An established link from `src` closed.
    pub fn on_closed(&mut self, src: IpAddr) {
        self.open = self.open.saturating_sub(1);
        if let Some(n) = self.open_from.get_mut(&src) {
            *n -= 1;
            if *n == 0 {
                self.open_from.remove(&src);
            }
        }
    }
}

/// CREATE admission on one link.
#[derive(Debug)]
pub struct CircuitGate {
    creates: TokenBucket,
}

impl CircuitGate {
    pub fn new(limits: &Limits, now: Instant) -> CircuitGate {
        CircuitGate {
            creates: TokenBucket::new(
                limits.creates_per_link_rate,
                limits.creates_per_link_burst,
                now,
            ),
        }
    }

    /// A CREATE arrived on a link that carries `on_link` circuits, from a source address with
    /// `from_source` circuits, while the node carries `total`: accept it or refuse it.
    pub fn on_create(
        &mut self,
        limits: &Limits,
        (on_link, from_source, total): (usize, usize, usize),
        now: Instant,
    ) -> Result<(), Refusal> {
        if total >= limits.max_circuits {
            return Err(Refusal::Circuits);
        }
        if from_source >= limits.max_circuits_per_source {
            return Err(Refusal::CircuitsFromSource);
        }
        if on_link >= limits.max_circuits_per_link {
            return Err(Refusal::CircuitsPerLink);
        }
        if !self.creates.try_take(1.0, now) {
            return Err(Refusal::CreateRate);
        }
        Ok(())
    }
}

/// Logs refusals once per burst: the first refusal after a quiet `window` is logged, later ones
/// are counted and reported with the next log line.
#[derive(Debug)]
pub struct RefusalLog {
    window: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl RefusalLog {
    pub fn new(window: Duration) -> RefusalLog {
        RefusalLog {
            window,
            last: None,
            suppressed: 0,
        }
    }

    /// A refusal happened. `Some(n)`: log it now, mentioning `n` refusals suppressed since the
    /// last line; `None`: stay quiet.
    pub fn note(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(t) if now.saturating_duration_since(t) < self.window => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// A byte-rate cap (bytes per second; the burst is a quarter second of traffic, at least 64 KiB).
#[derive(Debug)]
pub struct ByteCap {
    bucket: TokenBucket,
}

impl ByteCap {
    pub fn new(bytes_per_s: u64, now: Instant) -> ByteCap {
        let rate = bytes_per_s as f64;
        ByteCap {
            bucket: TokenBucket::new(rate, (rate / 4.0).max(65536.0), now),
        }
    }

    /// `n` bytes are about to go: how long to wait first.
    pub fn take(&mut self, n: usize, now: Instant) -> Duration {
        self.bucket.take(n as f64, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn bucket_rate_and_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 5.0, t0);
        for _ in 0..5 {
            assert!(b.try_take(1.0, t0));
        }
        assert!(!b.try_take(1.0, t0));
        // 0.25 s → 2.5 tokens
        let t1 = t0 + Duration::from_millis(250);
        assert!(b.try_take(1.0, t1));
        assert!(b.try_take(1.0, t1));
        assert!(!b.try_take(1.0, t1));
        // never more than the burst
        let t2 = t1 + Duration::from_secs(100);
        assert!((b.tokens(t2) - 5.0).abs() < 1e-9);
        // time going backwards adds nothing
        assert!((b.tokens(t1) - 5.0).abs() < 1e-9);
    }

    #[test]
    fn bucket_debt_gives_the_wait() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000.0, 100.0, t0);
        assert_eq!(b.take(100.0, t0), Duration::ZERO);
        let w = b.take(500.0, t0);
        assert!((w.as_secs_f64() - 0.5).abs() < 1e-6, "{w:?}");
        // after waiting, the debt is paid
        let t1 = t0 + w;
        assert_eq!(b.take(0.0, t1), Duration::ZERO);
    }

    #[test]
    fn byte_cap_long_run_rate() {
        // a sender that always waits as told moves rate × time bytes (± one burst)
        let t0 = Instant::now();
        let mut c = ByteCap::new(1_000_000, t0);
        let mut now = t0;
        let mut sent = 0u64;
        while now < t0 + Duration::from_secs(10) {
            now += c.take(4096, now);
            sent += 4096;
        }
        let rate = sent as f64 / 10.0;
        assert!((rate - 1e6).abs() / 1e6 < 0.05, "{rate}");
    }

    #[test]
    fn per_source_rate_and_pending_caps() {
        let t0 = Instant::now();
        let l = Limits {
            links_per_source_burst: 4.0,
            links_per_source_rate: 1.0,
            max_pending_per_source: 3,
            ..Limits::default()
        };
        let mut g = LinkGate::new(l);
        let a = ip("10.0.0.1");
        let ids: Vec<u64> = (0..3).map(|_| g.on_accept(a, t0).unwrap().id).collect();
        assert_eq!(g.on_accept(a, t0), Err(Refusal::PendingFromSource));
        g.on_failed(ids[0]);
        g.on_accept(a, t0).unwrap();
        // the burst of 4 is spent
        g.on_failed(ids[1]);
        assert_eq!(g.on_accept(a, t0), Err(Refusal::LinkRate));
        // another source is not affected
        assert!(g.on_accept(ip("10.0.0.2"), t0).is_ok());
        // a second later one more token
        assert!(g.on_accept(a, t0 + Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn full_table_evicts_the_heaviest_source() {
        let t0 = Instant::now();
        let l = Limits {
            max_pending_handshakes: 10,
            max_pending_per_source: 8,
            ..Limits::default()
        };
        let mut g = LinkGate::new(l);
        let flood = ip("10.0.0.66");
        let f: Vec<u64> = (0..8).map(|_| g.on_accept(flood, t0).unwrap().id).collect();
        let o1 = g.on_accept(ip("10.0.0.7"), t0).unwrap();
        let o2 = g.on_accept(ip("10.0.0.8"), t0).unwrap();
        assert_eq!((o1.evict, o2.evict), (None, None));
        assert_eq!(g.pending(), 10);
        // full: an honest newcomer evicts the flood's oldest
        let h = g.on_accept(ip("10.0.0.1"), t0).unwrap();
        assert_eq!(h.evict, Some(f[0]));
        assert_eq!(g.pending(), 10);
        // the evicted handshake cannot open a link afterwards
        assert_eq!(g.on_established(f[0]), Err(Refusal::Evicted));
        g.on_failed(f[0]); // no-op
        assert_eq!(g.pending(), 10);
        // the flood itself cannot evict others (it is the heaviest)
        assert_eq!(g.on_accept(flood, t0), Err(Refusal::PendingHandshakes));
        // established links are counted per source and in total
        assert_eq!(g.on_established(h.id), Ok(ip("10.0.0.1")));
        assert_eq!(g.open(), 1);
        g.on_closed(ip("10.0.0.1"));
        assert_eq!(g.open(), 0);
    }

    #[test]
    fn open_link_caps() {
        let t0 = Instant::now();
        let l = Limits {
            max_links: 3,
            max_links_per_source: 2,
            ..Limits::default()
        };
        let mut g = LinkGate::new(l);
        let a = ip("::1");
        for _ in 0..2 {
            let x = g.on_accept(a, t0).unwrap();
            g.on_established(x.id).unwrap();
        }
        assert_eq!(g.on_accept(a, t0), Err(Refusal::LinksFromSource));
        let x = g.on_accept(ip("::2"), t0).unwrap();
        g.on_established(x.id).unwrap();
        assert_eq!(g.on_accept(ip("::3"), t0), Err(Refusal::Links));
        g.on_closed(a);
        assert!(g.on_accept(a, t0).is_ok());
    }

    #[test]
    fn source_table_is_bounded() {
        let t0 = Instant::now();
        let mut g = LinkGate::new(Limits::default());
        for i in 0..(MAX_SOURCES as u32 + 10) {
            let src = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            if let Ok(a) = g.on_accept(src, t0) {
                g.on_failed(a.id);
            }
        }
        assert!(g.rates.len() <= MAX_SOURCES);
        // once buckets have refilled, new sources get room again
        let later = t0 + Duration::from_secs(60);
        assert!(g.on_accept(ip("192.0.2.1"), later).is_ok());
    }

    #[test]
    fn circuit_caps_and_create_rate() {
        let t0 = Instant::now();
        let l = Limits {
            max_circuits_per_link: 5,
            max_circuits: 7,
            max_circuits_per_source: 6,
            creates_per_link_burst: 3.0,
            creates_per_link_rate: 2.0,
            ..Limits::default()
        };
        let mut g = CircuitGate::new(&l, t0);
        for i in 0..3 {
            assert_eq!(g.on_create(&l, (i, i, i), t0), Ok(()));
        }
        assert_eq!(g.on_create(&l, (3, 3, 3), t0), Err(Refusal::CreateRate));
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(
            g.on_create(&l, (5, 5, 5), t1),
            Err(Refusal::CircuitsPerLink)
        );
        assert_eq!(
            g.on_create(&l, (1, 6, 6), t1),
            Err(Refusal::CircuitsFromSource)
        );
        assert_eq!(g.on_create(&l, (1, 1, 7), t1), Err(Refusal::Circuits));
        assert_eq!(g.on_create(&l, (3, 3, 3), t1), Ok(()));
    }

    #[test]
    fn refusal_log_once_per_burst() {
        let t0 = Instant::now();
        let mut r = RefusalLog::new(Duration::from_secs(10));
        assert_eq!(r.note(t0), Some(0));
        for i in 1..100 {
            assert_eq!(r.note(t0 + Duration::from_millis(i)), None);
        }
        assert_eq!(r.note(t0 + Duration::from_secs(11)), Some(99));
        assert_eq!(r.note(t0 + Duration::from_secs(12)), None);
    }
}
