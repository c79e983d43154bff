#!/usr/bin/env bash
# Benchmarks grpc-blocking's example server and client against tonic's, side
# by side in the same run on the same machine, and beside them a raw TCP
# stream over loopback.
#
# 1. Builds (release) our `example-server` and `bench` (examples crate) and,
#    in tests/peers/tonic (a cargo workspace of its own), tonic's example
#    server (`tonic-example-server`), tonic's twin of `bench`
#    (`tonic-bench`: the same flags and RESULT line, on tonic's generated
#    client over tokio) and `raw-tcp` (one plain TCP stream).
# 2. Starts on free loopback ports: our example server once per unary
#    handler mode (adaptive, inline, workers: see OURS_MODES), tonic's
#    server, and raw-tcp's reader.
# 3. Runs five sections (SECTIONS), each a table in the report:
#    h2load   unary through h2load (nghttp2-client; installed with apt-get
#             if missing), a neutral load generator, at H2LOAD_SHAPES, against
#             our server in every mode and tonic: calls/s, the ratio to
#             tonic, p99 (from h2load's per-request log).
#    stream   `bench` with the streaming rpcs (STREAM_RPCS) at STREAM_LOADS
#             against our server (its default mode: server-streaming
#             handlers run on the connection's thread, the other streaming
#             handlers on the handler pool) and tonic:
#             messages/s of the streamed side (2 replies per server_stream
#             call, 10 requests per client_stream or bidi call) and p99 per
#             call.
#    mib      1 MiB messages (MIB_PAYLOAD) on one connection with one caller:
#             `bench` with MIB_RPCS against our server (default mode) and
#             tonic, in MiB/s of message payload both ways (the example
#             service echoes the value: unary moves 1 MiB up and 1 MiB down
#             a call, server_stream 1 up and 2 down, bidi 10 up and 10 down,
#             one direction at a time), beside raw-tcp: one TCP connection
#             over 127.0.0.1, 1 MiB writes, the reader reads and discards,
#             for the same time. (client_stream is not there by default: its
#             reply is the 10 requests joined, 10 MiB, over both clients'
#             default 4 MiB receive limit.)
#    clients  client against client: `bench` and `tonic-bench` each driving
#             tonic's server and ours (default mode), at CLIENT_LOADS.
#    rate     unary through h2load at fixed rates (RATES, calls/s, one
#             connection with one call at a time: h2load --rps) against our
#             server (default mode) and tonic: the CPU each server spends
#             per call when the load leaves it idle most of the time, where
#             the cost of waking up shows.
#    The h2load, stream and mib tables also show how busy each server was
#    in the same runs: the share of its CPU it used while measured (from
#    /proc/PID/stat) and its CPU time per call. A server short of a whole
#    CPU waited on the load generator or on round trips, so its row says
#    less about the server than about the load or the latency.
#
# Shapes: "cN mM" means, for h2load, N connections with M concurrent streams
# EACH (h2load -c N -m M); for bench and tonic-bench, N connections and M
# callers IN TOTAL (--connections N --concurrency M).
#
# With TLS=1 every server above serves TLS instead (rustls on both sides:
# ours with the `tls` feature, tonic with its `tls-ring` feature), on a
# throwaway CA and server certificate (ECDSA P-256, for 127.0.0.1 and
# localhost) that openssl makes in a temporary folder at run time (openssl is
# installed with apt-get if missing; no key is kept). `bench` and
# `tonic-bench` connect to https://127.0.0.1:PORT trusting that CA
# (--ca_file), h2load to the same https:// URI (TLS with ALPN h2). The same
# run also starts our example server (default mode) and tonic in plaintext
# and measures them alike for the h2load and stream rows, and one more table
# puts the plaintext numbers beside the TLS ones. raw-tcp stays plaintext.
#
# Environment:
#   DURATION  seconds measured per run, whole seconds (default 3); each run
#             also has a 0.5 s warm-up
#   ROUNDS    runs of each load per server, alternating the order of the
#             servers; the tables show the run with the median calls/s
#             (default 1)
#   PIN       1: every server runs on CPU SERVER_CPUS (default 1) and every
#             load generator (h2load, bench, tonic-bench, raw-tcp's writer)
#             on CLIENT_CPUS (default 0), with taskset; 0 or unset: wherever
#             the kernel puts them (default 0)
#   SECTIONS  which tables to measure (default "h2load stream mib clients
#             rate")
#   H2LOAD_SHAPES  h2load shapes, CONNECTIONSxSTREAMS_EACH (default
#             "1x1 1x16 16x1 16x16 64x4 1000x1"); the file descriptor limit
#             is raised (ulimit -n, up to the hard limit) for the largest
#   STREAM_RPCS   rpcs of the stream table (default "server_stream
#             client_stream bidi")
#   STREAM_LOADS  their shapes, CONNECTIONS/CALLERS_IN_TOTAL (default
#             "1/16 16/16")
#   PAYLOAD   bytes of each request's value in the stream and clients rows
#             (default 0)
#   MIB_RPCS  rpcs of the 1 MiB table (default "unary server_stream bidi")
#   MIB_PAYLOAD   bytes of each request's value there (default 1048576)
#   CLIENT_LOADS  the clients table's rows, RPC:CONNECTIONS/CALLERS_IN_TOTAL
#             (default "unary:1/1 unary:1/16 unary:16/16 bidi:16/16")
#   RATES     the rate table's calls per second (default "100 1000 5000")
#   RATE_DURATION  seconds measured per run of the rate table (default 5:
#             /proc counts CPU time in ticks of 10 ms, a few per second at
#             these rates)
#   OURS_BIN_DIR  where our example-server and bench are (default
#             $CARGO_TARGET_DIR/release, else target/release); when set, the
#             script does not build them (build them there first), e.g.
#             OURS_BIN_DIR=/elsewhere/target/release for an older commit's
#   OURS_MODES    our server's unary handler modes to start (default
#             "adaptive inline workers"; the first is the "default mode" the
#             other tables use). The script reads which variable the binary
#             understands: EXAMPLE_SERVER_HANDLERS=adaptive|inline|workers,
#             or, in older binaries with no adaptive mode,
#             EXAMPLE_SERVER_INLINE=1|0 (then the default is "inline
#             workers" and adaptive shows as "-")
#   TLS       1 to benchmark over TLS (and plaintext beside it), as above;
#             0 or unset for plaintext only (default 0)
#   SKIP_BUILD=1  use the binaries already built
#   TONIC_TARGET_DIR  where the tonic peer is built (default
#             $CARGO_TARGET_DIR, else tests/peers/tonic/target)
#
# Exits non-zero if any run reported errors (after printing the tables).
# Without PIN the servers and the load generators share this machine's
# cores; with it they have one each. Either way the numbers compare the
# columns of one run, not a dedicated server box.
set -euo pipefail

