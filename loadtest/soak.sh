#!/usr/bin/env bash
# Soak: rollgate under a steady open-loop rate for SOAK_SECONDS through a
# whole compressed rollout (canary-5 -> canary-25 -> canary-50 -> full ->
# promoted), sampling the rollgate process's RSS and open fds every
# SAMPLE_SECONDS. Writes samples.csv and summary.txt to OUT and prints the
# summary; exits non-zero when a check fails:
#   - RSS flat within +-10 % of its post-warm-up median (warm-up = first 20 %
#     of the run, at least one sample),
#   - no fd growth after warm-up (last sample <= max during the first
#     post-warm-up minute + 2),
#   - no failed request other than the injected ones (one malformed request
#     per sample, which must be answered 400),
#   - the rollout reached `promoted`.
#
#   SOAK_SECONDS=1800 loadtest/soak.sh          # the 30-minute soak
#   SOAK_SECONDS=120  loadtest/soak.sh          # the 2-minute version
#   SOAK_RATE=800 SOAK_SECONDS=600 OUT=/tmp/s loadtest/soak.sh
#
# The 2-minute version runs in CI (scripts/test.sh); the 30-minute one does
# not. Loopback only; ports from the kernel. Needs: cargo, python3, curl.
set -euo pipefail
cd "$(dirname "$0")/.."

SOAK_SECONDS="${SOAK_SECONDS:-1800}"
SOAK_RATE="${SOAK_RATE:-500}"
SAMPLE_SECONDS="${SAMPLE_SECONDS:-10}"
OUT="${OUT:-$(mktemp -d /tmp/rollgate-soak.XXXXXX)}"
TOKEN="soak-token"
mkdir -p "$OUT"

if [ "$SOAK_SECONDS" -lt 60 ] || [ "$SOAK_SECONDS" -gt 3600 ]; then
    echo "SOAK_SECONDS must be 60..3600" >&2
    exit 2
fi

echo "==> building rollgate and rollgate-load (release)"
cargo build --release --quiet -p rollgate -p rollgate-load
BIN=target/release/rollgate
LOAD=target/release/rollgate-load

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}
PROXY_PORT=$(free_port)
ADMIN_PORT=$(free_port)
V1_PORT=$(free_port)
V2_PORT=$(free_port)

PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

# Upstreams: V2 a little faster than V1, no faults (so any error is the proxy's).
"$LOAD" upstream --listen "127.0.0.1:$V1_PORT" --name v1 --median-ms 3 --p95-ms 8 \
    --threads 1 --max-time "$((SOAK_SECONDS + 120))s" >"$OUT/v1.log" 2>&1 &
PIDS+=($!)
"$LOAD" upstream --listen "127.0.0.1:$V2_PORT" --name v2 --median-ms 2 --p95-ms 6 \
    --threads 1 --max-time "$((SOAK_SECONDS + 120))s" >"$OUT/v2.log" 2>&1 &
PIDS+=($!)

# The rollout compressed to the run: four phases and the final sustain share
# the first ~70 % of it; the rest runs promoted (and frozen).
STEP=$((SOAK_SECONDS * 7 / 10 / 5))
[ "$STEP" -ge 5 ] || STEP=5
WINDOW=$((STEP < 30 ? STEP : 30))
COOLDOWN=$((STEP / 4 > 2 ? STEP / 4 : 2))
cat >"$OUT/rollgate.toml" <<EOF
[server]
listen = "127.0.0.1:$PROXY_PORT"
admin_listen = "127.0.0.1:$ADMIN_PORT"
admin_token = "$TOKEN"
state_dir = "$OUT/state"
workers = 1

[upstreams]
v1 = "http://127.0.0.1:$V1_PORT"
v2 = "http://127.0.0.1:$V2_PORT"
timeout = "5s"

[routing]
sticky_header = "x-user-id"

$(cat src/demo/journeys.toml)

# Gates wide enough for the sequential judge to show a clean canary inside
# within holds of seconds (as the demo's): the soak measures the process,
# not the judgment.
[gates]
cooldown = "${COOLDOWN}s"
alpha_inside = 0.2
latency_vs_control_max = 0.25
tail_vs_control = false

