//! [`TorProvider`]: anonymous TCP streams from Tor exits, through arti-client.
//!
//! One `TorClient` per provider, bootstrapped on first use (or by [`TorProvider::bootstrap`]).
//! Each [`IsolationKey`] maps to its own arti `IsolationToken`, so streams of different keys (two
//! transfers) never share a Tor circuit, and so cannot be linked by their exit.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arti_client::{
    DataStream, ErrorKind, HasKind, IsolationToken, StreamPrefs, TorAddr, TorClient,
    TorClientConfig,
};
use async_trait::async_trait;
use overlay::{AnonDatagram, AnonProvider, BoxStream, IsolationKey, ProviderError, Target};
use tokio::sync::OnceCell;
use tor_proto::client::stream::ClientStreamCtrl;
use tor_rtcompat::PreferredRuntime;

use crate::config::{TorConfig, TorConfigError};
use crate::end_reason::end_reason_error;

/// More isolation keys than this and the token map is emptied (a key seen again then gets a new
/// token: a new circuit, never a shared one).
const MAX_TOKENS: usize = 65_536;

/// The Tor circuit a stream rides on, as arti knows it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TorCircuitInfo {
    /// arti's process-unique circuit id ("Circ 3.1"): two streams with the same id share a circuit.
    pub circuit: String,
    /// The exit relay (its identities), when arti still has the circuit's path.
    pub exit: Option<String>,
}

/// Opens streams through Tor exits. Cheap to share behind an `Arc`.
pub struct TorProvider {
    config: TorClientConfig,
    client: OnceCell<Arc<TorClient<PreferredRuntime>>>,
    tokens: Mutex<HashMap<IsolationKey, IsolationToken>>,
    bootstrap_timeout: Duration,
    connect_timeout: Duration,
    /// Names may resolve to private/loopback addresses (test networks: `allow_local_addrs`).
    resolve_local: bool,
    /// UDP requests refused so far (the first, and every 100th, is logged as a warning).
    udp_refused: std::sync::atomic::AtomicU64,
}