DURATION=${DURATION:-3}
ROUNDS=${ROUNDS:-1}
PIN=${PIN:-0}
SERVER_CPUS=${SERVER_CPUS:-1}
CLIENT_CPUS=${CLIENT_CPUS:-0}
SECTIONS=${SECTIONS:-"h2load stream mib clients rate"}
H2LOAD_SHAPES=${H2LOAD_SHAPES:-"1x1 1x16 16x1 16x16 64x4 1000x1"}
STREAM_RPCS=${STREAM_RPCS:-"server_stream client_stream bidi"}
STREAM_LOADS=${STREAM_LOADS:-"1/16 16/16"}
PAYLOAD=${PAYLOAD:-0}
MIB_RPCS=${MIB_RPCS:-"unary server_stream bidi"}
MIB_PAYLOAD=${MIB_PAYLOAD:-1048576}
CLIENT_LOADS=${CLIENT_LOADS:-"unary:1/1 unary:1/16 unary:16/16 bidi:16/16"}
RATES=${RATES:-"100 1000 5000"}
RATE_DURATION=${RATE_DURATION:-5}
TLS=${TLS:-0}

die() {
    echo "$*" >&2
    exit 2
}
[[ $DURATION =~ ^[1-9][0-9]*$ && $ROUNDS =~ ^[1-9][0-9]*$ ]] ||
    die "DURATION and ROUNDS must be whole numbers >= 1 (got '$DURATION', '$ROUNDS')"
[[ $TLS =~ ^[01]$ ]] || die "TLS must be 0 or 1 (got '$TLS')"
[[ $PIN =~ ^[01]$ ]] || die "PIN must be 0 or 1 (got '$PIN')"
[[ $PAYLOAD =~ ^[0-9]+$ && $MIB_PAYLOAD =~ ^[1-9][0-9]*$ ]] ||
    die "PAYLOAD and MIB_PAYLOAD must be whole numbers (got '$PAYLOAD', '$MIB_PAYLOAD')"
for section in $SECTIONS; do
    [[ $section =~ ^(h2load|stream|mib|clients|rate)$ ]] ||
        die "unknown section '$section' in SECTIONS (h2load, stream, mib, clients, rate)"
done
for rate in $RATES; do
    [[ $rate =~ ^[1-9][0-9]*$ ]] || die "RATES: '$rate' is not a whole number of calls per second"
done
[[ $RATE_DURATION =~ ^[1-9][0-9]*$ ]] ||
    die "RATE_DURATION must be a whole number >= 1 (got '$RATE_DURATION')"
for shape in $H2LOAD_SHAPES; do
    [[ $shape =~ ^[1-9][0-9]*x[1-9][0-9]*$ ]] ||
        die "H2LOAD_SHAPES: '$shape' is not CONNECTIONSxSTREAMS (e.g. 16x4)"
done
for load in $STREAM_LOADS; do
    [[ $load =~ ^([1-9][0-9]*)/([1-9][0-9]*)$ && ${BASH_REMATCH[1]} -le ${BASH_REMATCH[2]} ]] ||
        die "STREAM_LOADS: '$load' is not CONNECTIONS/CALLERS with callers >= connections"
done
for rpc in $STREAM_RPCS $MIB_RPCS; do
    [[ $rpc =~ ^(unary|server_stream|client_stream|bidi)$ ]] ||
        die "unknown rpc '$rpc' (unary, server_stream, client_stream, bidi)"
done
for load in $CLIENT_LOADS; do
    [[ $load =~ ^(unary|server_stream|client_stream|bidi):([1-9][0-9]*)/([1-9][0-9]*)$ &&
        ${BASH_REMATCH[2]} -le ${BASH_REMATCH[3]} ]] ||
        die "CLIENT_LOADS: '$load' is not RPC:CONNECTIONS/CALLERS (e.g. unary:1/16)"
done
has_section() { [[ " $SECTIONS " == *" $1 "* ]]; }

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TONIC_DIR="$ROOT/tests/peers/tonic"
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
TONIC_TARGET_DIR=${TONIC_TARGET_DIR:-${CARGO_TARGET_DIR:-$TONIC_DIR/target}}
BUILD_OURS=1
if [[ -n ${OURS_BIN_DIR:-} ]]; then
    BUILD_OURS=0
else
    OURS_BIN_DIR="$TARGET_DIR/release"
fi
OURS_BIN="$OURS_BIN_DIR/example-server"
BENCH_BIN="$OURS_BIN_DIR/bench"
TONIC_BIN="$TONIC_TARGET_DIR/release/tonic-example-server"
TONIC_BENCH_BIN="$TONIC_TARGET_DIR/release/tonic-bench"
RAW_BIN="$TONIC_TARGET_DIR/release/raw-tcp"

WORK=$(mktemp -d)
PIDS=()

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "== $*" >&2; }

# ---------------------------------------------------------------- build
if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    if [[ $BUILD_OURS == 1 ]]; then
        log "building grpc-blocking-examples (release)"
        cargo build --release --manifest-path "$ROOT/Cargo.toml" -p grpc-blocking-examples --bins
    fi
    log "building the tonic peer (release)"
    CARGO_TARGET_DIR=$TONIC_TARGET_DIR cargo build --release --manifest-path "$TONIC_DIR/Cargo.toml"
fi
for bin in "$OURS_BIN" "$BENCH_BIN" "$TONIC_BIN" "$TONIC_BENCH_BIN" "$RAW_BIN"; do
    [[ -x $bin ]] || { echo "missing binary $bin" >&2; exit 1; }
done

if has_section h2load || has_section rate || [[ $TLS == 1 ]] || ! command -v nghttp >/dev/null; then
    if ! command -v h2load >/dev/null || ! command -v nghttp >/dev/null; then
        log "installing nghttp2-client for h2load"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nghttp2-client >/dev/null
    fi
fi

# Which variable picks our server's unary handler mode: the current
# EXAMPLE_SERVER_HANDLERS, or the older EXAMPLE_SERVER_INLINE (no adaptive).
if grep -qa EXAMPLE_SERVER_HANDLERS "$OURS_BIN"; then
    MODE_STYLE=handlers
    MODE_VAR=EXAMPLE_SERVER_HANDLERS
    OURS_MODES=${OURS_MODES:-"adaptive inline workers"}