[rollout]
auto_start = true
tick = "1s"
window = "${WINDOW}s"
min_samples = 10
error_rate_max = 0.02
error_rate_margin = 0.01
payment_success_min = 0.9
full_sustain = "${STEP}s"

[rollout.flags]
SHADOW_PASS_24H = 1
A2_V26_COMPLIANT = 1
EVIDENCE_BUNDLE = 1

[[rollout.phases]]
name = "canary-5"
weight = 5
hold = "${STEP}s"
[[rollout.phases]]
name = "canary-25"
weight = 25
hold = "${STEP}s"
approval = "cfo"
[[rollout.phases]]
name = "canary-50"
weight = 50
hold = "${STEP}s"
p95_ms = 120
[[rollout.phases]]
name = "full"
weight = 100
p95_ms = 120
approval = "ceo"
approval_waived_if_green = true
EOF
"$BIN" check --config "$OUT/rollgate.toml" >/dev/null

ROLLGATE_LOG=warn "$BIN" run --config "$OUT/rollgate.toml" >"$OUT/rollgate.log" 2>&1 &
RG_PID=$!
PIDS+=($RG_PID)
for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$ADMIN_PORT/healthz" >/dev/null 2>&1 && break
    sleep 0.1
done
curl -fsS "http://127.0.0.1:$ADMIN_PORT/healthz" >/dev/null
# The CFO approval the 25 % phase needs, given up front.
curl -fsS -X POST -H "authorization: Bearer $TOKEN" \
    -d '{"role": "cfo", "by": "soak"}' "http://127.0.0.1:$ADMIN_PORT/api/v1/approvals" >/dev/null

echo "==> soak: ${SOAK_SECONDS}s at ${SOAK_RATE} req/s, sample every ${SAMPLE_SECONDS}s, out: $OUT"
"$LOAD" run --target "http://127.0.0.1:$PROXY_PORT" --rate "$SOAK_RATE" -c 32 \
    --users 2000 -d "${SOAK_SECONDS}s" -q --json "$OUT/load.json" >"$OUT/load.txt" 2>&1 &
LOAD_PID=$!
PIDS+=($LOAD_PID)

# One malformed request per sample: the injected errors (answered 400,
# never forwarded), sent on a raw socket with no client library in between.
inject() {
    python3 - "$PROXY_PORT" <<'PY'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
s.sendall(b"NOT A VALID REQUEST LINE\r\n\r\n")
answer = s.recv(12)
s.close()
print("ok" if answer == b"HTTP/1.1 400" else "bad:" + answer.decode("latin-1"))
PY
}

