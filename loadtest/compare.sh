#!/usr/bin/env bash
# Side-by-side benchmark: rollgate (telemetry on / off, per_core / shared
# runtime) vs nginx vs HAProxy vs direct, on loopback. See loadtest/README.md.
#
#   loadtest/compare.sh             full run (~15 min): writes BENCHMARKS.md's
#                                   comparison section + loadtest/comparison.svg
#   loadtest/compare.sh --quick     seconds: rollgate leg + direct only, no
#                                   nginx/HAProxy/wrk needed, no thresholds,
#                                   prints the table (CI smoke test)
#
# Options: --rounds N (3) --duration S (6) --conns N (64) --workers "1 2"
#          --modes "pinned unpinned" --out DIR --no-write --wait-idle MIN
#          --release / --debug (default: release for full runs, debug for --quick)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=loadtest/ports.sh
. "$ROOT/loadtest/ports.sh"
QUICK=0
ROUNDS=3
DUR=6
CONNS=64
WORKERS="1 2"
MODES="pinned unpinned"
OUT=""
WRITE=1
WAIT_IDLE=0
PROFILE=""
ARGS="$*"

while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --rounds) ROUNDS=$2; shift ;;
        --duration) DUR=$2; shift ;;
        --conns) CONNS=$2; shift ;;
        --workers) WORKERS=$2; shift ;;
        --modes) MODES=$2; shift ;;
        --out) OUT=$2; shift ;;
        --no-write) WRITE=0 ;;
        --wait-idle) WAIT_IDLE=$2; shift ;;
        --release) PROFILE=release ;;
        --debug) PROFILE=debug ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

if [ "$QUICK" = 1 ]; then
    ROUNDS=1; DUR=2; WORKERS="1"; MODES="unpinned"; WRITE=0
    PROFILE=${PROFILE:-debug}
fi
PROFILE=${PROFILE:-release}
OUT=${OUT:-$(mktemp -d /tmp/rollgate-compare.XXXXXX)}
mkdir -p "$OUT"
RESULTS="$OUT/results.jsonl"
: > "$RESULTS"
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true
export ROLLGATE_ADMIN_TOKEN=bench   # our configs' token; wins over any inherited one
export ROLLGATE_LOG=warn

log() { printf '\033[1m== %s\033[0m\n' "$*" >&2; }

# ---------- tools ----------
install_tools() {
    local missing=()
    command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
    command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
    command -v wrk >/dev/null || missing+=(wrk)
    command -v taskset >/dev/null || missing+=(util-linux)
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing ${missing[*]} from Debian"
        local SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}
PATH="$PATH:/usr/sbin:/sbin"
[ "$QUICK" = 1 ] || install_tools

log "building rollgate and rollgate-load ($PROFILE)"
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
if [ "$PROFILE" = release ]; then
    (cd "$ROOT" && cargo build -q --release -p rollgate -p rollgate-load)
else
    (cd "$ROOT" && cargo build -q -p rollgate -p rollgate-load)
fi
RG="$TARGET_DIR/$PROFILE/rollgate"
LOAD="$TARGET_DIR/$PROFILE/rollgate-load"

# ---------- process bookkeeping (only PIDs we started) ----------
PIDS=()
cleanup() {
    for p in "${PIDS[@]:-}"; do
        [ -n "$p" ] && kill "$p" 2>/dev/null || true
    done
    for p in "${PIDS[@]:-}"; do
        [ -n "$p" ] && wait "$p" 2>/dev/null || true
    done
    PIDS=()
}
trap cleanup EXIT


# RSS (KiB) of a process and its children (nginx master + workers).
rss_tree() {
    local pid=$1 total=0 kb
    for p in $pid $(ps -o pid= --ppid "$pid" 2>/dev/null); do
        kb=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
        total=$((total + ${kb:-0}))
    done
    echo "$total"
}

# Samples rss_tree of $1 every 0.25 s into $2 (max) until killed.
sample_rss() {
    local pid=$1 file=$2 max=0 v
    while kill -0 "$pid" 2>/dev/null; do
        v=$(rss_tree "$pid")
        [ "$v" -gt "$max" ] && max=$v && echo "$max" > "$file"
        sleep 0.25
    done
}

