//! Stable-toolchain regression test: every committed corpus file (and every crash reproducer kept
//! under `fuzz/regressions/<target>/`) goes through the same target body the fuzzer runs.
//!
//! Run: `cargo test --manifest-path fuzz/Cargo.toml --no-default-features --test replay`

use std::fs;
use std::path::Path;
use std::time::Instant;

fn replay_dir(dir: &Path, target: &str) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let mut n = 0;
    let mut files: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
    files.sort();
    for f in files {
        if !f.is_file() {
            continue;
        }
        let data = fs::read(&f).expect("read corpus file");
        let ok = std::panic::catch_unwind(|| warren_fuzz::run(target, &data));
        match ok {
            Ok(true) => n += 1,
            Ok(false) => panic!("no target called {target}"),
            Err(_) => panic!("target {target} panicked on {}", f.display()),
        }
    }
    n
}

#[test]
fn every_corpus_file_replays_without_a_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let start = Instant::now();
    let mut total = 0;
    for target in warren_fuzz::TARGETS {
        let n = replay_dir(&root.join("corpus").join(target), target)
            + replay_dir(&root.join("regressions").join(target), target);
        assert!(n > 0, "no corpus for target {target}");
        println!("{target}: {n} inputs");
        total += n;
    }
    println!("replayed {total} inputs in {:?}", start.elapsed());
}

#[test]
fn every_target_has_a_fuzz_binary() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for target in warren_fuzz::TARGETS {
        let bin = root.join("fuzz_targets").join(format!("{target}.rs"));
        assert!(bin.is_file(), "missing {}", bin.display());
    }
}