elif grep -qa EXAMPLE_SERVER_INLINE "$OURS_BIN"; then
    MODE_STYLE=inline01
    MODE_VAR=EXAMPLE_SERVER_INLINE
    OURS_MODES=${OURS_MODES:-"inline workers"}
else
    echo "$OURS_BIN reads neither EXAMPLE_SERVER_HANDLERS nor EXAMPLE_SERVER_INLINE" >&2
    exit 1
fi
read -r -a MODES <<<"$OURS_MODES"
((${#MODES[@]} > 0)) || die "OURS_MODES is empty"
# mode_env MODE: the environment assignment that selects MODE.
mode_env() {
    case $MODE_STYLE/$1 in
    handlers/adaptive | handlers/inline | handlers/workers) echo "EXAMPLE_SERVER_HANDLERS=$1" ;;
    inline01/inline) echo "EXAMPLE_SERVER_INLINE=1" ;;
    inline01/workers) echo "EXAMPLE_SERVER_INLINE=0" ;;
    *) die "OURS_MODES: this example-server has no mode '$1'" ;;
    esac
}
for mode in "${MODES[@]}"; do
    mode_env "$mode" >/dev/null
done
DEFAULT_MODE=${MODES[0]}
# Where the binaries come from, for the report: the commit of the worktree
# holding them (its HEAD; the binaries may be older if not rebuilt).
OURS_COMMIT=$(git -C "$OURS_BIN_DIR" rev-parse --short HEAD 2>/dev/null || echo "?")

# ---------------------------------------------------------------- pinning
SERVER_PIN=() CLIENT_PIN=()
if [[ $PIN == 1 ]]; then
    command -v taskset >/dev/null || { echo "PIN=1 needs taskset (util-linux)" >&2; exit 1; }
    taskset -c "$SERVER_CPUS" true && taskset -c "$CLIENT_CPUS" true ||
        die "PIN=1: cannot pin to CPUs '$SERVER_CPUS' (servers) and '$CLIENT_CPUS' (load)"
    SERVER_PIN=(taskset -c "$SERVER_CPUS")
    CLIENT_PIN=(taskset -c "$CLIENT_CPUS")
fi

# ---------------------------------------------------------------- file descriptors
# h2load's largest shape opens that many connections to one server; ours
# spends a few descriptors on each (socket, poller, waker). Raise the soft
# limit to the hard one when that is not enough (servers and load generators
# started below inherit it).
if has_section h2load; then
    max_conns=0
    for shape in $H2LOAD_SHAPES; do
        if ((${shape%x*} > max_conns)); then
            max_conns=${shape%x*}
        fi
    done
    need=$((max_conns * 4 + 1024))
    soft=$(ulimit -Sn)
    if [[ $soft != unlimited ]] && ((soft < need)); then
        hard=$(ulimit -Hn)
        if [[ $hard != unlimited ]] && ((hard < need)); then
            echo "H2LOAD_SHAPES needs about $need file descriptors; the hard limit is $hard" >&2
            exit 1
        fi
        ulimit -Sn "$hard"
        log "raised the file descriptor limit from $soft to $(ulimit -Sn)"
    fi
fi

# ---------------------------------------------------------------- certificates
# TLS=1: a throwaway CA and a server certificate under it for 127.0.0.1 and
# localhost, in $WORK (removed at exit).
CA_FILE="$WORK/ca.pem"
CERT_FILE="$WORK/server.pem"
KEY_FILE="$WORK/server.key"
make_certificates() {
    if ! command -v openssl >/dev/null; then
        log "installing openssl for the test certificates"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >/dev/null
    fi
    local ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
    openssl req -x509 "${ec[@]}" -keyout "$WORK/ca.key" -out "$CA_FILE" -days 2 \
        -subj "/CN=bench-vs-tonic throwaway CA" \
        -addext basicConstraints=critical,CA:TRUE \
        -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
    openssl req -new "${ec[@]}" -keyout "$KEY_FILE" -out "$WORK/server.csr" \
        -subj "/CN=localhost" 2>/dev/null
    printf '%s\n' basicConstraints=critical,CA:FALSE keyUsage=critical,digitalSignature \
        extendedKeyUsage=serverAuth subjectAltName=DNS:localhost,IP:127.0.0.1 >"$WORK/server.ext"
    openssl x509 -req -in "$WORK/server.csr" -CA "$CA_FILE" -CAkey "$WORK/ca.key" \
        -set_serial 1 -days 2 -extfile "$WORK/server.ext" -out "$CERT_FILE" 2>/dev/null
    openssl verify -CAfile "$CA_FILE" "$CERT_FILE" >/dev/null
}
if [[ $TLS == 1 ]]; then
    log "making a throwaway CA and server certificate (openssl)"
    make_certificates
fi
TLS_FLAGS=(--tls_cert_file "$CERT_FILE" --tls_key_file "$KEY_FILE")

# ---------------------------------------------------------------- servers
# True when something accepts connections on 127.0.0.1:$1.
port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# start_server NAME BINARY [FLAGS...]: starts it on a free loopback port
# (pinned with PIN=1, with the environment assignments in SERVER_ENV); sets
# SERVER_PID and SERVER_PORT. Retries on another port if the chosen one was
# taken meanwhile.
start_server() {
    local name=$1 bin=$2 port pid
    shift 2
    for _ in 1 2 3 4 5; do
        port=$((20000 + RANDOM % 40000))
        port_open "$port" && continue
        # (Without RUST_LOG: it would turn our example server's per-call
        # logging on.)
        env -u RUST_LOG ${SERVER_ENV:-} "${SERVER_PIN[@]}" "$bin" --port "$port" "$@" >"$WORK/$name.log" 2>&1 &
        pid=$!
        PIDS+=("$pid")
        for _ in $(seq 1 100); do
            if ! kill -0 "$pid" 2>/dev/null; then
                break
            fi
            # (Still alive a moment later: the port is ours, not a neighbour's.)
            if port_open "$port" && sleep 0.1 && kill -0 "$pid" 2>/dev/null; then
                SERVER_PID=$pid
                SERVER_PORT=$port
                return 0
            fi
            sleep 0.05
        done
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    echo "could not start $name; its output:" >&2
    cat "$WORK/$name.log" >&2
    return 1
}

