//! [`AutoProvider`]: overlay exits first, Tor when no overlay exit answers.
//!
//! The choice is made by [`AutoPolicy`], a small sans-IO state machine (errors and instants in,
//! routes out): after the overlay failed for want of a circuit or an exit, new streams go straight
//! to Tor for a while (no long overlay timeout per stream), then the overlay is tried again.
//! Datagrams (UDP trackers, the DHT, uTP) only ever go through the overlay: Tor cannot carry them,
//! and nothing is ever sent in the clear.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use overlay::{AnonDatagram, AnonProvider, BoxStream, IsolationKey, ProviderError, Target};

/// Which network a stream should try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// The overlay, then Tor if the overlay has no exit that answers.
    OverlayThenTor,
    /// Tor only (the overlay failed a moment ago).
    TorOnly,
}

/// Decides between the overlay and Tor from what happened before.
#[derive(Debug, Clone)]
pub struct AutoPolicy {
    /// How long to skip the overlay after it had no usable exit.
    pub skip_overlay_for: Duration,
    overlay_failed_at: Option<Instant>,
}

impl AutoPolicy {
    pub fn new(skip_overlay_for: Duration) -> AutoPolicy {
        AutoPolicy {
            skip_overlay_for,
            overlay_failed_at: None,
        }
    }

    /// The route for a stream opened at `now`.
    pub fn route(&self, now: Instant) -> Route {
        match self.overlay_failed_at {
            Some(t) if now.saturating_duration_since(t) < self.skip_overlay_for => Route::TorOnly,
            _ => Route::OverlayThenTor,
        }
    }

    /// Whether an overlay error means "no overlay exit answers" (so Tor should be tried), as
    /// opposed to an answer from the destination itself (refused, unknown name), which Tor would
    /// only repeat.
    pub fn falls_back(e: &ProviderError) -> bool {
        match e {
            ProviderError::NoCircuit(_) | ProviderError::Timeout(_) | ProviderError::Closed(_) => {
                true
            }
            ProviderError::Refused { reason, .. } => {
                let r = reason.to_ascii_lowercase();
                r.starts_with("exit policy")
                    || r.starts_with("not an exit")
                    || r.contains("no exit")
            }
            ProviderError::Resolve(_) | ProviderError::Unsupported(_) | ProviderError::Io(_) => {
                false
            }
        }
    }

    /// Records the overlay's answer at `now`; returns whether to try Tor.
    pub fn overlay_result(&mut self, now: Instant, result: Result<(), &ProviderError>) -> bool {
        match result {
            Ok(()) => {
                self.overlay_failed_at = None;
                false
            }
            Err(e) if Self::falls_back(e) => {
                self.overlay_failed_at = Some(now);
                true
            }
            Err(_) => false,
        }
    }
}

/// Overlay first, Tor as the fallback; UDP through the overlay only.
pub struct AutoProvider {
    overlay: Arc<dyn AnonProvider>,
    tor: Arc<dyn AnonProvider>,
    policy: Mutex<AutoPolicy>,
}

/// After the overlay had no exit, go straight to Tor for this long.
pub const DEFAULT_SKIP_OVERLAY: Duration = Duration::from_secs(30);

impl AutoProvider {
    pub fn new(overlay: Arc<dyn AnonProvider>, tor: Arc<dyn AnonProvider>) -> AutoProvider {
        AutoProvider::with_policy(overlay, tor, AutoPolicy::new(DEFAULT_SKIP_OVERLAY))
    }

    pub fn with_policy(
        overlay: Arc<dyn AnonProvider>,
        tor: Arc<dyn AnonProvider>,
        policy: AutoPolicy,
    ) -> AutoProvider {
        AutoProvider {
            overlay,
            tor,
            policy: Mutex::new(policy),
        }
    }

