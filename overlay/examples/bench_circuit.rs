//! `cargo run --release -p overlay --example bench_circuit -- --hops 3 --mb 512 --builds 100 [--workers N]`
use overlay::bench::{circuit, BenchOpts};

fn main() {
    let mut opts = BenchOpts::default();
    let mut workers = 0usize;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let v = args.get(i + 1).and_then(|s| s.parse::<u64>().ok());
        match (args[i].as_str(), v) {
            ("--hops", Some(v)) => opts.hops = v as usize,
            ("--mb", Some(v)) => opts.bytes = v << 20,
            ("--builds", Some(v)) => opts.builds = v as usize,
            ("--workers", Some(v)) => workers = v as usize,
            (a, _) => {
                eprintln!("usage: bench_circuit [--hops N] [--mb MB] [--builds N] [--workers N] (bad argument {a})");
                std::process::exit(2);
            }
        }
        i += 2;
    }
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if workers > 0 {
        b.worker_threads(workers);
    }
    let rt = match b.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start runtime: {e}");
            std::process::exit(1);
        }
    };
    match rt.block_on(circuit(opts)) {
        Ok(r) => println!("{r}"),
        Err(e) => {
            eprintln!("bench failed: {e}");
            std::process::exit(1);
        }
    }
}
