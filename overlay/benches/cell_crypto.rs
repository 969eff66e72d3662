//! Cell crypto costs: onion layers (AES-128-CTR vs ChaCha20 vs BLAKE3) at several cell sizes, the
//! relay MAC, and the link AEADs (ring ChaCha20-Poly1305 and AES-256-GCM, BLAKE3 EtM, snow) on one
//! 16 KiB cell, side by side in one run.
//! `cargo bench -p overlay --bench cell_crypto` (only the links: `... -- link_aead`)
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ring::aead;

use overlay::cell::{CELL_SIZE, WIRE_CELL};
use overlay::link::{FrameAead, LinkCipher};
use overlay::relay_crypto::{DirKeys, LayerCipher};

const SIZES: [usize; 3] = [512, 4096, 16384];

fn layers(c: &mut Criterion) {
    let mut g = c.benchmark_group("layer");
    for size in SIZES {
        g.throughput(Throughput::Bytes(size as u64));
        for cipher in [
            LayerCipher::Aes128Ctr,
            LayerCipher::ChaCha20,
            LayerCipher::Blake3Xof,
        ] {
            let mut k = DirKeys::new(cipher, [7; 32], [9; 32]);
            let mut body = vec![0u8; size];
            g.bench_with_input(
                BenchmarkId::new(format!("{cipher:?}"), size),
                &size,
                |b, _| b.iter(|| k.apply(&mut body)),
            );
        }
        // what the destination hop pays: layer + MAC
        let mut k = DirKeys::new(overlay::relay_crypto::LAYER_CIPHER, [7; 32], [9; 32]);
        let mut body = vec![0u8; size];
        g.bench_with_input(BenchmarkId::new("seal(layer+mac)", size), &size, |b, _| {
            b.iter(|| k.seal(&mut body))
        });
    }
    g.finish();
}

/// Both ends of a snow transport for `pattern` (an NN handshake: the keys do not matter here).
fn transports(pattern: &str) -> (snow::StatelessTransportState, snow::StatelessTransportState) {
    let mut i = snow::Builder::new(pattern.parse().unwrap())
        .build_initiator()
        .unwrap();
    let mut r = snow::Builder::new(pattern.parse().unwrap())
        .build_responder()
        .unwrap();
    let (mut m, mut o) = (vec![0u8; 256], vec![0u8; 256]);
    let n = i.write_message(&[], &mut m).unwrap();
    r.read_message(&m[..n], &mut o).unwrap();
    let n = r.write_message(&[], &mut m).unwrap();
    i.read_message(&m[..n], &mut o).unwrap();
    (
        i.into_stateless_transport_mode().unwrap(),
        r.into_stateless_transport_mode().unwrap(),
    )
}

/// Both ends of a link for every link AEAD (fresh counters).
fn link_pairs() -> Vec<(String, LinkCipher, LinkCipher)> {
    let split = ([1u8; 32], [2u8; 32]);
    let mut v: Vec<_> = [
        FrameAead::ChaCha20Poly1305,
        FrameAead::Aes256Gcm,
        FrameAead::Blake3Etm,
    ]
    .into_iter()
    .map(|a| {
        (
            format!("{a:?}"),
            LinkCipher::from_split_with(a, &split, true),
            LinkCipher::from_split_with(a, &split, false),
        )
    })
    .collect();
    for (name, p) in [
        ("NoiseChaChaPoly", "Noise_NN_25519_ChaChaPoly_BLAKE2s"),
        ("NoiseAESGCM", "Noise_NN_25519_AESGCM_BLAKE2s"),
    ] {
        let (i, r) = transports(p);
        v.push((
            name.to_string(),
            LinkCipher::from_transport(i),
            LinkCipher::from_transport(r),
        ));
    }
    v
}

/// The link AEADs as the link uses them (`LinkDir`): seal one 16 KiB cell into a frame, and seal
/// then open it (what a relay pays per cell per link hop). Throughput counts the cell once. The
/// `ring-raw` rows seal in place with no frame copy, as `openssl speed` measures.
fn link_aead(c: &mut Criterion) {
    let mut g = c.benchmark_group("link_aead");
    g.throughput(Throughput::Bytes(CELL_SIZE as u64));
    let cell = vec![0x5au8; CELL_SIZE];
    let mut out = Vec::with_capacity(WIRE_CELL);
    for (name, mut a, _) in link_pairs() {
        g.bench_function(BenchmarkId::new(&name, "seal"), |bn| {
            bn.iter(|| {
                out.clear();
                a.send.seal_into(black_box(&cell), &mut out);
            })
        });
    }
    for (name, mut a, mut b) in link_pairs() {
        g.bench_function(BenchmarkId::new(&name, "seal+open"), |bn| {
            bn.iter(|| {
                out.clear();
                a.send.seal_into(black_box(&cell), &mut out);
                b.recv.open(&out).unwrap()
            })
        });
    }
    for (name, alg) in [
        ("ring-raw-ChaCha20Poly1305", &aead::CHACHA20_POLY1305),
        ("ring-raw-Aes256Gcm", &aead::AES_256_GCM),
    ] {
        let key = aead::LessSafeKey::new(aead::UnboundKey::new(alg, &[7u8; 32]).unwrap());
        let mut buf = cell.clone();
        let mut n = 0u64;
        g.bench_function(BenchmarkId::new(name, "seal"), |bn| {
            bn.iter(|| {
                n += 1;
                let mut nonce = [0u8; 12];
                nonce[4..].copy_from_slice(&n.to_be_bytes());
                let nonce = aead::Nonce::assume_unique_for_key(nonce);
                key.seal_in_place_separate_tag(nonce, aead::Aad::empty(), &mut buf)
                    .unwrap()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, layers, link_aead);
criterion_main!(benches);
