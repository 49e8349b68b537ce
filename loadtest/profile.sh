#!/usr/bin/env bash
# Instructions per proxied request under callgrind, for rollgate (telemetry
# on and off), a bare hyper proxy (examples/bare_proxy.rs: the floor for any
# proxy on hyper), nginx and HAProxy with one worker each, plus rollgate's
# hottest functions. Instruction counts do not depend on how busy the
# machine is, so this works where wall-clock benchmarks are noisy.
# (perf's hardware counters are not available on this machine: `perf stat -e
# instructions true` says <not supported>.) See loadtest/PROFILE.md.
#
#   loadtest/profile.sh [--requests N] [--out DIR] [--preload LIB] [--rollgate-only]
#   --preload LIB: also profile rollgate with LIB in LD_PRELOAD, e.g. Debian's
#                  libmimalloc2.0 (/usr/lib/x86_64-linux-gnu/libmimalloc.so.2),
#                  to see what another malloc would save without rebuilding
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
N=20000
OUT=""
PRELOAD=""
ONLY_RG=""
while [ $# -gt 0 ]; do
    case "$1" in
        --requests) N=$2; shift ;;
        --out) OUT=$2; shift ;;
        --preload) PRELOAD=$2; shift ;;
        --rollgate-only) ONLY_RG=1 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
OUT=${OUT:-$(mktemp -d /tmp/rollgate-profile.XXXXXX)}
mkdir -p "$OUT"
PATH="$PATH:/usr/sbin:/sbin"
export ROLLGATE_ADMIN_TOKEN=bench ROLLGATE_LOG=warn

missing=()
command -v valgrind >/dev/null || missing+=(valgrind)
command -v nginx >/dev/null || missing+=(nginx-light)
command -v haproxy >/dev/null || missing+=(haproxy)
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
(cd "$ROOT" && cargo build -q --release -p rollgate -p rollgate-load --bins --example bare_proxy)
RG="$TARGET_DIR/release/rollgate"
FLOOR="$TARGET_DIR/release/examples/bare_proxy"
LOAD="$TARGET_DIR/release/rollgate-load"

PIDS=()
cleanup() {
    for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]:-}"; do [ -n "$p" ] && wait "$p" 2>/dev/null || true; done
    PIDS=()
}
trap cleanup EXIT
# shellcheck source=loadtest/ports.sh
. "$ROOT/loadtest/ports.sh"
P_V1=$(free_port); P_V2=$(free_port); P_NGINX=$(free_port); P_HAPROXY=$(free_port)
P_RG_ON=$(free_port); P_RG_OFF=$(free_port); P_FLOOR=$(free_port); P_RG_PRELOAD=$(free_port)
declare -A ADMIN_OF=()
for p in "$P_RG_ON" "$P_RG_OFF" "$P_RG_PRELOAD"; do ADMIN_OF[$p]=$(free_port); done

# Backend: a plain nginx `return 200` on V1/V2 (not profiled).
mkdir -p "$OUT/backend"
cat > "$OUT/backend/nginx.conf" <<EOF
worker_processes 1; daemon off; pid $OUT/backend/nginx.pid; error_log $OUT/backend/error.log warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 10000000;
  server { listen 127.0.0.1:$P_V1; listen 127.0.0.1:$P_V2; location / { return 200 "ok\n"; } } }
EOF
nginx -e "$OUT/backend/error.log" -p "$OUT/backend" -c "$OUT/backend/nginx.conf" </dev/null >/dev/null &
PIDS+=($!)
wait_port "$P_V1"; wait_port "$P_V2"

# Profiled proxies, each alone under callgrind (collection off until the warm-up is done).
mkdir -p "$OUT/nginx/tmp"
cat > "$OUT/nginx/nginx.conf" <<EOF
worker_processes 1; master_process off; daemon off; pid $OUT/nginx/nginx.pid; error_log $OUT/nginx/error.log warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 10000000; client_body_temp_path $OUT/nginx/tmp; proxy_temp_path $OUT/nginx/tmp;
  upstream v1 { server 127.0.0.1:$P_V1; keepalive 64; }
  upstream v2 { server 127.0.0.1:$P_V2; keepalive 64; }
  split_clients "\${http_x_user_id}bench" \$variant { 50% v1; * v2; }
  server { listen 127.0.0.1:$P_NGINX;
    location / { proxy_pass http://\$variant; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for; proxy_set_header X-Rollgate-Variant \$variant;
      add_header X-Rollgate-Variant \$variant; } } }
EOF
cat > "$OUT/haproxy.cfg" <<EOF
global
    nbthread 1
