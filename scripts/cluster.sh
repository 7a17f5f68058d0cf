#!/usr/bin/env bash
# Brings up, on this machine, a three-node NATS cluster (nats/cluster/n1..n3.conf), the ERP
# simulator and two retailflow replicas (instances `a` and `b`, HTTP on 8081 and 8082), and
# keeps them running until ctrl-c, which stops everything. Installs nats-server and builds
# the release binaries when missing.
#
#   scripts/cluster.sh              # up; ctrl-c to stop
#   scripts/cluster.sh --check      # up, check that one replica leads and both answer, stop
#   ... --no-build                  # use target/release as it is (the test command does)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
check=0
build=1
for arg in "$@"; do
    case "$arg" in
        --check) check=1 ;;
        --no-build) build=0 ;;
        *) echo "usage: scripts/cluster.sh [--check] [--no-build]" >&2; exit 2 ;;
    esac
done

scripts/install-nats-server.sh >/dev/null
nats_server="$root/.tools/nats-server/bin/nats-server"
[[ $build == 1 ]] && cargo build --release --quiet
bin="$root/target/release"

run_dir="$(mktemp -d /tmp/retailflow-cluster-run.XXXXXX)"
pids=()
stop() {
    echo "stopping..."
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf /tmp/retailflow-cluster "$run_dir"
}
trap stop EXIT INT TERM

# The configurations keep their store directories under /tmp/retailflow-cluster; start clean.
rm -rf /tmp/retailflow-cluster
for n in 1 2 3; do
    "$nats_server" -c "nats/cluster/n$n.conf" >"$run_dir/n$n.log" 2>&1 &
    pids+=($!)
done
for _ in $(seq 1 100); do
    if curl -sf 127.0.0.1:8331/healthz?js-enabled-only=true >/dev/null \
        && curl -s 127.0.0.1:8331/jsz | grep -q '"leader"'; then
        break
    fi
    sleep 0.2
done
echo "NATS cluster up: 127.0.0.1:4331,4332,4333 (monitoring 8331..8333)"

"$bin/erp-sim" --listen 127.0.0.1:8090 >"$run_dir/erp.log" 2>&1 &
pids+=($!)

for instance in a b; do
    port=$([[ $instance == a ]] && echo 8081 || echo 8082)
    cat >"$run_dir/$instance.toml" <<EOF
[nats]
url = "127.0.0.1:4331,127.0.0.1:4332,127.0.0.1:4333"

[streams]
replicas = 3

[api]
http = "127.0.0.1:$port"

[leader]
instance = "$instance"

[[erp]]
name = "erp"
url = "http://127.0.0.1:8090/api/v1/postings"
EOF
    "$bin/retailflow" run --config "$run_dir/$instance.toml" >"$run_dir/$instance.log" 2>&1 &
    pids+=($!)
done

up() { curl -sf "127.0.0.1:$1/healthz" >/dev/null; }
for _ in $(seq 1 150); do
    if up 8081 && up 8082; then break; fi
    sleep 0.2
done
for port in 8081 8082; do
    if ! up "$port"; then
        echo "replica on $port did not come up; its log:" >&2
        tail -20 "$run_dir/$([[ $port == 8081 ]] && echo a || echo b).log" >&2
        exit 1
    fi
    echo "replica on 127.0.0.1:$port: $(curl -s "127.0.0.1:$port/healthz")"
done

leads() { curl -s "127.0.0.1:$1/healthz" | grep -q '"leads":true'; }
if [[ $check == 1 ]]; then
    leader=""
    for _ in $(seq 1 50); do
        for port in 8081 8082; do leads "$port" && leader="$leader $port"; done
        [[ -n $leader ]] && break
        sleep 0.2
    done
    if [[ $(wc -w <<<"$leader") != 1 ]]; then
        echo "expected one leader, found:${leader:- none}" >&2
        exit 1
    fi
    leader=${leader// /}
    # pids: three nodes, the ERP simulator, replica a (8081), replica b (8082).
    if [[ $leader == 8081 ]]; then victim=${pids[4]} other=8082; else victim=${pids[5]} other=8081; fi
    kill -KILL "$victim"
    killed=$(date +%s%N)
    for _ in $(seq 1 100); do
        leads "$other" && break
        sleep 0.1
    done
    if ! leads "$other"; then
        echo "the replica on $other did not take over after the leader was killed" >&2
        exit 1
    fi
    echo "check passed: one leader ($leader), both answered; after kill -9 of the leader the replica on $other led $(( ($(date +%s%N) - killed) / 1000000 )) ms later"
    exit 0
fi

cat <<EOF

Logs in $run_dir. Try:
  curl -s 127.0.0.1:8081/healthz ; curl -s 127.0.0.1:8082/healthz     # who leads
  $bin/retailflow publish events.jsonl --nats 127.0.0.1:4331          # JSON-lines envelopes
  curl -s 127.0.0.1:8082/v1/availability/SKU-1                         # any replica answers
  curl -s 127.0.0.1:8090/api/v1/totals                                 # the ERP's books
Kill the leader (kill -9 its pid) and watch the other take over within a few seconds.
ctrl-c stops everything.
EOF
wait