# ---------- ports ----------
P_V1=$(free_port); P_V2=$(free_port)
declare -A PORT=( [direct]=$P_V1 )
for n in nginx haproxy rollgate rollgate-notel rollgate-shared; do PORT[$n]=$(free_port); done
declare -A ADMIN=()
for n in rollgate rollgate-notel rollgate-shared; do ADMIN[$n]=$(free_port); done
declare -A PID_OF=()

# ---------- configs ----------
backend_conf() {   # the reference backend: 1-worker nginx `return 200` on V1 and V2 ports
    mkdir -p "$OUT/backend"
    cat > "$OUT/backend/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $OUT/backend/nginx.pid;
error_log $OUT/backend/error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    keepalive_requests 10000000;
    keepalive_timeout 120s;
    client_body_temp_path $OUT/backend/tmp;
    server {
        listen 127.0.0.1:$P_V1 backlog=4096;
        listen 127.0.0.1:$P_V2 backlog=4096;
        location / { return 200 "ok\n"; }
    }
}
EOF
}

nginx_conf() {
    local w=$1 d="$OUT/nginx"
    mkdir -p "$d/tmp"
    cat > "$d/nginx.conf" <<EOF
worker_processes $w;
daemon off;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    keepalive_requests 10000000;
    keepalive_timeout 120s;
    client_body_temp_path $d/tmp;
    proxy_temp_path $d/tmp;
    upstream v1 { server 127.0.0.1:$P_V1; keepalive 256; keepalive_requests 10000000; }
    upstream v2 { server 127.0.0.1:$P_V2; keepalive 256; keepalive_requests 10000000; }
    # Sticky 50/50 split on the user key, like rollgate's.
    split_clients "\${http_x_user_id}bench" \$variant { 50% v1; * v2; }
    server {
        listen 127.0.0.1:${PORT[nginx]} reuseport backlog=4096;
        location / {
            proxy_pass http://\$variant;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Rollgate-Variant \$variant;
            add_header X-Rollgate-Variant \$variant;
        }
    }
}
EOF
}

haproxy_conf() {
    local w=$1 d="$OUT/haproxy"
    mkdir -p "$d"
    cat > "$d/haproxy.cfg" <<EOF
global
    nbthread $w
    maxconn 9000
defaults
    mode http
    timeout connect 2s
    timeout client 120s
    timeout server 120s
    timeout http-keep-alive 120s
    option http-keep-alive
    http-reuse always
frontend fe
    bind 127.0.0.1:${PORT[haproxy]}
    default_backend be
backend be
    balance roundrobin
    cookie rgsrv insert indirect nocache
    option forwardfor
    server v1 127.0.0.1:$P_V1 weight 50 cookie v1
    server v2 127.0.0.1:$P_V2 weight 50 cookie v2
    http-response set-header X-Rollgate-Variant %[srv_name]
EOF
}

rollgate_conf() {   # name workers runtime telemetry
    local name=$1 w=$2 rt=$3 tel=$4 d="$OUT/$1"
    rm -rf "$d"; mkdir -p "$d/state"
    cat > "$d/rollgate.toml" <<EOF
[server]
listen = "127.0.0.1:${PORT[$name]}"
admin_listen = "127.0.0.1:${ADMIN[$name]}"
admin_token = "bench"
state_dir = "$d/state"
workers = $w
runtime = "$rt"
telemetry = $tel
header_read_timeout = "120s"
max_connections = 40000

[upstreams]
v1 = "http://127.0.0.1:$P_V1"
v2 = "http://127.0.0.1:$P_V2"

[routing]
sticky_header = "x-user-id"

[rollout]
auto_start = false

$(cat "$ROOT/src/demo/journeys.toml")
EOF
}

# ---------- start / stop ----------
PROXY_CPU=""; LOAD_CPU=""
pin() { # cpu-list command...   (foreground)
    local cpus=$1; shift
    if [ -n "$cpus" ]; then taskset -c "$cpus" "$@"; else "$@"; fi
}
spawn() { # cpu-list command...  (use as `spawn ... &`: the background subshell
          # execs the command, so $! is the server's own PID)
    local cpus=$1; shift
    if [ -n "$cpus" ]; then exec taskset -c "$cpus" "$@" </dev/null >/dev/null; else exec "$@" </dev/null >/dev/null; fi
}