defaults
    mode http
    timeout connect 2s
    timeout client 120s
    timeout server 120s
    option http-keep-alive
    http-reuse always
frontend fe
    bind 127.0.0.1:$P_HAPROXY
    default_backend be
backend be
    balance roundrobin
    cookie rgsrv insert indirect nocache
    option forwardfor
    server v1 127.0.0.1:$P_V1 weight 50 cookie v1
    server v2 127.0.0.1:$P_V2 weight 50 cookie v2
    http-response set-header X-Rollgate-Variant %[srv_name]
EOF
rg_conf() { # port telemetry
    mkdir -p "$OUT/rg-$1/state"
    cat > "$OUT/rg-$1/rollgate.toml" <<EOF
[server]
listen = "127.0.0.1:$1"
admin_listen = "127.0.0.1:${ADMIN_OF[$1]}"
admin_token = "bench"
state_dir = "$OUT/rg-$1/state"
workers = 1
telemetry = $2
header_read_timeout = "300s"
[upstreams]
v1 = "http://127.0.0.1:$P_V1"
v2 = "http://127.0.0.1:$P_V2"
timeout = "60s"
[routing]
sticky_header = "x-user-id"
[rollout]
auto_start = false
tick = "1h"
window = "1h"
$(cat "$ROOT/src/demo/journeys.toml")
EOF
}

VG=(valgrind --tool=callgrind --instr-atstart=no --dump-line=no)
profile() { # name port command...
    local name=$1 port=$2; shift 2
    env ${PROFILE_ENV:-} "${VG[@]}" --callgrind-out-file="$OUT/callgrind.$name" "$@" </dev/null >"$OUT/$name.out" 2>"$OUT/$name.err" &
    local pid=$!
    PIDS+=($pid)
    wait_port "$port"
    case $name in rollgate*) "$RG" weights 50 --admin "http://127.0.0.1:${ADMIN_OF[$port]}" --token bench >/dev/null ;; esac
    "$LOAD" run --target "http://127.0.0.1:$port" --closed -c 8 --requests 2000 -d 120s -q >/dev/null
    callgrind_control -i on "$pid" >/dev/null
    "$LOAD" run --target "http://127.0.0.1:$port" --closed -c 8 --requests "$N" -d 600s -q > "$OUT/$name.load"
    callgrind_control -i off "$pid" >/dev/null
    kill "$pid"; wait "$pid" 2>/dev/null || true
    local f="$OUT/callgrind.$name"
    local ir; ir=$(callgrind_annotate "$f" 2>/dev/null | awk '/PROGRAM TOTALS/ && !n {gsub(",", "", $1); print $1; n = 1}')
    local done; done=$(awk '/completed/ {print $6}' "$OUT/$name.load")
    printf '%-22s %14s Ir  %8s requests  %10.0f Ir/request\n' "$name" "$ir" "$done" "$(awk -v a="$ir" -v b="$done" 'BEGIN {print a / b}')" | tee -a "$OUT/summary.txt"
}

: > "$OUT/summary.txt"
rg_conf "$P_RG_ON" true
rg_conf "$P_RG_OFF" false
profile rollgate-telemetry-on "$P_RG_ON" "$RG" run --config "$OUT/rg-$P_RG_ON/rollgate.toml"
profile rollgate-telemetry-off "$P_RG_OFF" "$RG" run --config "$OUT/rg-$P_RG_OFF/rollgate.toml"
# The yardstick: hyper's HTTP/1 server and client and nothing else
# (examples/bare_proxy.rs), the floor for any proxy built on hyper.
profile hyper-floor "$P_FLOOR" "$FLOOR" "127.0.0.1:$P_FLOOR" "127.0.0.1:$P_V1"
if [ -n "$PRELOAD" ]; then
    rg_conf "$P_RG_PRELOAD" true
    PROFILE_ENV="LD_PRELOAD=$PRELOAD" profile rollgate-preload "$P_RG_PRELOAD" "$RG" run --config "$OUT/rg-$P_RG_PRELOAD/rollgate.toml"
fi
if [ -z "$ONLY_RG" ]; then
    profile nginx "$P_NGINX" nginx -e "$OUT/nginx/error.log" -p "$OUT/nginx" -c "$OUT/nginx/nginx.conf"
    profile haproxy "$P_HAPROXY" haproxy -db -f "$OUT/haproxy.cfg"
fi

echo
echo "rollgate (telemetry on): top functions by inclusive instructions"
callgrind_annotate --inclusive=yes "$OUT/callgrind.rollgate-telemetry-on" > "$OUT/rollgate-top.txt" 2>/dev/null || true
sed -n '1,70p' "$OUT/rollgate-top.txt"
echo "raw files in $OUT"
