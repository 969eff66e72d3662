#!/bin/bash
# BitTorrent engine benchmark on loopback (clearnet TCP, NOT anonymous).
# One warm libtorrent seeder; timed downloads of the same payload by warren, libtorrent, aria2c,
# rqbit (if on PATH) and then warren from a warren seeder. Prints MB/s (MB = 10^6 bytes); time is
# wall clock from leecher start to completion (includes tracker announce and handshakes).
# Every download is compared with cmp. cpu_s = the leecher's user+sys CPU seconds (/usr/bin/time).
# At exit: the median MB/s of each seeder/leecher pair over the runs.
#
# usage: share/scripts/bench_swarm.sh [size_MiB=1024] [runs=1]
# needs: python3-libtorrent (/usr/bin/python3), opentracker, mktorrent, aria2c; builds warren_node (release).
set -u
SIZE_MIB=${1:-1024}
RUNS=${2:-1}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)      # share/
ROOT=$(cd "$HERE/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
LT=$HERE/tests/support/lt_node.py
W=$CARGO_TARGET_DIR/release/examples/warren_node
[ -n "${SKIP_BUILD:-}" ] || cargo build --release -q -p share --example warren_node --manifest-path "$ROOT/Cargo.toml" || exit 1
for t in opentracker mktorrent aria2c; do command -v $t >/dev/null || { echo "missing $t"; exit 1; }; done
/usr/bin/python3 -c 'import libtorrent' || { echo "missing python3-libtorrent"; exit 1; }

BT=$(mktemp -d /tmp/warren-bench.XXXXXX); chmod 755 $BT
PIDS=()
cleanup() { medians; for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; sleep 0.5; for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done; rm -rf "$BT"; }
trap cleanup EXIT
mkdir -p $BT/data $BT/tracker $BT/logs
echo "payload: $SIZE_MIB MiB random"
head -c $((SIZE_MIB * 1048576)) /dev/urandom > $BT/data/payload.bin
TR=http://127.0.9.9:6979/announce
mktorrent -l 20 -a $TR -n payload.bin -o $BT/payload.torrent $BT/data/payload.bin >/dev/null
IH=$(/usr/bin/python3 -c "import libtorrent as lt;print(lt.torrent_info('$BT/payload.torrent').info_hash())")
echo $IH > $BT/tracker/whitelist.txt; chmod 755 $BT/tracker; chmod 644 $BT/tracker/whitelist.txt
opentracker -i 127.0.9.9 -p 6979 -P 6979 -d $BT/tracker -w whitelist.txt >/dev/null 2>&1 & PIDS+=($!)
/usr/bin/python3 $LT seed $BT/payload.torrent $BT/data 127.0.9.1 6901 > $BT/logs/lt_seed.log 2>&1 & PIDS+=($!)
sleep 2
BYTES=$((SIZE_MIB * 1048576))
TIME=(); [ -x /usr/bin/time ] && TIME=(/usr/bin/time -f "CPUSECONDS %U %S")
result() { # name seconds dir seeder cpu-seconds
  local ok=FAIL; cmp -s $3/payload.bin $BT/data/payload.bin && ok=identical
  python3 -c "print(f'RESULT leecher=$1 seeder=$4 MB/s={$BYTES/$2/1e6:.1f} seconds=$2 cpu_s=$5 verify=$ok')" | tee -a $BT/results
}
medians() { # median MB/s per seeder/leecher pair over the runs (printed at exit)
  [ -s $BT/results ] || return
  echo "MEDIANS over $RUNS run(s), load average now: $(cut -d' ' -f1-3 /proc/loadavg)"
  python3 - $BT/results <<'PY'
import sys, statistics, collections
runs, cpus = collections.defaultdict(list), collections.defaultdict(list)
for line in open(sys.argv[1]):
    f = dict(kv.split("=", 1) for kv in line.split()[1:] if "=" in kv)
    if "warmup" not in f["leecher"]:
        runs[(f["seeder"], f["leecher"])].append(float(f["MB/s"]))
        if f.get("cpu_s", "n/a") != "n/a":
            cpus[(f["seeder"], f["leecher"])].append(float(f["cpu_s"]))
for k, v in runs.items():
    c = f"{statistics.median(cpus[k]):.2f}" if cpus[k] else "n/a"
    print(f"MEDIAN seeder={k[0]} leecher={k[1]} MB/s={statistics.median(v):.1f} cpu_s={c} runs={v}")
PY
}
run() { # name seeder cmd...
  local name=$1 seeder=$2; shift 2
  rm -rf $BT/dl; mkdir -p $BT/dl; sync
  local t0=$(date +%s.%N)
  timeout 600 ${TIME[@]+"${TIME[@]}"} "$@" > $BT/logs/$name.log 2>&1
  local t1=$(date +%s.%N)
  # leecher CPU seconds (user+sys): a figure that depends little on what else runs
  local cpu=$(awk '/^CPUSECONDS /{print $2+$3}' $BT/logs/$name.log | tail -1)
  result $name $(python3 -c "print(round($t1-$t0,2))") $BT/dl $seeder ${cpu:-n/a}
}
echo "warm-up (libtorrent seed_mode hashes each piece on first request):"
run libtorrent-warmup libtorrent /usr/bin/python3 $LT leech $BT/payload.torrent $BT/dl 127.0.9.2 6902 127.0.9.1:6901
for i in $(seq 1 $RUNS); do
  run warren libtorrent $W get $BT/payload.torrent $BT/dl 127.0.9.3 127.0.9.1:6901
  run libtorrent libtorrent /usr/bin/python3 $LT leech $BT/payload.torrent $BT/dl 127.0.9.4 6904 127.0.9.1:6901
  run aria2c libtorrent aria2c --interface=127.0.9.5 --listen-port=6905 --enable-dht=false --enable-dht6=false \
      --bt-enable-lpd=false --enable-peer-exchange=false --seed-time=0 --bt-stop-timeout=120 \
      --file-allocation=none --summary-interval=0 --console-log-level=warn --bt-save-metadata=false \
      --bt-tracker-interval=5 --check-integrity=false -d $BT/dl $BT/payload.torrent
  if command -v rqbit >/dev/null; then
    run rqbit libtorrent rqbit --disable-dht --disable-dht-persistence --disable-lsd --disable-upnp-port-forward \
      --listen-ip 127.0.9.6 --listen-port 6906 -v warn download --exit-on-finish --disable-http-api \
      --initial-peers 127.0.9.1:6901 -o $BT/dl $BT/payload.torrent
  else
    echo "RESULT leecher=rqbit skipped (rqbit not on PATH)"
  fi
done
# warren seeder (data already hashed by the check at start), warren leecher
kill ${PIDS[1]} 2>/dev/null
$W seed-torrent $BT/payload.torrent $BT/data 127.0.9.7 > $BT/logs/w_seed.log 2>&1 & PIDS+=($!)
for k in $(seq 1 100); do grep -q READY $BT/logs/w_seed.log && break; sleep 0.2; done
WPORT=$(awk '/PORT/{print $2}' $BT/logs/w_seed.log)
for i in $(seq 1 $RUNS); do
  run warren warren $W get $BT/payload.torrent $BT/dl 127.0.9.8 127.0.9.7:$WPORT
  run libtorrent warren /usr/bin/python3 $LT leech $BT/payload.torrent $BT/dl 127.0.9.4 6904 127.0.9.7:$WPORT
done