start_backend() {
    if [ "$QUICK" = 1 ]; then
        spawn "$LOAD_CPU" "$LOAD" upstream --listen "127.0.0.1:$P_V1" --name v1 --max-time 30m 2>"$OUT/up1.log" &
        PIDS+=($!)
        spawn "$LOAD_CPU" "$LOAD" upstream --listen "127.0.0.1:$P_V2" --name v2 --max-time 30m 2>"$OUT/up2.log" &
        PIDS+=($!)
        PID_OF[direct]=$!
    else
        backend_conf
        spawn "$LOAD_CPU" nginx -e "$OUT/backend/error.log" -p "$OUT/backend" -c "$OUT/backend/nginx.conf" &
        PIDS+=($!); PID_OF[direct]=$!
    fi
    wait_port $P_V1; wait_port $P_V2
}

start_proxy() { # name workers
    local name=$1 w=$2
    case $name in
        direct) return 0 ;;
        nginx)
            nginx_conf "$w"
            spawn "$PROXY_CPU" nginx -e "$OUT/nginx/error.log" -p "$OUT/nginx" -c "$OUT/nginx/nginx.conf" &
            ;;
        haproxy)
            haproxy_conf "$w"
            spawn "$PROXY_CPU" haproxy -db -f "$OUT/haproxy/haproxy.cfg" 2>"$OUT/haproxy/stderr.log" &
            ;;
        rollgate) rollgate_conf "$name" "$w" per_core true ;;&
        rollgate-notel) rollgate_conf "$name" "$w" per_core false ;;&
        rollgate-shared) rollgate_conf "$name" "$w" shared true ;;&
        rollgate*)
            spawn "$PROXY_CPU" "$RG" run --config "$OUT/$name/rollgate.toml" 2>"$OUT/$name/stderr.log" &
            ;;
    esac
    PIDS+=($!); PID_OF[$name]=$!
    wait_port "${PORT[$name]}"
    case $name in
        rollgate*)
            wait_port "${ADMIN[$name]}"
            "$RG" weights 50 --admin "http://127.0.0.1:${ADMIN[$name]}" --token bench >/dev/null
            ;;
    esac
}

# ---------- measurements ----------
cat > "$OUT/report.lua" <<'EOF'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"rps":%.2f,"requests":%d,"duration_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d,"errors":%d}\n',
    summary.requests / (summary.duration / 1e6), summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max,
    e.connect + e.read + e.write + e.status + e.timeout))
end
EOF

# Closed-loop measurement of one proxy; writes `"wrk":{...}` (or
# `"report":{...}` in quick mode, where wrk is not needed) to $OUT/frag.
measure_max() { # name conns duration
    local name=$1 c=$2 d=$3 port=${PORT[$1]}
    if [ "$QUICK" = 1 ]; then
        pin "$LOAD_CPU" "$LOAD" run --target "http://127.0.0.1:$port" --closed -c "$c" -d "${d}s" \
            -q --json "$OUT/last.json" > "$OUT/last.txt"
        printf '"report":%s' "$(tr -d '\n' < "$OUT/last.json")" > "$OUT/frag"
    else
        pin "$LOAD_CPU" wrk -t1 -c"$c" -d"${d}s" --timeout 5s -s "$OUT/report.lua" \
            -H "x-user-id: user-42" "http://127.0.0.1:$port/" > "$OUT/last.txt" 2>&1
        local j; j=$(sed -n 's/^WRKJSON //p' "$OUT/last.txt")
        [ -n "$j" ] || { cat "$OUT/last.txt" >&2; return 1; }
        printf '"wrk":%s' "$j" > "$OUT/frag"
    fi
}

# Open-loop measurement at a fixed rate; writes `"report":{...}` to $OUT/frag.
measure_rate() { # name rate duration
    local name=$1 rate=$2 d=$3 port=${PORT[$1]}
    pin "$LOAD_CPU" "$LOAD" run --target "http://127.0.0.1:$port" --rate "$rate" -c "$CONNS" \
        -d "${d}s" -q --json "$OUT/last.json" > "$OUT/last.txt"
    printf '"report":%s' "$(tr -d '\n' < "$OUT/last.json")" > "$OUT/frag"
}

