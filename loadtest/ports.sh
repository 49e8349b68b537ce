# Loopback ports for the load scripts, sourced by compare.sh and profile.sh.
#
# Every port is picked by the kernel (bind to port 0, read, release) and
# checked to have no listener, instead of fixed numbers: with SO_REUSEPORT a
# process already on a fixed port would silently share the benchmark's traffic.

# free_port: prints a loopback TCP port nobody listens on.
free_port() {
    local port
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    echo "no free loopback port found" >&2
    return 1
}

# wait_port PORT: waits up to 30 s for a listener on PORT.
wait_port() {
    local port=$1
    for _ in $(seq 1 300); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "nothing listens on port $port" >&2
    return 1
}
