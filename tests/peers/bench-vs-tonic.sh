#!/usr/bin/env bash
# Benchmarks grpc-blocking's example server against tonic's, side by side in
# the same run on the same machine.
#
# 1. Builds (release) our `example-server` and `bench` (examples crate) and
#    the tonic baseline in tests/peers/tonic (its own workspace).
# 2. Starts both servers on free loopback ports.
# 3. Runs the same `bench` load against each: every rpc kind (unary,
#    server_stream, client_stream, bidi) at connections/concurrency 1/1, 1/16
#    and 16/16 (concurrency = callers in total, spread over the connections).
# 4. Runs h2load (nghttp2-client; installed with apt-get if missing) as a
#    neutral load generator for unary at the same shapes: -c connections,
#    -m concurrency/connections streams each.
# 5. Prints one table: ours vs tonic calls/s, the ratio ours/tonic, p99 of both.
#
# With TLS=1 every server above serves TLS instead (rustls on both sides:
# ours with the `tls` feature, tonic with its `tls-ring` feature), on a
# throwaway CA and server certificate (ECDSA P-256, for 127.0.0.1 and
# localhost) that openssl makes in a temporary folder at run time (openssl is
# installed with apt-get if missing; no key is kept). `bench` connects to
# https://127.0.0.1:PORT trusting that CA (--ca_file), h2load to the same
# https:// URI (TLS with ALPN h2). The same run also starts our example
# server and tonic in plaintext and measures them alike, and a second table
# puts the plaintext numbers beside the TLS ones.
#
# Environment:
#   DURATION  seconds measured per run, whole seconds (default 3); each run
#             also has a 0.5 s warm-up
#   RPCS      rpc kinds for bench (default "unary server_stream client_stream bidi")
#   LOADS     "connections/concurrency" shapes (default "1/1 1/16 16/16")
#   PAYLOAD   bytes of each request's value for bench (default 0)
#   ROUNDS    runs of each load per server, alternating ours and tonic; the
#             table shows the run with the median calls/s (default 1)
#   TLS       1 to benchmark over TLS (and plaintext beside it), as above;
#             0 or unset for plaintext only (default 0)
#   SKIP_BUILD=1  use the binaries already built
#   TONIC_TARGET_DIR  where the tonic baseline is built (default
#             $CARGO_TARGET_DIR, else tests/peers/tonic/target)
#
# Exits non-zero if any run reported errors (after printing the table).
# The servers and the load generator share this machine's cores: the numbers
# compare the two servers with each other, not with a dedicated server box.
set -euo pipefail

DURATION=${DURATION:-3}
RPCS=${RPCS:-"unary server_stream client_stream bidi"}
LOADS=${LOADS:-"1/1 1/16 16/16"}
PAYLOAD=${PAYLOAD:-0}
ROUNDS=${ROUNDS:-1}
TLS=${TLS:-0}

if ! [[ $DURATION =~ ^[1-9][0-9]*$ && $ROUNDS =~ ^[1-9][0-9]*$ ]]; then
    echo "DURATION and ROUNDS must be whole numbers >= 1 (got '$DURATION', '$ROUNDS')" >&2
    exit 2
fi
if ! [[ $TLS =~ ^[01]$ ]]; then
    echo "TLS must be 0 or 1 (got '$TLS')" >&2
    exit 2
fi

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TONIC_DIR="$ROOT/tests/peers/tonic"
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
TONIC_TARGET_DIR=${TONIC_TARGET_DIR:-${CARGO_TARGET_DIR:-$TONIC_DIR/target}}
OURS_BIN="$TARGET_DIR/release/example-server"
BENCH_BIN="$TARGET_DIR/release/bench"
TONIC_BIN="$TONIC_TARGET_DIR/release/tonic-example-server"

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
    log "building grpc-blocking-examples (release)"
    cargo build --release --manifest-path "$ROOT/Cargo.toml" -p grpc-blocking-examples --bins
    log "building the tonic baseline (release)"
    CARGO_TARGET_DIR=$TONIC_TARGET_DIR cargo build --release --manifest-path "$TONIC_DIR/Cargo.toml"
fi
for bin in "$OURS_BIN" "$BENCH_BIN" "$TONIC_BIN"; do
    [[ -x $bin ]] || { echo "missing binary $bin" >&2; exit 1; }
done

if ! command -v h2load >/dev/null; then
    log "installing nghttp2-client for h2load"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nghttp2-client >/dev/null
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