LOADAVG_START=$(cut -d' ' -f1-3 /proc/loadavg)
echo "t_s,rss_kb,fds,threads,state,phase,v2_weight,injected_ok" >"$OUT/samples.csv"
START=$(date +%s)
INJECTED=0
INJECTED_OK=0
while kill -0 "$LOAD_PID" 2>/dev/null; do
    NOW=$(( $(date +%s) - START ))
    RSS=$(awk '/^VmRSS:/ {print $2}' "/proc/$RG_PID/status")
    THREADS=$(awk '/^Threads:/ {print $2}' "/proc/$RG_PID/status")
    FDS=$(find "/proc/$RG_PID/fd" -mindepth 1 -maxdepth 1 | wc -l)
    STATUS=$(curl -fsS "http://127.0.0.1:$ADMIN_PORT/api/v1/status" || echo '{}')
    read -r STATE PHASE V2W < <(printf '%s' "$STATUS" | python3 -c '
import json, sys
s = json.load(sys.stdin)
print(s.get("state", "?"), s.get("phase") or "-", (s.get("weights") or {}).get("v2", "?"))')
    R=$(inject)
    INJECTED=$((INJECTED + 1))
    [ "$R" = ok ] && INJECTED_OK=$((INJECTED_OK + 1))
    echo "$NOW,$RSS,$FDS,$THREADS,$STATE,$PHASE,$V2W,$R" >>"$OUT/samples.csv"
    printf '  t=%4ss rss=%6s kB fds=%3s %s %s v2=%s%%\n' "$NOW" "$RSS" "$FDS" "$STATE" "$PHASE" "$V2W"
    sleep "$SAMPLE_SECONDS"
done
wait "$LOAD_PID" || true
LOADAVG_END=$(cut -d' ' -f1-3 /proc/loadavg)
MACHINE="$(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), Linux $(uname -r)"
METRICS=$(curl -fsS "http://127.0.0.1:$ADMIN_PORT/metrics" || true)
printf '%s\n' "$METRICS" >"$OUT/metrics.txt"

python3 - "$OUT" "$SOAK_SECONDS" "$SOAK_RATE" "$INJECTED" "$INJECTED_OK" "$MACHINE" "$LOADAVG_START" "$LOADAVG_END" <<'PY'
import csv, datetime, json, statistics, sys
out, secs, rate, injected, injected_ok = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
machine, load_start, load_end = sys.argv[6], sys.argv[7], sys.argv[8]
rows = list(csv.DictReader(open(f"{out}/samples.csv")))
load = json.load(open(f"{out}/load.json"))
warm = max(1, len(rows) // 5)
post = rows[warm:] or rows
rss = [int(r["rss_kb"]) for r in post]
fds = [int(r["fds"]) for r in post]
med = statistics.median(rss)
dev = max(abs(x - med) / med for x in rss) * 100
first_min = [int(r["fds"]) for r in post if int(r["t_s"]) < int(post[0]["t_s"]) + 60] or fds[:1]
fd_growth = fds[-1] - max(first_min)
failed = sum(load["errors"].values()) + sum(v for k, v in load["status"].items() if not k.startswith("2"))
upstream_errors = 0.0
for line in open(f"{out}/metrics.txt"):
    if line.startswith("rollgate_upstream_errors_total{"):
        upstream_errors += float(line.rsplit(" ", 1)[1])
states = []
for r in rows:
    if not states or states[-1] != (r["state"], r["phase"]):
        states.append((r["state"], r["phase"]))
final = rows[-1]["state"] if rows else "?"
checks = {
    "rss_flat_10pct": dev <= 10.0,
    "no_fd_growth": fd_growth <= 2,
    "no_errors_but_injected": failed == 0 and upstream_errors == 0 and injected_ok == injected,
    "promoted": any(s == "promoted" for s, _ in states),
}
lines = [
    f"date {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; machine {machine}; load average {load_start} at start, {load_end} at end",
    f"duration {secs} s, target rate {rate:.0f} req/s, achieved {load['achieved_rate']:.1f} req/s, {load['completed']} responses",
    f"samples {len(rows)} (warm-up {warm} excluded); RSS after warm-up: min {min(rss)/1024:.1f} MiB, median {med/1024:.1f} MiB, max {max(rss)/1024:.1f} MiB, max deviation {dev:.1f} %",
    f"RSS at first sample {int(rows[0]['rss_kb'])/1024:.1f} MiB, at last {int(rows[-1]['rss_kb'])/1024:.1f} MiB",
    f"fds after warm-up: min {min(fds)}, max {max(fds)}, last {fds[-1]} (growth vs first post-warm-up minute: {fd_growth})",
    "latency (open loop, from the intended send time): p50 {:.2f} ms, p99 {:.2f} ms, p99.9 {:.2f} ms, max {:.2f} ms".format(
        *(load["latency"][k] / 1000 for k in ("p50_us", "p99_us", "p999_us", "max_us"))),
    f"status {load['status']} errors {load['errors']}; upstream errors in /metrics {upstream_errors:.0f}; injected malformed requests {injected}, answered 400: {injected_ok}",
    "rollout: " + " -> ".join(f"{s}/{p}" for s, p in states),
    "checks: " + ", ".join(f"{k}={'PASS' if v else 'FAIL'}" for k, v in checks.items()),
]
text = "\n".join(lines)
open(f"{out}/summary.txt", "w").write(text + "\n")
print(text)
sys.exit(0 if all(checks.values()) else 1)
PY