# Runs a command while sampling the RSS of proxy $1 (max, KiB) into $RSS_KB.
with_rss() { # name command...
    local name=$1; shift
    local pid=${PID_OF[$name]} f="$OUT/rss"
    echo 0 > "$f"
    sample_rss "$pid" "$f" &
    local sampler=$!
    "$@"
    kill "$sampler" 2>/dev/null || true
    wait "$sampler" 2>/dev/null || true
    RSS_KB=$(cat "$f")
}

legs() {
    if [ "$QUICK" = 1 ]; then echo "direct rollgate"
    else echo "direct nginx haproxy rollgate rollgate-notel rollgate-shared"; fi
}

set_mode() {
    if [ "$1" = pinned ]; then PROXY_CPU=0; LOAD_CPU=1; else PROXY_CPU=""; LOAD_CPU=""; fi
}

load_now() { cut -d' ' -f1-3 /proc/loadavg; }

start_all() { # workers
    start_backend
    for leg in $(legs); do start_proxy "$leg" "$1"; done
    # Warm every connection pool once (not recorded).
    for leg in $(legs); do measure_max "$leg" "$CONNS" 1; done
}

if [ "$WAIT_IDLE" != 0 ]; then
    for _ in $(seq 1 $((WAIT_IDLE * 6))); do
        awk '{exit !($1 < 1.0)}' /proc/loadavg && break
        log "load average $(load_now): waiting for the machine to go quiet"
        sleep 10
    done
fi
LOAD_BEFORE=$(load_now)
START_TIME=$(date +%s)
log "results in $OUT (load average $LOAD_BEFORE)"

# ---------- 1. throughput: alternating rounds per (workers, mode) ----------
declare -A NGINX_MAX=()
for mode in $MODES; do
    set_mode "$mode"
    for w in $WORKERS; do
        log "throughput: $w worker(s), $mode: $ROUNDS rounds x ($(legs)) x ${DUR}s, wrk -c$CONNS"
        start_all "$w"
        for r in $(seq 1 "$ROUNDS"); do
            for leg in $(legs); do
                with_rss "$leg" measure_max "$leg" "$CONNS" "$DUR"
                pinned=false; [ "$mode" = pinned ] && pinned=true
                line="{\"kind\":\"throughput\",\"proxy\":\"$leg\",\"workers\":$w,\"pinned\":$pinned,\"round\":$r,\"conns\":$CONNS,\"rss_kb\":$RSS_KB,$(cat "$OUT/frag")}"
                echo "$line" >> "$RESULTS"
                rps=$(printf '%s' "$line" | sed -nE 's/.*"(rps|achieved_rate)": *([0-9.]+).*/\2/p')
                rps=${rps:-0}
                printf '   round %s %-16s %10.0f req/s  rss %6d KiB\n' "$r" "$leg" "$rps" "$RSS_KB" >&2
                [ "$leg" = nginx ] && NGINX_MAX["$w-$mode-$r"]=$rps
            done
        done
        cleanup
    done
done

median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

# ---------- 2. latency at a fixed rate (open loop, 1 worker) ----------
FIXED_LEGS="direct nginx haproxy rollgate rollgate-notel"
[ "$QUICK" = 1 ] && FIXED_LEGS="direct rollgate"
for mode in $MODES; do
    set_mode "$mode"
    if [ "$QUICK" = 1 ]; then
        RATE=500
    else
        base=$(for k in "${!NGINX_MAX[@]}"; do case $k in 1-$mode-*) echo "${NGINX_MAX[$k]}";; esac; done | median)
        [ -n "$base" ] || continue
        RATE=$(awk -v b="$base" 'BEGIN {printf "%d", b / 2}')
    fi
    log "fixed rate: 1 worker, $mode, $RATE req/s, open loop, $ROUNDS rounds x ${DUR}s"
    start_all 1
    for r in $(seq 1 "$ROUNDS"); do
        for leg in $FIXED_LEGS; do
            with_rss "$leg" measure_rate "$leg" "$RATE" "$DUR"
            pinned=false; [ "$mode" = pinned ] && pinned=true
            echo "{\"kind\":\"fixed_rate\",\"proxy\":\"$leg\",\"workers\":1,\"pinned\":$pinned,\"round\":$r,\"rss_kb\":$RSS_KB,$(cat "$OUT/frag")}" >> "$RESULTS"
            printf '   round %s %-16s p50 %s  p99 %s (us)\n' "$r" "$leg" \
                "$(jq -r .latency.p50_us "$OUT/last.json" 2>/dev/null || echo ?)" \
                "$(jq -r .latency.p99_us "$OUT/last.json" 2>/dev/null || echo ?)" >&2
        done
    done
    cleanup