# start_server NAME BINARY [FLAGS...]: starts it on a free loopback port;
# sets SERVER_PID and SERVER_PORT. Retries on another port if the chosen one
# was taken meanwhile.
start_server() {
    local name=$1 bin=$2 port pid
    shift 2
    for _ in 1 2 3 4 5; do
        port=$((20000 + RANDOM % 40000))
        port_open "$port" && continue
        env ${SERVER_ENV:-} "$bin" --port "$port" "$@" >"$WORK/$name.log" 2>&1 &
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

# The servers measured, in the order of a run: NAMES, PORTS, SERVER_PIDS and
# SCHEMES (http or https) side by side.
NAMES=() PORTS=() SERVER_PIDS=() SCHEMES=()
# add_server NAME SCHEME BINARY [FLAGS...]
add_server() {
    local name=$1 scheme=$2 bin=$3
    shift 3
    start_server "$name" "$bin" "$@"
    NAMES+=("$name") PORTS+=("$SERVER_PORT") SERVER_PIDS+=("$SERVER_PID") SCHEMES+=("$scheme")
    log "$name ($scheme) on port $SERVER_PORT"
}

# Ours twice: unary handlers inline on the connection thread (the example
# server's default; its handler never blocks), and on the worker pool
# (EXAMPLE_SERVER_INLINE=0: what a server with blocking handlers uses).
# With TLS=1 these three serve TLS, and ours (inline) and tonic serve
# plaintext beside them.
if [[ $TLS == 1 ]]; then
    add_server ours https "$OURS_BIN" "${TLS_FLAGS[@]}"
    SERVER_ENV=EXAMPLE_SERVER_INLINE=0 add_server ours-workers https "$OURS_BIN" "${TLS_FLAGS[@]}"
    add_server tonic https "$TONIC_BIN" "${TLS_FLAGS[@]}"
    add_server ours-plain http "$OURS_BIN"
    add_server tonic-plain http "$TONIC_BIN"
else
    add_server ours http "$OURS_BIN"
    SERVER_ENV=EXAMPLE_SERVER_INLINE=0 add_server ours-workers http "$OURS_BIN"
    add_server tonic http "$TONIC_BIN"
fi
# Other work on the machine skews everything: record how busy it was just
# before the runs (CPU time not idle over one second, from /proc/stat).
cpu_times() { awk '/^cpu / { print $2+$3+$4+$5+$6+$7+$8+$9, $5+$6 }' /proc/stat; }
read -r TOTAL1 IDLE1 <<<"$(cpu_times)"
sleep 1
read -r TOTAL2 IDLE2 <<<"$(cpu_times)"
BUSY_BEFORE=$(((100 * ((TOTAL2 - TOTAL1) - (IDLE2 - IDLE1))) / (TOTAL2 - TOTAL1 > 0 ? TOTAL2 - TOTAL1 : 1)))

# ---------------------------------------------------------------- runs
FAILED=0
ROWS=()

# A bound on any single run: the measured time, the warm-up, and slack.
RUN_TIMEOUT=$((DURATION * 3 + 30))

# bench_run SERVER RPC CONNS CONC: runs bench against server number SERVER
# (of NAMES); sets R_CPS (calls/s) and R_P99 (us), "ERR" when the run printed
# no result.
bench_run() {
    local port=${PORTS[$1]} rpc=$2 conns=$3 conc=$4 out line target
    local tls=()
    target="${SCHEMES[$1]}://127.0.0.1:$port"
    if [[ ${SCHEMES[$1]} == https ]]; then
        tls=(--ca_file "$CA_FILE")
    fi
    R_CPS=ERR R_P99=ERR
    if out=$(timeout "$RUN_TIMEOUT" "$BENCH_BIN" --target "$target" "${tls[@]}" --rpc "$rpc" \
        --connections "$conns" --concurrency "$conc" --duration "$DURATION" \
        --payload "$PAYLOAD" 2>&1); then
        :
    else
        echo "bench failed ($target, $rpc, $conns/$conc):" >&2
        echo "$out" >&2
        FAILED=1
    fi
    line=$(grep '^RESULT ' <<<"$out" || true)
    if [[ -n $line ]]; then
        R_CPS=$(sed -n 's/.*calls_per_sec=\([0-9]*\).*/\1/p' <<<"$line")
        R_P99=$(sed -n 's/.*p99_us=\([0-9]*\).*/\1/p' <<<"$line")
    fi
}

# h2load_run SERVER CONNS CONC: unary through h2load against server number
# SERVER (of NAMES); sets R_CPS (requests/s) and R_P99 (us, from h2load's
# per-request log). Over https:// h2load speaks TLS with ALPN h2 (it does not
# check the certificate).
BODY="$WORK/unary_body.bin"
# gRPC message prefix (uncompressed, length 7) + ExampleRequest{value: "hello"}
# (field 1, wire type 2: 0x0a, length 5, "hello").
printf '\000\000\000\000\007\012\005hello' >"$BODY"
UNARY_PATH=/nameko.example/unary_unary
# What h2load negotiated with each TLS server (protocol, cipher, ALPN).
NEGOTIATED=()

h2load_run() {
    local port=${PORTS[$1]} scheme=${SCHEMES[$1]} conns=$2 conc=$3 out streams
    R_CPS=ERR R_P99=ERR
    rm -f "$WORK/h2load.log"
    streams=$(((conc + conns - 1) / conns))
    if ! out=$(timeout "$RUN_TIMEOUT" h2load -c "$conns" -m "$streams" -D "$DURATION" \
        --warm-up-time=500ms --log-file="$WORK/h2load.log" -d "$BODY" \
        -H 'content-type: application/grpc' -H 'te: trailers' \
        "$scheme://127.0.0.1:$port$UNARY_PATH" 2>&1); then
        echo "h2load failed (port $port, $conns/$conc):" >&2
        echo "$out" >&2
        FAILED=1
        return
    fi
    if ! grep -q ' 0 failed, 0 errored, 0 timeout' <<<"$out" ||
        ! grep -q '^status codes: [0-9]* 2xx, 0 3xx, 0 4xx, 0 5xx' <<<"$out"; then
        echo "h2load saw failures (port $port, $conns/$conc):" >&2
        grep -E '^(requests|status codes):' <<<"$out" >&2
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

# h2load cannot see grpc-status (it travels in the trailers): check once per
# server with nghttp that the body above gets an OK answer.
for i in "${!NAMES[@]}"; do
    url="${SCHEMES[$i]}://127.0.0.1:${PORTS[$i]}$UNARY_PATH"
    if ! timeout 10 nghttp -v -d "$BODY" -H 'content-type: application/grpc' -H 'te: trailers' \
        "$url" 2>&1 | grep -aq 'grpc-status: 0'; then
        echo "unary_unary at $url did not answer grpc-status 0 to h2load's body" >&2
        FAILED=1
    fi
done

# ratio A B: A/B with two decimals, or "-" when either is missing.
ratio() {
    if [[ $1 =~ ^[0-9]+$ && $2 =~ ^[0-9]+$ && $2 -gt 0 ]]; then
        awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'
    else
        echo "-"
    fi
}

add_row() { # LABEL OURS_CPS OURS_P99 WORKERS_CPS WORKERS_P99 TONIC_CPS TONIC_P99
    ROWS+=("$(printf '%-30s %10s %10s %10s %8s %8s %10s %10s %10s' "$1" "$2" "$4" "$6" \
        "$(ratio "$2" "$6")" "$(ratio "$4" "$6")" "$3" "$5" "$7")")
}

# TLS=1's second table: plaintext beside TLS, ours (inline) and tonic.
PLAIN_ROWS=()
add_plain_row() { # LABEL OURS_TLS OURS_PLAIN TONIC_TLS TONIC_PLAIN (each "cps p99")
    local ot op tt tp
    read -r -a ot <<<"$2"
    read -r -a op <<<"$3"
    read -r -a tt <<<"$4"
    read -r -a tp <<<"$5"
    PLAIN_ROWS+=("$(printf '%-30s %10s %10s %8s %10s %10s %8s %9s %9s %9s %9s' "$1" \
        "${op[0]}" "${ot[0]}" "$(ratio "${ot[0]}" "${op[0]}")" \
        "${tp[0]}" "${tt[0]}" "$(ratio "${tt[0]}" "${tp[0]}")" \
        "${op[1]}" "${ot[1]}" "${tp[1]}" "${tt[1]}")")
}

# median RESULTS...: of "cps p99" pairs, the one with the median cps (the
# lower middle one for an even count; a failed run, ERR, sorts lowest).
median() {
    printf '%s\n' "$@" | sort -n -k1,1 | sed -n "$((($# + 1) / 2))p"
}

# measure LABEL FUNCTION ARGS...: runs FUNCTION SERVER ARGS... against every
# server ROUNDS times, in the order of NAMES and the reverse by turns, and
# adds a table row (and with TLS=1 a row of the plaintext table).
measure() {
    local label=$1 fn=$2 round i order
    shift 2
    local -a runs=()
    log "$label (${DURATION}s per run, $ROUNDS round(s))"
    for round in $(seq 1 "$ROUNDS"); do
        order=("${!NAMES[@]}")
        if ((round % 2 == 0)); then
            order=($(printf '%s\n' "${order[@]}" | sort -rn))
        fi
        for i in "${order[@]}"; do
            "$fn" "$i" "$@"
            runs[i]+="$R_CPS $R_P99,"
        done
    done
    local -a med=()
    for i in "${!NAMES[@]}"; do
        local -a results=()
        IFS=, read -r -a results <<<"${runs[i]%,}"
        med[i]=$(median "${results[@]}")
    done
    local o_cps o_p99 w_cps w_p99 t_cps t_p99
    read -r o_cps o_p99 <<<"${med[0]}"
    read -r w_cps w_p99 <<<"${med[1]}"
    read -r t_cps t_p99 <<<"${med[2]}"
    add_row "$label" "$o_cps" "$o_p99" "$w_cps" "$w_p99" "$t_cps" "$t_p99"
    if [[ $TLS == 1 ]]; then
        add_plain_row "$label" "${med[0]}" "${med[3]}" "${med[2]}" "${med[4]}"
    fi
}

for rpc in $RPCS; do
    for load in $LOADS; do
        conns=${load%/*}
        conc=${load#*/}
        measure "bench $rpc c=$conns m=$conc" bench_run "$rpc" "$conns" "$conc"
    done
done

for load in $LOADS; do
    conns=${load%/*}
    conc=${load#*/}
    measure "h2load unary c=$conns m=$conc" h2load_run "$conns" "$conc"
done

# A server that died mid-run shows up as errors above; say so plainly.
for i in "${!NAMES[@]}"; do
    if ! kill -0 "${SERVER_PIDS[$i]}" 2>/dev/null; then
        echo "a server (${NAMES[$i]}, pid ${SERVER_PIDS[$i]}) exited during the run" >&2
        FAILED=1
    fi
done

# ---------------------------------------------------------------- report
echo
if [[ $TLS == 1 ]]; then
    echo "grpc-blocking (ours) vs tonic over TLS (rustls on both sides, ECDSA P-256 certificate),"
    echo "with plaintext beside it: ${DURATION}s per run after a 0.5s warm-up, payload ${PAYLOAD} B (bench),"
    echo "'hello' (h2load). What h2load negotiated:"
    for i in "${!NAMES[@]}"; do
        if [[ ${SCHEMES[$i]} == https ]]; then
            printf '      %-14s %s\n' "${NAMES[$i]}" "${NEGOTIATED[$i]:-?}"
        fi
    done
else
    echo "grpc-blocking (ours) vs tonic: ${DURATION}s per run after a 0.5s warm-up, payload ${PAYLOAD} B (bench), 'hello' (h2load)"
fi
echo "Each row: the median (by calls/s) of $ROUNDS run(s) per server, ours and tonic alternating."
echo "c = connections, m = concurrent calls in total (bench: caller threads; h2load: -c c -m m/c)."
echo "NOTE: both servers and the load generator share this machine ($(nproc) cores):"
echo "      the client competes with the server for CPU, so compare the columns, not absolute numbers."
echo "      Other work kept the CPUs ${BUSY_BEFORE}% busy in the second before the runs."
echo
echo "'inline' = our example server (unary handlers on the connection thread); 'workers' = the same"
echo "server with every handler on the worker pool (EXAMPLE_SERVER_INLINE=0). Streaming calls always"
echo "run on workers, so those two columns differ only for unary."
printf '%-30s %10s %10s %10s %8s %8s %10s %10s %10s\n' "load" "inline/s" "workers/s" "tonic/s" \
    "in/tonic" "wk/tonic" "in p99us" "wk p99us" "tonic p99"
printf '%s\n' "${ROWS[@]}"
echo
if [[ $TLS == 1 ]]; then
    echo "The same run, TLS beside plaintext: ours = the inline server, tonic = tonic; calls/s,"
    echo "the ratio TLS/plaintext, and p99 in us (pl = plaintext)."
    printf '%-30s %10s %10s %8s %10s %10s %8s %9s %9s %9s %9s\n' "load" "ours pl/s" "ours tls/s" \
        "tls/pl" "tonic pl/s" "tonic tls/s" "tls/pl" "ours pl" "ours tls" "tonic pl" "tonic tls"
    printf '%s\n' "${PLAIN_ROWS[@]}"
    echo
fi
if [[ $FAILED != 0 ]]; then
    echo "some runs reported errors (see above)" >&2
    exit 1
fi