# The servers measured: NAMES, PORTS, SERVER_PIDS and SCHEMES (http or
# https) side by side; SERVER_INDEX maps a name to its index.
NAMES=() PORTS=() SERVER_PIDS=() SCHEMES=()
declare -A SERVER_INDEX=()
# add_server NAME SCHEME BINARY [FLAGS...]
add_server() {
    local name=$1 scheme=$2 bin=$3
    shift 3
    start_server "$name" "$bin" "$@"
    SERVER_INDEX[$name]=${#NAMES[@]}
    NAMES+=("$name") PORTS+=("$SERVER_PORT") SERVER_PIDS+=("$SERVER_PID") SCHEMES+=("$scheme")
    log "$name ($scheme) on port $SERVER_PORT"
}

# Ours once per mode ("ours-adaptive", ...), tonic ("tonic"); with TLS=1
# these serve TLS, and ours (default mode) and tonic also serve plaintext
# ("ours-plain", "tonic-plain").
SCHEME=http
SERVE_FLAGS=()
if [[ $TLS == 1 ]]; then
    SCHEME=https
    SERVE_FLAGS=("${TLS_FLAGS[@]}")
fi
for mode in "${MODES[@]}"; do
    SERVER_ENV=$(mode_env "$mode") add_server "ours-$mode" "$SCHEME" "$OURS_BIN" "${SERVE_FLAGS[@]}"
done
add_server tonic "$SCHEME" "$TONIC_BIN" "${SERVE_FLAGS[@]}"
if [[ $TLS == 1 ]]; then
    SERVER_ENV=$(mode_env "$DEFAULT_MODE") add_server ours-plain http "$OURS_BIN"
    add_server tonic-plain http "$TONIC_BIN"
fi
OURS="ours-$DEFAULT_MODE"
RAW_PORT=
if has_section mib; then
    start_server raw-tcp "$RAW_BIN" --listen
    RAW_PORT=$SERVER_PORT
    RAW_PID=$SERVER_PID
    log "raw-tcp reader on port $RAW_PORT"
fi

# Other work on the machine skews everything: record the load average and
# how busy the CPUs were just before the runs (CPU time not idle over one
# second, from /proc/stat).
LOAD_BEFORE=$(uptime)
cpu_times() { awk '/^cpu / { print $2+$3+$4+$5+$6+$7+$8+$9, $5+$6 }' /proc/stat; }
read -r TOTAL1 IDLE1 <<<"$(cpu_times)"
sleep 1
read -r TOTAL2 IDLE2 <<<"$(cpu_times)"
BUSY_BEFORE=$(((100 * ((TOTAL2 - TOTAL1) - (IDLE2 - IDLE1))) / (TOTAL2 - TOTAL1 > 0 ? TOTAL2 - TOTAL1 : 1)))
log "before the runs: $LOAD_BEFORE; CPUs ${BUSY_BEFORE}% busy"

# ---------------------------------------------------------------- runs
FAILED=0

# set_duration SECONDS: the measured time of each run from here on, and
# RUN_TIMEOUT, the bound on any single run: the measured time, the
# warm-up, and slack.
set_duration() {
    DURATION=$1
    RUN_TIMEOUT=$((DURATION * 3 + 30))
}
set_duration "$DURATION"

# Every run sets R_CPS (calls/s), R_P99 (us) and R_CALLS (calls completed
# in the measured window; "-" from h2load), or "ERR" when it printed no
# result.

# client_run BINARY SERVER RPC CONNS CONC PAYLOAD: bench or tonic-bench
# against server number SERVER (of NAMES).
client_run() {
    local bin=$1 port=${PORTS[$2]} scheme=${SCHEMES[$2]} rpc=$3 conns=$4 conc=$5 payload=$6
    local out line target tls=()
    target="$scheme://127.0.0.1:$port"
    if [[ $scheme == https ]]; then
        tls=(--ca_file "$CA_FILE")
    fi
    R_CPS=ERR R_P99=ERR R_CALLS=ERR
    if out=$(timeout "$RUN_TIMEOUT" "${CLIENT_PIN[@]}" "$bin" --target "$target" "${tls[@]}" \
        --rpc "$rpc" --connections "$conns" --concurrency "$conc" --duration "$DURATION" \
        --payload "$payload" 2>&1); then
        :
    else
        echo "$(basename "$bin") failed (${NAMES[$2]} at $target, $rpc, c$conns m$conc," \
            "payload $payload):" >&2
        echo "$out" >&2
        FAILED=1
    fi
    line=$(grep '^RESULT ' <<<"$out" || true)
    if [[ -n $line ]]; then
        R_CPS=$(sed -n 's/.*calls_per_sec=\([0-9]*\).*/\1/p' <<<"$line")
        R_P99=$(sed -n 's/.*p99_us=\([0-9]*\).*/\1/p' <<<"$line")
        R_CALLS=$(sed -n 's/^calls: \([0-9]*\) in .*/\1/p' <<<"$out")
        R_CALLS=${R_CALLS:-ERR}
    fi
}
bench_run() { client_run "$BENCH_BIN" "$@"; }
tonic_bench_run() { client_run "$TONIC_BENCH_BIN" "$@"; }

# h2load_run SERVER CONNS STREAMS [RATE]: unary through h2load against
# server number SERVER (of NAMES), CONNS connections with STREAMS streams
# each, at most RATE calls per second on each connection if given; p99
# from h2load's per-request log. Over https:// h2load speaks TLS with ALPN
# h2 (it does not check the certificate).
BODY="$WORK/unary_body.bin"
# gRPC message prefix (uncompressed, length 7) + ExampleRequest{value: "hello"}
# (field 1, wire type 2: 0x0a, length 5, "hello").
printf '\000\000\000\000\007\012\005hello' >"$BODY"
UNARY_PATH=/nameko.example/unary_unary
# What h2load negotiated with each TLS server (protocol, cipher, ALPN).
NEGOTIATED=()

h2load_run() {
    local port=${PORTS[$1]} scheme=${SCHEMES[$1]} conns=$2 streams=$3 out rate=()
    if [[ -n ${4:-} ]]; then
        rate=(--rps "$4")
    fi
    R_CPS=ERR R_P99=ERR R_CALLS=-
    rm -f "$WORK/h2load.log"
    if ! out=$(timeout "$RUN_TIMEOUT" "${CLIENT_PIN[@]}" h2load -t 1 -c "$conns" -m "$streams" "${rate[@]}" \
        -D "$DURATION" --warm-up-time=500ms --log-file="$WORK/h2load.log" -d "$BODY" \
        -H 'content-type: application/grpc' -H 'te: trailers' \
        "$scheme://127.0.0.1:$port$UNARY_PATH" 2>&1); then
        echo "h2load failed (${NAMES[$1]}, port $port, c$conns m$streams):" >&2
        echo "$out" >&2
        FAILED=1
        return
    fi
    if ! grep -q ' 0 failed, 0 errored, 0 timeout' <<<"$out" ||
        ! grep -q '^status codes: [0-9]* 2xx, 0 3xx, 0 4xx, 0 5xx' <<<"$out"; then
        echo "h2load saw failures (${NAMES[$1]}, port $port, c$conns m$streams):" >&2
        grep -E '^(requests|status codes|client|traffic):' <<<"$out" >&2
        FAILED=1
    fi
    if [[ $scheme == https ]]; then
        NEGOTIATED[$1]="$(sed -n 's/^TLS Protocol: //p' <<<"$out" | head -1)"
        NEGOTIATED[$1]+=" $(sed -n 's/^Cipher: //p' <<<"$out" | head -1)"
        NEGOTIATED[$1]+=", ALPN $(sed -n 's/^Application protocol: //p' <<<"$out" | head -1)"
    fi
    R_CPS=$(sed -n 's/^finished in .*, \([0-9.]*\) req\/s.*/\1/p' <<<"$out")
    R_CPS=${R_CPS%.*}
    # Column 3 of the log: microseconds until the end of the response.
    R_P99=$(cut -f3 "$WORK/h2load.log" | sort -n |
        awk '{ v[NR] = $1 } END { if (NR == 0) { print "ERR"; exit }
              r = int(NR * 0.99); if (r < NR * 0.99) r++; if (r < 1) r = 1; print v[r] }')
    R_CPS=${R_CPS:-ERR}
}

# raw_run: one raw-tcp writer against the reader; R_CPS = MiB/s.
raw_run() {
    local out
    R_CPS=ERR R_P99=- R_CALLS=-
    if ! out=$(timeout "$RUN_TIMEOUT" "${CLIENT_PIN[@]}" "$RAW_BIN" --port "$RAW_PORT" \
        --duration "$DURATION" --write_size "$MIB_PAYLOAD" 2>&1); then
        echo "raw-tcp failed (port $RAW_PORT):" >&2
        echo "$out" >&2
        FAILED=1
        return
    fi
    R_CPS=$(sed -n 's/^RESULT raw_tcp .*mib_per_sec=\([0-9]*\).*/\1/p' <<<"$out")
    R_CPS=${R_CPS:-ERR}
}

# h2load cannot see grpc-status (it travels in the trailers): check once per
# server with nghttp that the body above gets an OK answer.
for i in "${!NAMES[@]}"; do
    url="${SCHEMES[$i]}://127.0.0.1:${PORTS[$i]}$UNARY_PATH"
    # (The whole answer first, without the NUL bytes of its binary frames:
    # grep -q would stop reading at the match, and nghttp, cut off
    # mid-write, would fail the pipe.)
    answer=$(timeout 10 nghttp -v -d "$BODY" -H 'content-type: application/grpc' -H 'te: trailers' \
        "$url" 2>&1 | tr -d '\0') || true
    if ! grep -aq 'grpc-status: 0' <<<"$answer"; then
        echo "unary_unary at $url did not answer grpc-status 0 to h2load's body" >&2
        FAILED=1
    fi
done

# median RESULTS...: of "cps p99 calls cores" results, the one with the median cps
# (the lower middle one for an even count; a failed run, ERR, sorts lowest).
median() {
    printf '%s\n' "$@" | sort -n -k1,1 | sed -n "$((($# + 1) / 2))p"
}

# Results: RES[KEY|RUNNER|SERVER] = "cps p99 calls cores" (the median run).
declare -A RES=()

# How busy a server was during a run: its CPU time (user + system, from
# /proc/PID/stat) over the measured window, less 0.1 s at each end. Every
# load generator here warms up for 0.5 s before its window of DURATION.
CLOCK_TICKS=$(getconf CLK_TCK)
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null; }
# sample_cpu PID OUT: writes to OUT the share of one CPU that PID used.
sample_cpu() {
    local pid=$1 out=$2 a b t0 t1
    sleep 0.6
    a=$(cpu_ticks "$pid") t0=$(date +%s.%N)
    sleep "$(awk -v d="$DURATION" 'BEGIN { print d - 0.2 }')"
    b=$(cpu_ticks "$pid") t1=$(date +%s.%N)
    if [[ -n $a && -n $b ]]; then
        awk -v a="$a" -v b="$b" -v t0="$t0" -v t1="$t1" -v hz="$CLOCK_TICKS" \
            'BEGIN { printf "%.3f", (b - a) / hz / (t1 - t0) }' >"$out"
    else
        echo ERR >"$out"
    fi
}