done

# ---------- 3. connections sweep (1 worker, unpinned, one round) ----------
if [ "$QUICK" = 0 ]; then
    set_mode unpinned
    SWEEP_LEGS="direct nginx haproxy rollgate"
    log "connections sweep: 1 16 128 1024 x ($SWEEP_LEGS) x ${DUR}s"
    start_all 1
    for c in 1 16 128 1024; do
        for leg in $SWEEP_LEGS; do
            measure_max "$leg" "$c" "$DUR"
            echo "{\"kind\":\"sweep\",\"proxy\":\"$leg\",\"workers\":1,\"pinned\":false,\"conns\":$c,$(cat "$OUT/frag")}" >> "$RESULTS"
            printf '   %5d conns %-16s %s\n' "$c" "$leg" "$(sed -n 's/^WRKJSON //p' "$OUT/last.txt" | cut -c1-60)" >&2
        done
    done
    cleanup
fi

# ---------- 4. RSS with 1,000 idle keep-alive connections ----------
IDLE_LEGS="nginx haproxy rollgate"
[ "$QUICK" = 1 ] && IDLE_LEGS="rollgate"
set_mode unpinned
log "idle: 1000 keep-alive connections held open ($IDLE_LEGS)"
start_backend
for leg in $IDLE_LEGS; do start_proxy "$leg" 1; done
for leg in $IDLE_LEGS; do
    "$LOAD" idle --target "http://127.0.0.1:${PORT[$leg]}" -c 1000 --hold 4s > "$OUT/idle.txt" &
    ip=$!
    for _ in $(seq 1 100); do grep -qs READY "$OUT/idle.txt" && break; sleep 0.1; done
    sleep 0.5
    kb=$(rss_tree "${PID_OF[$leg]}")
    wait "$ip" || true
    echo "{\"kind\":\"idle\",\"proxy\":\"$leg\",\"conns\":1000,\"rss_kb\":$kb}" >> "$RESULTS"
    printf '   %-16s %s KiB with %s\n' "$leg" "$kb" "$(head -1 "$OUT/idle.txt")" >&2
done
cleanup

# ---------- summary ----------
LOAD_AFTER=$(load_now)
MINUTES=$(( ($(date +%s) - START_TIME + 59) / 60 ))
VERSIONS="$(nginx -v 2>&1 | sed 's/.*version: //' || true), $(haproxy -v 2>/dev/null | head -1 | awk '{print "HAProxy " $3}' || true), $(wrk -v 2>&1 | head -1 | awk '{print $1, $2}' || true), $(rustc --version 2>/dev/null | awk '{print $1, $2}')"
[ "$QUICK" = 1 ] && VERSIONS="quick mode: backend = rollgate-load upstream, load = rollgate-load --closed"
NOTES=""
if awk -v l="${LOAD_BEFORE%% *}" 'BEGIN {exit !(l > 1.5)}'; then
    NOTES="the machine was busy (load average above, on 2 cores): other processes shared the cores, so absolute numbers and especially tail latencies are noisy; compare proxies within one table (rounds alternate), and prefer loadtest/profile.sh (instruction counts) for small differences"
fi
SUMMARY_ARGS=(--results "$RESULTS" --command "loadtest/compare.sh $ARGS" --date "$(date -u '+%Y-%m-%d %H:%M UTC')"
    --load "before $LOAD_BEFORE, after $LOAD_AFTER (1/5/15 min); run took ~${MINUTES} min" --versions "$VERSIONS"
    --notes "$NOTES")
if [ "$WRITE" = 1 ]; then
    "$LOAD" summarize "${SUMMARY_ARGS[@]}" --benchmarks "$ROOT/BENCHMARKS.md" \
        --svg "$ROOT/loadtest/comparison.svg" --svg-link loadtest/comparison.svg
    log "BENCHMARKS.md comparison section and loadtest/comparison.svg written"
else
    "$LOAD" summarize "${SUMMARY_ARGS[@]}" --svg "$OUT/comparison.svg"
fi
log "raw results: $RESULTS"
