//! Hidden seeding: introduction points, rendezvous points and the end-to-end handshake, sans-IO.
//!
//! A hidden seeder (the *service*) keeps circuits to a few introduction points and registers an
//! `auth_key` at each (ESTABLISH_INTRO). It publishes a swarm record (see `dht::record`) listing its
//! introduction points and its service static key under a blinded key derived from the infohash.
//!
//! A downloader (the *client*) picks a rendezvous point, registers a random 20-byte cookie there
//! (ESTABLISH_RENDEZVOUS) over its own circuit, and sends INTRODUCE1 through another circuit to an
//! introduction point. INTRODUCE1 carries the first message of a `Noise_NK_25519_ChaChaPoly_BLAKE2s`
//! handshake to the service key; its encrypted payload names the rendezvous point and the cookie, so
//! the introduction point learns neither. The introduction point relays it as INTRODUCE2 to the
//! service, which builds its own circuit to the rendezvous point and sends RENDEZVOUS1 (cookie +
//! handshake reply). The rendezvous point joins the two circuits and hands the reply to the client as
//! RENDEZVOUS2. From then on both ends hold Noise transport keys: every payload between them is
//! end-to-end encrypted on top of each circuit's onion layers, and neither end learns the other's
//! address (each sees only its own circuit's hops).
//!
//! This module holds the message codecs ([`message`]), the handshake ([`handshake`]) and the tables
//! an introduction point and a rendezvous point keep ([`points`]). The circuit layer moves bytes.

pub mod handshake;
pub mod message;
pub mod points;

pub use handshake::{service_accept, ClientIntro, IntroRequest, ServiceKeys};
pub use message::{HsError, HsMessage, COOKIE_LEN};
pub use points::{IntroPointTable, RendezvousTable};