# measure KEY ARGS...: for each "RUNNER SERVER_NAME" of RUNS_OF (set by the
# caller), runs RUNNER SERVER_INDEX ARGS..., ROUNDS times, in the order of
# RUNS_OF and the reverse by turns, while sample_cpu watches the server;
# keeps the median run in RES.
measure() {
    local key=$1 round j order runner name
    shift
    local -a runs=()
    log "$key (${DURATION}s per run, $ROUNDS round(s))"
    for round in $(seq 1 "$ROUNDS"); do
        order=("${!RUNS_OF[@]}")
        if ((round % 2 == 0)); then
            order=($(printf '%s\n' "${order[@]}" | sort -rn))
        fi
        for j in "${order[@]}"; do
            read -r runner name <<<"${RUNS_OF[j]}"
            if [[ $name != raw && -z ${SERVER_INDEX[$name]:-} ]]; then
                die "no server named '$name' was started"
            fi
            local sampler="" cores=-
            if [[ $name != raw ]]; then
                rm -f "$WORK/cpu"
                sample_cpu "${SERVER_PIDS[${SERVER_INDEX[$name]}]}" "$WORK/cpu" &
                sampler=$!
            fi
            "$runner" "${SERVER_INDEX[$name]:-0}" "$@"
            if [[ -n $sampler ]]; then
                wait "$sampler" || true
                cores=$(cat "$WORK/cpu" 2>/dev/null || echo ERR)
            fi
            runs[j]+="$R_CPS $R_P99 $R_CALLS $cores,"
        done
    done
    for j in "${!RUNS_OF[@]}"; do
        local -a results=()
        IFS=, read -r -a results <<<"${runs[j]%,}"
        read -r runner name <<<"${RUNS_OF[j]}"
        RES["$key|$runner|$name"]=$(median "${results[@]}")
    done
}