impl TorProvider {
    /// A provider for `cfg`; nothing touches the network until the first stream or
    /// [`TorProvider::bootstrap`].
    pub fn new(cfg: &TorConfig) -> Result<TorProvider, TorConfigError> {
        Ok(TorProvider {
            config: cfg.to_arti()?,
            client: OnceCell::new(),
            tokens: Mutex::new(HashMap::new()),
            bootstrap_timeout: cfg.bootstrap_timeout(),
            connect_timeout: cfg.connect_timeout(),
            resolve_local: cfg.allow_local_addrs,
            udp_refused: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Bootstraps the Tor client now (downloads the consensus, picks guards) if it has not been.
    pub async fn bootstrap(&self) -> Result<(), ProviderError> {
        self.client().await.map(|_| ())
    }

    async fn client(&self) -> Result<&Arc<TorClient<PreferredRuntime>>, ProviderError> {
        self.client
            .get_or_try_init(|| async {
                let t0 = std::time::Instant::now();
                let fut = TorClient::create_bootstrapped(self.config.clone());
                let c = tokio::time::timeout(self.bootstrap_timeout, fut)
                    .await
                    .map_err(|_| {
                        ProviderError::NoCircuit(format!(
                            "Tor bootstrap did not finish in {} s (are the directory \
                             authorities / fallback caches reachable?)",
                            self.bootstrap_timeout.as_secs()
                        ))
                    })?
                    .map_err(|e| {
                        ProviderError::NoCircuit(format!("Tor bootstrap failed: {}", report(&e)))
                    })?;
                tracing::info!(secs = t0.elapsed().as_secs_f64(), "Tor client bootstrapped");
                Ok(c)
            })
            .await
    }

    /// Stream preferences carrying `iso`'s isolation token.
    fn prefs(&self, iso: IsolationKey) -> StreamPrefs {
        let token = {
            // ok: a poisoned lock only means another thread panicked while inserting; the map
            // is still a valid map.
            let mut map = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
            if map.len() >= MAX_TOKENS && !map.contains_key(&iso) {
                map.clear();
            }
            *map.entry(iso).or_insert_with(IsolationToken::new)
        };
        let mut prefs = StreamPrefs::new();
        prefs.set_isolation(token);
        if self.resolve_local {
            prefs.resolve_local_addrs(arti_client::config::BoolOrAuto::Explicit(true));
        }
        prefs
    }

    /// A stream to `target` through a Tor exit on `iso`'s circuit, with that circuit's identity
    /// (`None` only if arti has already dropped the circuit). [`AnonProvider::connect`] is this
    /// without the identity.
    pub async fn connect_tor(
        &self,
        target: &Target,
        iso: IsolationKey,
    ) -> Result<(DataStream, Option<TorCircuitInfo>), ProviderError> {
        let what = target.to_string();
        let addr = match target {
            // an address the caller already has: arti calls these "dangerous" only because a
            // local resolver may have produced them; ours come from trackers/peers via exits
            Target::Addr(a) => TorAddr::dangerously_from(*a),
            // the exit resolves the name
            Target::Host(h, p) => TorAddr::from((h.as_str(), *p)),
        }
        .map_err(|e| ProviderError::Refused {
            target: what.clone(),
            reason: format!("not a valid Tor stream target: {e}"),
        })?;
        let client = self.client().await?;
        let prefs = self.prefs(iso);
        let s: DataStream = tokio::time::timeout(
            self.connect_timeout,
            client.connect_with_prefs(addr, &prefs),
        )
        .await
        .map_err(|_| {
            ProviderError::Timeout(format!(
                "Tor stream to {what} not open after {} s",
                self.connect_timeout.as_secs()
            ))
        })?
        .map_err(|e| map_error(&e, &what, false))?;
        let circ = s
            .client_stream_ctrl()
            .and_then(|c| c.tunnel())
            .map(|t| TorCircuitInfo {
                circuit: t.unique_id().to_string(),
                exit: t.last_hop_info().ok().flatten().map(|h| h.to_string()),
            });
        Ok((s, circ))
    }

    /// How many isolation keys have their own token (for tests and the dashboard).
    pub fn isolation_groups(&self) -> usize {
        self.tokens.lock().map(|m| m.len()).unwrap_or(0)
    }
}

/// The whole error chain on one line.
fn report(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = c.source();
    }
    s
}

/// The reason code of the END cell behind `e`, if an exit's END is what failed the request.
fn end_reason(e: &arti_client::Error) -> Option<u8> {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = src {
        if let Some(tor_proto::Error::EndReceived(r)) = c.downcast_ref::<tor_proto::Error>() {
            return Some(u8::from(*r));
        }
        src = c.source();
    }
    None
}

/// arti's error for `what` (a target or a name) as a provider error. An exit's END is mapped by
/// its reason code ([`end_reason_error`]), not by arti's error kind, which folds several reasons
/// together.
fn map_error(e: &arti_client::Error, what: &str, resolving: bool) -> ProviderError {
    if let Some(code) = end_reason(e) {
        return end_reason_error(code, what, resolving);
    }
    let text = report(e);
    match e.kind() {
        ErrorKind::RemoteConnectionRefused
        | ErrorKind::ExitPolicyRejected
        | ErrorKind::ForbiddenStreamTarget
        | ErrorKind::InvalidStreamTarget
        | ErrorKind::RemoteStreamClosed
        | ErrorKind::RemoteStreamReset
        | ErrorKind::RemoteStreamError
        | ErrorKind::RemoteNetworkFailed => ProviderError::Refused {
            target: what.to_string(),
            reason: text,
        },
        ErrorKind::RemoteHostNotFound | ErrorKind::RemoteHostResolutionFailed => {
            if resolving {
                ProviderError::Resolve(format!("{what}: {text}"))
            } else {
                ProviderError::Refused {
                    target: what.to_string(),
                    reason: text,
                }
            }
        }
        ErrorKind::TorNetworkTimeout | ErrorKind::RemoteNetworkTimeout | ErrorKind::ExitTimeout => {
            ProviderError::Timeout(format!("Tor, {what}: {text}"))
        }
        ErrorKind::CircuitCollapse => ProviderError::Closed(format!("Tor circuit: {text}")),
        _ => ProviderError::NoCircuit(format!("Tor, {what}: {text}")),
    }
}

#[async_trait]
impl AnonProvider for TorProvider {
    fn name(&self) -> &'static str {
        "tor"
    }

    async fn connect(
        &self,
        target: &Target,
        iso: IsolationKey,
    ) -> Result<BoxStream, ProviderError> {
        let (s, circ) = self.connect_tor(target, iso).await?;
        tracing::debug!(
            target = %target,
            iso = iso.0,
            circuit = circ.as_ref().map(|c| c.circuit.as_str()).unwrap_or("?"),
            exit = circ.as_ref().and_then(|c| c.exit.as_deref()).unwrap_or("?"),
            "Tor stream open"
        );
        Ok(Box::pin(s))
    }
    async fn datagram(&self, iso: IsolationKey) -> Result<Box<dyn AnonDatagram>, ProviderError> {
        // say it where the user sees it, not only to the caller (a tunnelled program gets no
        // error for a UDP send): the first refusal and then every 100th
        let n = self
            .udp_refused
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if n.is_multiple_of(100) {
            tracing::warn!(
                refused = n + 1,
                iso = iso.0,
                "refused: this provider cannot carry {}",
                crate::UDP_REFUSAL
            );
        }
        Err(ProviderError::Unsupported(crate::UDP_REFUSAL))
    }

    async fn resolve(&self, name: &str, iso: IsolationKey) -> Result<Vec<IpAddr>, ProviderError> {
        let client = self.client().await?;
        let prefs = self.prefs(iso);
        tokio::time::timeout(
            self.connect_timeout,
            client.resolve_with_prefs(name, &prefs),
        )
        .await
        .map_err(|_| ProviderError::Timeout(format!("Tor resolve of {name}")))?
        .map_err(|e| map_error(&e, name, true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn udp_is_refused_without_touching_the_network() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = TorConfig {
            trust_all_permissions: true,
            ..TorConfig::default()
        }
        .with_default_dirs(dir.path());
        let p = TorProvider::new(&cfg).unwrap();
        let e = match p.datagram(IsolationKey(1)).await {
            Err(e) => e,
            Ok(_) => panic!("Tor cannot carry UDP"),
        };
        assert!(matches!(e, ProviderError::Unsupported(_)));
        let msg = e.to_string();
        assert!(
            msg.contains("UDP through Tor") && msg.contains("--via auto"),
            "{msg}"
        );
        assert_eq!(p.name(), "tor");
    }

    #[test]
    fn one_token_per_key() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = TorConfig::default().with_default_dirs(dir.path());
        let p = TorProvider::new(&cfg).unwrap();
        let _ = p.prefs(IsolationKey(1));
        let _ = p.prefs(IsolationKey(1));
        let _ = p.prefs(IsolationKey(2));
        assert_eq!(p.isolation_groups(), 2);
        let a = *p.tokens.lock().unwrap().get(&IsolationKey(1)).unwrap();
        let b = *p.tokens.lock().unwrap().get(&IsolationKey(2)).unwrap();
        assert_ne!(a, b);
    }
}
