//! Cell crypto costs: onion layers (AES-128-CTR vs ChaCha20), the relay MAC, and the link AEAD
//! (AES-256-GCM vs ChaCha20-Poly1305) at several cell sizes.
//! `cargo bench -p overlay --bench cell_crypto`
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

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

fn transport(pattern: &str) -> snow::StatelessTransportState {
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
    i.into_stateless_transport_mode().unwrap()
}

/// The link AEAD as the link uses it: one snow transport message per cell.
fn link_aead(c: &mut Criterion) {
    let mut g = c.benchmark_group("link_aead");
    for size in SIZES {
        g.throughput(Throughput::Bytes(size as u64));
        let mut etm = overlay::link::LinkCipher::from_split(&([1u8; 32], [2u8; 32]), true);
        let cell = vec![0u8; size];
        let mut out = Vec::with_capacity(size + 16);
        g.bench_with_input(BenchmarkId::new("Blake3Etm", size), &size, |b, _| {
            b.iter(|| {
                out.clear();
                etm.send.seal_into(&cell, &mut out)
            })
        });
        for (name, p) in [
            ("ChaChaPoly", "Noise_NN_25519_ChaChaPoly_BLAKE2s"),
            ("AESGCM", "Noise_NN_25519_AESGCM_BLAKE2s"),
        ] {
            let t = transport(p);
            let cell = vec![0u8; size];
            let mut out = vec![0u8; size + 16];
            let mut n = 0u64;
            g.bench_with_input(BenchmarkId::new(name, size), &size, |b, _| {
                b.iter(|| {
                    n += 1;
                    t.write_message(n, &cell, &mut out).unwrap()
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, layers, link_aead);
criterion_main!(benches);