# result KEY RUNNER SERVER FIELD: field 1 (calls/s), 2 (p99), 3 (calls) or
# 4 (the server's share of a CPU) of a measured result, "-" when not
# measured.
result() {
    local triple=${RES["$1|$2|$3"]:-}
    if [[ -z $triple ]]; then
        echo "-"
        return
    fi
    local -a f
    read -r -a f <<<"$triple"
    echo "${f[$(($4 - 1))]:--}"
}

# ratio A B: A/B with two decimals, or "-" when either is missing.
ratio() {
    if [[ $1 =~ ^[0-9]+(\.[0-9]+)?$ && $2 =~ ^[0-9]+(\.[0-9]+)?$ ]] &&
        awk -v b="$2" 'BEGIN { exit !(b > 0) }'; then
        awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'
    else
        echo "-"
    fi
}

# cpu_per_call KEY RUNNER SERVER: the server's CPU time per call in us
# (its share of a CPU over calls/s), "-" when either is missing.
cpu_per_call() {
    local cores cps
    cores=$(result "$1" "$2" "$3" 4)
    cps=$(result "$1" "$2" "$3" 1)
    if [[ $cores =~ ^[0-9.]+$ && $cps =~ ^[0-9.]+$ ]] && ((${cps%.*} > 0)); then
        awk -v c="$cores" -v n="$cps" 'BEGIN { printf "%.1f", c * 1e6 / n }'
    else
        echo "-"
    fi
}

# ms US: microseconds as milliseconds with one decimal, or as given when
# not a number.
ms() {
    if [[ $1 =~ ^[0-9.]+$ ]]; then
        awk -v u="$1" 'BEGIN { printf "%.1f", u / 1000 }'
    else
        echo "$1"
    fi
}

# per_second CALLS FACTOR DIVISOR: CALLS * FACTOR / DIVISOR / DURATION,
# rounded, or "-"/"ERR" when CALLS is not a number.
per_second() {
    if [[ $1 =~ ^[0-9]+$ ]]; then
        awk -v c="$1" -v f="$2" -v d="$3" -v s="$DURATION" 'BEGIN { printf "%.0f", c * f / d / s }'
    else
        echo "$1"
    fi
}

# Messages of the streamed side per call, and payload bytes (both ways) per
# call of a request value of P bytes: the example service echoes the value
# (client_stream's reply joins the 10 values with ",").
stream_messages() {
    case $1 in
    unary) echo 1 ;;
    server_stream) echo 2 ;;
    client_stream | bidi) echo 10 ;;
    esac
}
bytes_per_call() { # RPC P
    case $1 in
    unary) echo $((2 * $2)) ;;
    server_stream) echo $((3 * $2)) ;;
    client_stream) echo $((20 * $2 + 9)) ;;
    bidi) echo $((20 * $2)) ;;
    esac
}
describe_bytes() {
    case $1 in
    unary) echo "1 up + 1 down" ;;
    server_stream) echo "1 up + 2 down" ;;
    client_stream) echo "10 up + 10 down" ;;
    bidi) echo "10 up + 10 down" ;;
    esac
}

# --- h2load: unary, ours in every mode and tonic
if has_section h2load; then
    RUNS_OF=()
    for mode in "${MODES[@]}"; do
        RUNS_OF+=("h2load_run ours-$mode")
    done
    RUNS_OF+=("h2load_run tonic")
    if [[ $TLS == 1 ]]; then
        RUNS_OF+=("h2load_run ours-plain" "h2load_run tonic-plain")
    fi
    for shape in $H2LOAD_SHAPES; do
        measure "h2load unary c${shape%x*} m${shape#*x}" "${shape%x*}" "${shape#*x}"
    done
fi

# --- stream: bench, ours (default mode) and tonic
if has_section stream; then
    RUNS_OF=("bench_run $OURS" "bench_run tonic")
    if [[ $TLS == 1 ]]; then
        RUNS_OF+=("bench_run ours-plain" "bench_run tonic-plain")
    fi
    for rpc in $STREAM_RPCS; do
        for load in $STREAM_LOADS; do
            measure "$rpc c${load%/*} m${load#*/}" "$rpc" "${load%/*}" "${load#*/}" "$PAYLOAD"
        done
    done
fi

# --- mib: raw TCP, then bench with 1 MiB values, ours (default mode) and tonic
if has_section mib; then
    RUNS_OF=("raw_run raw")
    measure "raw tcp"
    RUNS_OF=("bench_run $OURS" "bench_run tonic")
    for rpc in $MIB_RPCS; do
        measure "$rpc mib c1 m1" "$rpc" 1 1 "$MIB_PAYLOAD"
    done
fi