    fn policy(&self) -> std::sync::MutexGuard<'_, AutoPolicy> {
        // ok: the policy is two plain fields; a panic elsewhere cannot leave it inconsistent
        self.policy.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `op` on the overlay and then, if the overlay had no exit, on Tor.
    async fn either<T, F, Fut>(&self, what: &str, op: F) -> Result<T, ProviderError>
    where
        F: Fn(Arc<dyn AnonProvider>) -> Fut,
        Fut: std::future::Future<Output = Result<T, ProviderError>>,
    {
        if self.policy().route(Instant::now()) == Route::TorOnly {
            return op(self.tor.clone()).await;
        }
        let first = op(self.overlay.clone()).await;
        let try_tor = self
            .policy()
            .overlay_result(Instant::now(), first.as_ref().map(|_| ()));
        match first {
            Err(e) if try_tor => {
                tracing::info!(%what, error = %e, "no overlay exit answered; trying Tor");
                op(self.tor.clone()).await.map_err(|te| {
                    ProviderError::NoCircuit(format!(
                        "{what}: no overlay exit answered ({e}) and Tor failed too ({te})"
                    ))
                })
            }
            other => other,
        }
    }
}

#[async_trait]
impl AnonProvider for AutoProvider {
    fn name(&self) -> &'static str {
        "auto"
    }

    async fn connect(
        &self,
        target: &Target,
        iso: IsolationKey,
    ) -> Result<BoxStream, ProviderError> {
        let what = target.to_string();
        self.either(&what, |p| {
            let target = target.clone();
            async move { p.connect(&target, iso).await }
        })
        .await
    }

    /// UDP never goes through Tor (it cannot) nor in the clear: overlay exits only.
    async fn datagram(&self, iso: IsolationKey) -> Result<Box<dyn AnonDatagram>, ProviderError> {
        self.overlay.datagram(iso).await
    }

    async fn resolve(&self, name: &str, iso: IsolationKey) -> Result<Vec<IpAddr>, ProviderError> {
        self.either(name, |p| {
            let name = name.to_string();
            async move { p.resolve(&name, iso).await }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A provider that answers every call with a copy of one canned outcome.
    struct Mock {
        name: &'static str,
        fail: Option<fn() -> ProviderError>,
        calls: AtomicUsize,
        udp_calls: AtomicUsize,
    }

    impl Mock {
        fn new(name: &'static str, fail: Option<fn() -> ProviderError>) -> Arc<Mock> {
            Arc::new(Mock {
                name,
                fail,
                calls: AtomicUsize::new(0),
                udp_calls: AtomicUsize::new(0),
            })
        }
        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
    }

    struct NoDatagram;
    #[async_trait]
    impl AnonDatagram for NoDatagram {
        async fn send_to(&self, _: &[u8], _: &Target) -> Result<(), ProviderError> {
            Ok(())
        }
        async fn recv_from(
            &self,
            _: &mut [u8],
        ) -> Result<(usize, std::net::SocketAddr), ProviderError> {
            Err(ProviderError::Closed("mock".into()))
        }
    }

    #[async_trait]
    impl AnonProvider for Mock {
        fn name(&self) -> &'static str {
            self.name
        }
        async fn connect(&self, _: &Target, _: IsolationKey) -> Result<BoxStream, ProviderError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            match self.fail {
                Some(f) => Err(f()),
                None => {
                    // the stream's first byte names the provider that carried it
                    let (a, mut b) = tokio::io::duplex(16);
                    use tokio::io::AsyncWriteExt;
                    b.write_all(self.name.as_bytes()).await?;
                    Ok(Box::pin(a))
                }
            }
        }
        async fn datagram(&self, _: IsolationKey) -> Result<Box<dyn AnonDatagram>, ProviderError> {
            self.udp_calls.fetch_add(1, Ordering::SeqCst);
            match self.fail {
                Some(f) => Err(f()),
                None => Ok(Box::new(NoDatagram)),
            }
        }
        async fn resolve(&self, _: &str, _: IsolationKey) -> Result<Vec<IpAddr>, ProviderError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            match self.fail {
                Some(f) => Err(f()),
                None => Ok(vec![if self.name == "tor" {
                    [10, 0, 0, 2].into()
                } else {
                    [10, 0, 0, 1].into()
                }]),
            }
        }
    }

    fn no_circuit() -> ProviderError {
        ProviderError::NoCircuit("no exit in the directory".into())
    }
    fn refused() -> ProviderError {
        ProviderError::Refused {
            target: "10.1.1.1:80".into(),
            reason: "connection refused: by the destination".into(),
        }
    }
    fn udp_refused() -> ProviderError {
        ProviderError::Unsupported(crate::UDP_REFUSAL)
    }

    async fn first_bytes(s: BoxStream) -> String {
        use tokio::io::AsyncReadExt;
        let mut s = s;
        let mut buf = [0u8; 16];
        let n = s.read(&mut buf).await.unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    fn target() -> Target {
        Target::Host("tracker.example".into(), 80)
    }

    #[tokio::test]
    async fn overlay_first_when_it_works() {
        let (o, t) = (Mock::new("overlay", None), Mock::new("tor", None));
        let a = AutoProvider::new(o.clone(), t.clone());
        let s = a.connect(&target(), IsolationKey(1)).await.unwrap();
        assert_eq!(first_bytes(s).await, "overlay");
        assert_eq!((o.calls(), t.calls()), (1, 0));
        assert_eq!(a.name(), "auto");
    }

    #[tokio::test]
    async fn tor_when_no_overlay_exit_answers_then_tor_only_for_a_while() {
        let (o, t) = (
            Mock::new("overlay", Some(no_circuit)),
            Mock::new("tor", None),
        );
        let a = AutoProvider::new(o.clone(), t.clone());
        let s = a.connect(&target(), IsolationKey(1)).await.unwrap();
        assert_eq!(first_bytes(s).await, "tor");
        assert_eq!((o.calls(), t.calls()), (1, 1));
        // within the skip window the overlay is not asked again
        let s = a.connect(&target(), IsolationKey(2)).await.unwrap();
        assert_eq!(first_bytes(s).await, "tor");
        assert_eq!((o.calls(), t.calls()), (1, 2));
        let ips = a.resolve("x.example", IsolationKey(2)).await.unwrap();
        assert_eq!(ips, vec![IpAddr::from([10, 0, 0, 2])]);
    }

    #[tokio::test]
    async fn destination_refusals_do_not_fall_back() {
        let (o, t) = (Mock::new("overlay", Some(refused)), Mock::new("tor", None));
        let a = AutoProvider::new(o.clone(), t.clone());
        let e = a.connect(&target(), IsolationKey(1)).await.err().unwrap();
        assert!(matches!(e, ProviderError::Refused { .. }), "{e}");
        assert_eq!((o.calls(), t.calls()), (1, 0));
    }

    #[tokio::test]
    async fn both_failing_names_both() {
        let (o, t) = (
            Mock::new("overlay", Some(no_circuit)),
            Mock::new(
                "tor",
                Some(|| ProviderError::Timeout("Tor bootstrap".into())),
            ),
        );
        let a = AutoProvider::new(o, t);
        let e = a
            .connect(&target(), IsolationKey(1))
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("no overlay exit answered") && e.contains("Tor failed too"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn datagrams_only_through_the_overlay() {
        // Tor would refuse UDP: auto mode must never ask it, and must not hide overlay errors
        let (o, t) = (
            Mock::new("overlay", None),
            Mock::new("tor", Some(udp_refused)),
        );
        let a = AutoProvider::new(o.clone(), t.clone());
        assert!(a.datagram(IsolationKey(1)).await.is_ok());
        assert_eq!(o.udp_calls.load(Ordering::SeqCst), 1);
        assert_eq!(t.udp_calls.load(Ordering::SeqCst), 0);

        let (o, t) = (
            Mock::new("overlay", Some(no_circuit)),
            Mock::new("tor", None),
        );
        let a = AutoProvider::new(o, t.clone());
        assert!(a.datagram(IsolationKey(1)).await.is_err());
        assert_eq!(t.udp_calls.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn policy_is_a_pure_function_of_events_and_time() {
        let t0 = Instant::now();
        let mut p = AutoPolicy::new(Duration::from_secs(30));
        assert_eq!(p.route(t0), Route::OverlayThenTor);
        assert!(p.overlay_result(t0, Err(&no_circuit())));
        assert_eq!(p.route(t0 + Duration::from_secs(29)), Route::TorOnly);
        assert_eq!(p.route(t0 + Duration::from_secs(30)), Route::OverlayThenTor);
        assert!(!p.overlay_result(t0, Err(&refused())));
        assert!(!p.overlay_result(t0, Ok(())));
        assert_eq!(p.route(t0 + Duration::from_secs(1)), Route::OverlayThenTor);
        let policy_refusal = ProviderError::Refused {
            target: "x".into(),
            reason: "exit policy: port 25".into(),
        };
        assert!(AutoPolicy::falls_back(&policy_refusal));
        assert!(AutoPolicy::falls_back(&ProviderError::Timeout("x".into())));
        assert!(!AutoPolicy::falls_back(&ProviderError::Resolve("x".into())));
    }
}