# --- clients: bench and tonic-bench against tonic and ours (default mode)
if has_section clients; then
    RUNS_OF=("bench_run tonic" "tonic_bench_run tonic" "bench_run $OURS" "tonic_bench_run $OURS")
    for load in $CLIENT_LOADS; do
        rpc=${load%%:*}
        load=${load#*:}
        measure "clients $rpc c${load%/*} m${load#*/}" "$rpc" "${load%/*}" "${load#*/}" "$PAYLOAD"
    done
fi

# --- rate: h2load at fixed rates, ours (default mode) and tonic
if has_section rate; then
    RUNS_OF=("h2load_run $OURS" "h2load_run tonic")
    seconds_before=$DURATION
    set_duration "$RATE_DURATION"
    for rate in $RATES; do
        measure "rate $rate" 1 1 "$rate"
    done
    set_duration "$seconds_before"
fi

# A server that died mid-run shows up as errors above; say so plainly.
for i in "${!NAMES[@]}"; do
    if ! kill -0 "${SERVER_PIDS[$i]}" 2>/dev/null; then
        echo "a server (${NAMES[$i]}, pid ${SERVER_PIDS[$i]}) exited during the run" >&2
        FAILED=1
    fi
done
if [[ -n $RAW_PORT ]] && ! kill -0 "$RAW_PID" 2>/dev/null; then
    echo "raw-tcp's reader (pid $RAW_PID) exited during the run" >&2
    FAILED=1
fi

LOAD_AFTER=$(uptime)

# ---------------------------------------------------------------- report
echo
PROTOCOL=plaintext
if [[ $TLS == 1 ]]; then
    PROTOCOL="TLS (rustls on both sides, ECDSA P-256 certificate)"
fi
echo "grpc-blocking (ours) vs tonic, $PROTOCOL: ${DURATION}s per run after a 0.5s warm-up;"
echo "each cell the median (by calls/s) of $ROUNDS run(s), the servers' order alternating."
echo "ours: $OURS_BIN (worktree at $OURS_COMMIT), modes: ${MODES[*]} (by $MODE_VAR); 'ours' below = $DEFAULT_MODE."
if [[ $PIN == 1 ]]; then
    echo "PIN=1: servers on CPU $SERVER_CPUS, load generators on CPU $CLIENT_CPUS (taskset); $(nproc) CPUs."
else
    echo "Unpinned: servers and load generators share the machine's $(nproc) CPUs, so the client"
    echo "competes with the server for CPU."
fi
echo "Before the runs: ${LOAD_BEFORE# }; CPUs ${BUSY_BEFORE}% busy over one second."
echo "After the runs:  ${LOAD_AFTER# } (the load average counts the runs' own threads too)."
echo "The machine is shared: compare columns of one run, not absolute numbers."
if [[ $TLS == 1 ]]; then
    echo "What h2load negotiated:"
    for i in "${!NAMES[@]}"; do
        if [[ ${SCHEMES[$i]} == https && -n ${NEGOTIATED[$i]:-} ]]; then
            printf '      %-14s %s\n' "${NAMES[$i]}" "${NEGOTIATED[$i]}"
        fi
    done
fi

# mode_cell KEY MODE FIELD: ours-MODE's value, "-" when that mode did not run.
mode_cell() { result "$1" h2load_run "ours-$2" "$3"; }

if has_section h2load; then
    echo
    echo "Unary through h2load ('hello'): cN mM = N connections x M streams each (h2load -t 1 -c N -m M)."
    echo "calls/s of our server in each unary handler mode and tonic, the ratio to tonic, p99 in us."
    printf '%-24s %10s %10s %10s %10s %7s %7s %7s %8s %8s %8s %8s\n' "load" "adaptive/s" \
        "inline/s" "workers/s" "tonic/s" "ad/ton" "in/ton" "wk/ton" "ad p99" "in p99" "wk p99" \
        "ton p99"
    for shape in $H2LOAD_SHAPES; do
        key="h2load unary c${shape%x*} m${shape#*x}"
        t=$(result "$key" h2load_run tonic 1)
        printf '%-24s %10s %10s %10s %10s %7s %7s %7s %8s %8s %8s %8s\n' "unary c${shape%x*} m${shape#*x}" \
            "$(mode_cell "$key" adaptive 1)" "$(mode_cell "$key" inline 1)" \
            "$(mode_cell "$key" workers 1)" "$t" \
            "$(ratio "$(mode_cell "$key" adaptive 1)" "$t")" \
            "$(ratio "$(mode_cell "$key" inline 1)" "$t")" \
            "$(ratio "$(mode_cell "$key" workers 1)" "$t")" \
            "$(mode_cell "$key" adaptive 2)" "$(mode_cell "$key" inline 2)" \
            "$(mode_cell "$key" workers 2)" "$(result "$key" h2load_run tonic 2)"
    done
    echo
    echo "The same runs, server CPU: the share of its CPU each server used while measured (near"
    echo "1.00: the server's CPU was the limit; less: it waited on the load generator or on round"
    echo "trips), and its CPU time per call in us (user + system, all threads)."
    printf '%-24s %7s %7s %7s %7s %7s %7s %7s %7s\n' "load" "ad cpu" "in cpu" "wk cpu" "ton cpu" \
        "ad us" "in us" "wk us" "ton us"
    for shape in $H2LOAD_SHAPES; do
        key="h2load unary c${shape%x*} m${shape#*x}"
        printf '%-24s %7s %7s %7s %7s %7s %7s %7s %7s\n' "unary c${shape%x*} m${shape#*x}" \
            "$(mode_cell "$key" adaptive 4)" "$(mode_cell "$key" inline 4)" \
            "$(mode_cell "$key" workers 4)" "$(result "$key" h2load_run tonic 4)" \
            "$(cpu_per_call "$key" h2load_run ours-adaptive)" \
            "$(cpu_per_call "$key" h2load_run ours-inline)" \
            "$(cpu_per_call "$key" h2load_run ours-workers)" \
            "$(cpu_per_call "$key" h2load_run tonic)"
    done
fi

if has_section stream; then
    echo
    echo "Streaming through bench (payload $PAYLOAD B): cN mM = N connections, M callers in total."
    echo "msg/s counts the streamed side only: replies of server_stream (2 per call), requests of"
    echo "client_stream (10 per call, 1 reply) and bidi (10 per call, each answered by 1 reply);"
    echo "p99 is per call, in us. ours = $OURS (server_stream handlers run inline, client_stream ones"
    echo "too once their requests are in, bidi ones on the pool). cpu: the share of its CPU each"
    echo "server used while measured; us: its CPU time per call."
    printf '%-24s %11s %11s %10s %9s %9s %8s %9s %7s %8s\n' "load" "ours msg/s" "tonic msg/s" \
        "ours/tonic" "ours p99" "tonic p99" "ours cpu" "tonic cpu" "ours us" "tonic us"
    for rpc in $STREAM_RPCS; do
        for load in $STREAM_LOADS; do
            key="$rpc c${load%/*} m${load#*/}"
            n=$(stream_messages "$rpc")
            o=$(per_second "$(result "$key" bench_run "$OURS" 3)" "$n" 1)
            t=$(per_second "$(result "$key" bench_run tonic 3)" "$n" 1)
            printf '%-24s %11s %11s %10s %9s %9s %8s %9s %7s %8s\n' "$key" "$o" "$t" \
                "$(ratio "$o" "$t")" \
                "$(result "$key" bench_run "$OURS" 2)" "$(result "$key" bench_run tonic 2)" \
                "$(result "$key" bench_run "$OURS" 4)" "$(result "$key" bench_run tonic 4)" \
                "$(cpu_per_call "$key" bench_run "$OURS")" "$(cpu_per_call "$key" bench_run tonic)"
        done
    done
fi

if has_section mib; then
    echo
    echo "$MIB_PAYLOAD-byte values through bench, 1 connection, 1 caller (c1 m1): MiB/s of message"
    echo "payload counted both ways (the service echoes the value; a call's request and replies"
    echo "follow each other, one direction at a time); p99 per call in us. raw = raw-tcp: one TCP"
    echo "connection over 127.0.0.1, $MIB_PAYLOAD-byte writes, the reader reads and discards; same duration."
    if [[ $TLS == 1 ]]; then
        echo "(raw-tcp is plaintext; the gRPC rows are TLS.)"
    fi
    raw=$(result "raw tcp" raw_run raw 1)
    echo "cpu: the share of its CPU each server used while measured; ms: its CPU time per call."
    printf '%-34s %10s %11s %9s %8s %9s %10s %9s %9s %8s %9s %7s %8s\n' "load (MiB per call)" \
        "ours MiB/s" "tonic MiB/s" "raw MiB/s" "ours/raw" "tonic/raw" "ours/tonic" "ours p99" \
        "tonic p99" "ours cpu" "tonic cpu" "ours ms" "tonic ms"
    printf '%-34s %10s %11s %9s\n' "raw tcp (one way)" "" "" "$raw"
    for rpc in $MIB_RPCS; do
        key="$rpc mib c1 m1"
        b=$(bytes_per_call "$rpc" "$MIB_PAYLOAD")
        o=$(per_second "$(result "$key" bench_run "$OURS" 3)" "$b" 1048576)
        t=$(per_second "$(result "$key" bench_run tonic 3)" "$b" 1048576)
        printf '%-34s %10s %11s %9s %8s %9s %10s %9s %9s %8s %9s %7s %8s\n' \
            "$rpc c1 m1 ($(describe_bytes "$rpc"))" \
            "$o" "$t" "$raw" "$(ratio "$o" "$raw")" "$(ratio "$t" "$raw")" "$(ratio "$o" "$t")" \
            "$(result "$key" bench_run "$OURS" 2)" "$(result "$key" bench_run tonic 2)" \
            "$(result "$key" bench_run "$OURS" 4)" "$(result "$key" bench_run tonic 4)" \
            "$(ms "$(cpu_per_call "$key" bench_run "$OURS")")" \
            "$(ms "$(cpu_per_call "$key" bench_run tonic)")"
    done
fi

if has_section clients; then
    echo
    echo "Client against client (payload $PAYLOAD B): our bench and tonic-bench (tonic's generated"
    echo "client, tokio multi-thread runtime) driving the same server; cN mM = N connections, M"
    echo "callers in total; calls/s, the ratio bench/tonic-bench, p99 in us."
    printf '%-24s %-16s %9s %13s %12s %10s %10s\n' "load" "server" "bench/s" "tonic-bench/s" \
        "bench/tonicb" "bench p99" "tonicb p99"
    for load in $CLIENT_LOADS; do
        rpc=${load%%:*}
        load=${load#*:}
        key="clients $rpc c${load%/*} m${load#*/}"
        for server in tonic "$OURS"; do
            o=$(result "$key" bench_run "$server" 1)
            t=$(result "$key" tonic_bench_run "$server" 1)
            printf '%-24s %-16s %9s %13s %12s %10s %10s\n' "${key#clients }" "$server" "$o" "$t" \
                "$(ratio "$o" "$t")" "$(result "$key" bench_run "$server" 2)" \
                "$(result "$key" tonic_bench_run "$server" 2)"
        done
    done
fi

if has_section rate; then
    echo
    echo "Unary through h2load at fixed rates ('hello'; one connection, one call at a time,"
    echo "h2load --rps; ${RATE_DURATION}s per run): calls/s, the share of its CPU each server used"
    echo "while measured, and its CPU time per call in us: at these rates a server is idle most"
    echo "of the time, and each call pays for waking it up."
    printf '%-24s %9s %9s %8s %9s %7s %8s %12s\n' "load" "ours/s" "tonic/s" "ours cpu" \
        "tonic cpu" "ours us" "tonic us" "ours/tonic us"
    for rate in $RATES; do
        key="rate $rate"
        o=$(cpu_per_call "$key" h2load_run "$OURS")
        t=$(cpu_per_call "$key" h2load_run tonic)
        printf '%-24s %9s %9s %8s %9s %7s %8s %12s\n' "unary at $rate/s" \
            "$(result "$key" h2load_run "$OURS" 1)" "$(result "$key" h2load_run tonic 1)" \
            "$(result "$key" h2load_run "$OURS" 4)" "$(result "$key" h2load_run tonic 4)" \
            "$o" "$t" "$(ratio "$o" "$t")"
    done
fi

if [[ $TLS == 1 ]] && { has_section h2load || has_section stream; }; then
    echo
    echo "The same run, TLS beside plaintext: ours = $OURS, tonic = tonic; calls/s, the ratio"
    echo "TLS/plaintext, and p99 in us (pl = plaintext)."
    printf '%-24s %10s %10s %7s %10s %11s %7s %8s %8s %8s %9s\n' "load" "ours pl/s" "ours tls/s" \
        "tls/pl" "tonic pl/s" "tonic tls/s" "tls/pl" "ours pl" "ours tls" "tonic pl" "tonic tls"
    tls_row() { # KEY LABEL RUNNER
        local op ot tp tt
        op=$(result "$1" "$3" ours-plain 1)
        ot=$(result "$1" "$3" "$OURS" 1)
        tp=$(result "$1" "$3" tonic-plain 1)
        tt=$(result "$1" "$3" tonic 1)
        printf '%-24s %10s %10s %7s %10s %11s %7s %8s %8s %8s %9s\n' "$2" "$op" "$ot" \
            "$(ratio "$ot" "$op")" "$tp" "$tt" "$(ratio "$tt" "$tp")" \
            "$(result "$1" "$3" ours-plain 2)" "$(result "$1" "$3" "$OURS" 2)" \
            "$(result "$1" "$3" tonic-plain 2)" "$(result "$1" "$3" tonic 2)"
    }
    if has_section h2load; then
        for shape in $H2LOAD_SHAPES; do
            tls_row "h2load unary c${shape%x*} m${shape#*x}" \
                "h2load unary c${shape%x*} m${shape#*x}" h2load_run
        done
    fi
    if has_section stream; then
        for rpc in $STREAM_RPCS; do
            for load in $STREAM_LOADS; do
                tls_row "$rpc c${load%/*} m${load#*/}" "bench $rpc c${load%/*} m${load#*/}" bench_run
            done
        done
    fi
fi
echo
if [[ $FAILED != 0 ]]; then
    echo "some runs reported errors (see above)" >&2
    exit 1
fi
