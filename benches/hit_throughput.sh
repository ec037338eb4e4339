#!/usr/bin/env bash
# How many cache hits per second does `verge edge` serve, next to nginx proxy_cache, on this
# machine?
#
# Both proxies run one core's worth of work (pinned to CPU $PROXY_CPU, nginx with one worker) in
# front of the same nginx origin, with every object already cached; wrk, pinned to CPU $LOAD_CPU,
# drives them in turn. Two workloads:
#   one-object   every request is GET /one (1 KiB);
#   10k-objects  each request is GET /obj/N, N uniform in 0..9999 (1 KiB each).
# The table gives requests/s, p50 and p99 latency, error count, how many requests reached the
# origin during the run (should be 0: everything is a hit) and verge/nginx requests/s.
#
# Run from anywhere, as root (it apt-installs nginx, wrk and curl when missing):
#   bash benches/hit_throughput.sh
# Environment:
#   DURATION=10s     length of each wrk run (wrk syntax: 10s, 1m)
#   CONNECTIONS=64   wrk connections
#   ROUNDS=1         measured rounds per workload; proxy order alternates between rounds
#   ONLY=nginx|verge run one proxy only (no ratio)
#   PROXY_CPU=0 LOAD_CPU=1   cores for the proxy under test and for wrk
#   KEEP_TMP=1       keep the temporary directory (configs, logs) for inspection
#   VERGE_BIN=path   benchmark this verge binary instead of building target/release/verge
# It listens on loopback only, on ports the kernel chooses, and stops everything it started on exit.

set -euo pipefail

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
ROUNDS=${ROUNDS:-1}
ONLY=${ONLY:-}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
KEEP_TMP=${KEEP_TMP:-}
OBJECTS=10000
BODY_BYTES=1024

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VERGE_BIN=${VERGE_BIN:-}

case "$ONLY" in
    "") PROXIES=(nginx verge) ;;
    nginx | verge) PROXIES=("$ONLY") ;;
    *) echo "ONLY must be empty, nginx or verge (got '$ONLY')" >&2; exit 2 ;;
esac

log() { printf '[hit_throughput] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

wants() { [[ " ${PROXIES[*]} " == *" $1 "* ]]; }

# Seconds in a wrk duration (10s, 2m, 1h, or a bare number of seconds).
duration_seconds() {
    local d=$1
    case "$d" in
        *s) echo "${d%s}" ;;
        *m) echo $((${d%m} * 60)) ;;
        *h) echo $((${d%h} * 3600)) ;;
        *) echo "$d" ;;
    esac
}

# ---------------------------------------------------------------------------------------------
# Tools

install_missing() {
    local pkgs=()
    command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || pkgs+=(nginx-light)
    command -v wrk >/dev/null 2>&1 || pkgs+=(wrk)
    command -v curl >/dev/null 2>&1 || pkgs+=(curl)
    command -v python3 >/dev/null 2>&1 || pkgs+=(python3-minimal)
    command -v taskset >/dev/null 2>&1 || pkgs+=(util-linux)
    ((${#pkgs[@]} == 0)) && return
    [[ $(id -u) == 0 ]] || die "missing ${pkgs[*]}; run as root or install them"
    log "installing ${pkgs[*]}"
    # The nginx package starts a system nginx on :80 unless service starts are refused; refuse
    # them for the duration of the install, unless the machine already has a policy.
    local policy=/usr/sbin/policy-rc.d added_policy=""
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && added_policy=1
    fi
    local status=0
    apt-get update -qq || status=$?
    if ((status == 0)) && ! apt-get install -y -qq "${pkgs[@]}"; then
        # nginx-light is gone from newer Debian releases; plain nginx is everywhere.
        apt-get install -y -qq "${pkgs[@]/nginx-light/nginx}" || status=$?
    fi
    [[ -n $added_policy ]] && rm -f "$policy"
    ((status == 0)) || die "apt-get install ${pkgs[*]} failed"
}

install_missing
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

CPUS=$(nproc)
((PROXY_CPU < CPUS && LOAD_CPU < CPUS)) ||
    die "needs CPUs $PROXY_CPU and $LOAD_CPU, this machine has $CPUS (set PROXY_CPU / LOAD_CPU)"
((PROXY_CPU != LOAD_CPU)) || log "warning: proxy and wrk share CPU $PROXY_CPU; figures will be low"

if wants verge && [[ -z $VERGE_BIN ]]; then
    log "building verge (cargo build --release --bin verge)"
    (cd "$REPO" && cargo build --release --bin verge) || die "cargo build failed"
    VERGE_BIN="$REPO/target/release/verge"
fi
if wants verge; then
    [[ -x $VERGE_BIN ]] || die "no verge binary at $VERGE_BIN"
fi

# ---------------------------------------------------------------------------------------------
# Processes and cleanup

TMP=$(mktemp -d -t verge-hit-throughput.XXXXXX)
PIDS=()

stop_pid() {
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    # Still up after 5 s: kill its children (nginx workers), then it.
    pkill -KILL -P "$pid" 2>/dev/null || true
    kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
    local status=$? pid
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
    if [[ -n $KEEP_TMP ]]; then
        log "kept $TMP"
    else
        rm -rf "$TMP"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Runs a command as a child that cleanup knows about and waits for it. A signal interrupts the
# wait at once (bash defers traps while a foreground command runs), and cleanup stops the child.
run() {
    local pid status=0
    "$@" &
    pid=$!
    PIDS+=("$pid")
    wait "$pid" || status=$?
    unset 'PIDS[-1]'
    return "$status"
}

# Distinct free loopback ports: hold all the sockets open while asking, so none repeats.
read -r ORIGIN_PORT NGINX_PORT VERGE_PORT VERGE_ADMIN_PORT < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(4)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
')

# nginx as root switches its workers to a user that may not exist (nobody:nobody); keep ours.
USER_LINE=""
[[ $(id -u) == 0 ]] && USER_LINE="user $(id -un) $(id -gn);"

# Directives every nginx instance here needs to stay inside $TMP.
nginx_common() {
    local name=$1
    mkdir -p "$TMP/$name"
    cat <<EOF
$USER_LINE
daemon off;
master_process on;
worker_processes 1;
pid $TMP/$name/nginx.pid;
error_log $TMP/$name/error.log warn;
events { worker_connections 4096; }
EOF
}

nginx_temp_paths() {
    local name=$1
    cat <<EOF
    client_body_temp_path $TMP/$name/client_body;
    proxy_temp_path $TMP/$name/proxy_temp;
    fastcgi_temp_path $TMP/$name/fastcgi;
    uwsgi_temp_path $TMP/$name/uwsgi;
    scgi_temp_path $TMP/$name/scgi;
EOF
}

# Waits until something answers HTTP on $2 (any status), or fails after ~10 s or if $1 died.
wait_ready() {
    local pid=$1 url=$2 name=$3 i code
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || die "$name exited during startup (logs in $TMP/$name)"
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$url" || true)
        [[ $code != 000 ]] && return 0
        sleep 0.1
    done
    die "$name did not answer on $url within 10 s"
}

# ---------------------------------------------------------------------------------------------
# Origin: nginx serving 1 KiB files, cacheable for an hour.

mkdir -p "$TMP/www/obj"
BODY=$(printf '%*s' "$BODY_BYTES" '' | tr ' ' x)
printf '%s' "$BODY" >"$TMP/www/one"
for ((i = 0; i < OBJECTS; i++)); do printf '%s' "$BODY" >"$TMP/www/obj/$i"; done

{
    nginx_common origin
    cat <<EOF
http {
$(nginx_temp_paths origin)
    # Counted to prove the measured runs are all hits.
    access_log $TMP/origin/access.log;
    default_type application/octet-stream;
    server {
        listen 127.0.0.1:$ORIGIN_PORT;
        root $TMP/www;
        location / {
            add_header Cache-Control "public, max-age=3600" always;
        }
    }
}
EOF
} >"$TMP/origin.conf"

"$NGINX" -p "$TMP/origin" -c "$TMP/origin.conf" -e "$TMP/origin/error.log" &
ORIGIN_PID=$!
PIDS+=("$ORIGIN_PID")
wait_ready "$ORIGIN_PID" "http://127.0.0.1:$ORIGIN_PORT/one" origin

origin_requests() { wc -l <"$TMP/origin/access.log"; }

# ---------------------------------------------------------------------------------------------
# The proxies

start_nginx() {
    {
        nginx_common nginx
        cat <<EOF
http {
$(nginx_temp_paths nginx)
    access_log off;
    sendfile on;
    tcp_nodelay on;
    # nginx closes a client connection after 1000 requests by default; verge does not, and wrk's
    # reconnects are not what is being measured.
    keepalive_requests 1000000;
    # One key takes ~128 bytes of a keys_zone: 16 MiB holds ~128k keys, far above 10k objects.
    proxy_cache_path $TMP/nginx/cache levels=1:2 keys_zone=hits:16m max_size=1g inactive=1h
                     use_temp_path=off;
    upstream origin {
        server 127.0.0.1:$ORIGIN_PORT;
        keepalive 64;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache hits;
            # No proxy_cache_valid: freshness comes from the origin's Cache-Control, as in verge.
            proxy_cache_lock on;
            add_header X-Cache-Status \$upstream_cache_status always;
        }
    }
}
EOF
    } >"$TMP/nginx.conf"
    taskset -c "$PROXY_CPU" \
        "$NGINX" -p "$TMP/nginx" -c "$TMP/nginx.conf" -e "$TMP/nginx/error.log" &
    NGINX_PID=$!
    PIDS+=("$NGINX_PID")
    wait_ready "$NGINX_PID" "http://127.0.0.1:$NGINX_PORT/one" nginx
}

start_verge() {
    mkdir -p "$TMP/verge"
    RUST_LOG=warn taskset -c "$PROXY_CPU" "$VERGE_BIN" edge \
        --listen "127.0.0.1:$VERGE_PORT" \
        --admin-listen "127.0.0.1:$VERGE_ADMIN_PORT" \
        --origin "http://127.0.0.1:$ORIGIN_PORT" \
        >"$TMP/verge/stdout.log" 2>"$TMP/verge/stderr.log" &
    VERGE_PID=$!
    PIDS+=("$VERGE_PID")
    wait_ready "$VERGE_PID" "http://127.0.0.1:$VERGE_PORT/one" verge
}

proxy_port() {
    case "$1" in
        nginx) echo "$NGINX_PORT" ;;
        verge) echo "$VERGE_PORT" ;;
    esac
}

# Requests every object once (one curl, one kept-alive connection), then once more so a cache
# that stores after the response completes has certainly stored.
warm() {
    local name=$1 port pass
    port=$(proxy_port "$name")
    log "warming $name with $((OBJECTS + 1)) objects"
    for pass in 1 2; do
        run curl -sS --fail --max-time 10 -o /dev/null "http://127.0.0.1:$port/one" ||
            die "warming $name: GET /one failed (pass $pass)"
        run curl -sS --fail --max-time 300 "http://127.0.0.1:$port/obj/[0-$((OBJECTS - 1))]" \
            >/dev/null ||
            die "warming $name: GET /obj/N failed (pass $pass)"
    done
}

wants nginx && start_nginx && warm nginx
wants verge && start_verge && warm verge

# ---------------------------------------------------------------------------------------------
# Load

cat >"$TMP/random_objects.lua" <<EOF
-- One of $OBJECTS cached objects per request, uniformly at random. Requests are formatted once.
local requests = {}
function init(args)
    math.randomseed(os.time())
    for i = 0, $OBJECTS - 1 do
        requests[i + 1] = wrk.format("GET", "/obj/" .. i)
    end
end
function request()
    return requests[math.random(1, $OBJECTS)]
end
EOF

DURATION_SECONDS=$(duration_seconds "$DURATION")

# Runs wrk against one proxy and workload; sets MEASURED to "rps p50_us p99_us errors origin_reqs".
measure() {
    local name=$1 workload=$2 port url out before after
    port=$(proxy_port "$name")
    local args=(-t1 "-c$CONNECTIONS" "-d$DURATION" --latency)
    case "$workload" in
        one-object) url="http://127.0.0.1:$port/one" ;;
        10k-objects) url="http://127.0.0.1:$port/"; args+=(-s "$TMP/random_objects.lua") ;;
    esac
    out="$TMP/wrk-$name-$workload-$RANDOM.txt"
    before=$(origin_requests)
    run timeout --kill-after=5 $((DURATION_SECONDS + 30)) \
        taskset -c "$LOAD_CPU" wrk "${args[@]}" "$url" >"$out" || die "wrk failed: $(cat "$out")"
    after=$(origin_requests)
    MEASURED=$(awk -v origin=$((after - before)) '
        function micros(v) {
            if (v ~ /us$/) return v + 0
            if (v ~ /ms$/) return v * 1000
            if (v ~ /s$/) return v * 1000000
            return v
        }
        $1 == "50%" { p50 = micros($2) }
        $1 == "99%" { p99 = micros($2) }
        /^Requests\/sec:/ { rps = $2 }
        /Non-2xx or 3xx responses:/ { errors += $NF }
        /Socket errors:/ {
            for (i = 3; i <= NF; i++) { gsub(",", "", $i); if ($i ~ /^[0-9]+$/) errors += $i }
        }
        END {
            if (rps == "") exit 1
            printf "%s %s %s %d %d\n", rps, p50, p99, errors, origin
        }' "$out") || die "could not parse wrk output: $(cat "$out")"
}

WORKLOADS=(one-object 10k-objects)
declare -A RPS_SUM RPS_OF
RESULTS=()
for workload in "${WORKLOADS[@]}"; do
    for ((round = 1; round <= ROUNDS; round++)); do
        order=("${PROXIES[@]}")
        if ((round % 2 == 0 && ${#order[@]} == 2)); then order=("${order[1]}" "${order[0]}"); fi
        for name in "${order[@]}"; do
            log "round $round: $workload through $name for $DURATION"
            measure "$name" "$workload"
            read -r rps p50 p99 errors origin <<<"$MEASURED"
            RESULTS+=("$workload $name $round $rps $p50 $p99 $errors $origin")
            RPS_OF[$workload/$name/$round]=$rps
            RPS_SUM[$workload/$name]=$(awk -v a="${RPS_SUM[$workload/$name]:-0}" -v b="$rps" \
                'BEGIN { printf "%.2f", a + b }')
        done
    done
done

# ---------------------------------------------------------------------------------------------
# Report

echo
echo "Cache hits/s: ${PROXIES[*]} on CPU $PROXY_CPU," \
    "wrk -t1 -c$CONNECTIONS -d$DURATION on CPU $LOAD_CPU, $ROUNDS round(s)"
echo "CPU: $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo) ($CPUS cores)"
echo "$("$NGINX" -v 2>&1); $(wrk -v 2>&1 | head -1 | awk '{ print $1, $2 }')"
echo
printf '%-12s %-6s %5s %12s %10s %10s %7s %12s %12s\n' \
    workload proxy round requests/s p50 p99 errors origin_reqs verge/nginx
for row in "${RESULTS[@]}"; do
    read -r workload name round rps p50 p99 errors origin <<<"$row"
    ratio=-
    if [[ $name == verge && -n ${RPS_OF[$workload/nginx/$round]:-} ]]; then
        ratio=$(awk -v v="$rps" -v n="${RPS_OF[$workload/nginx/$round]}" \
            'BEGIN { printf "%.2fx", (n > 0 ? v / n : 0) }')
    fi
    printf '%-12s %-6s %5s %12.0f %8.0fus %8.0fus %7d %12d %12s\n' \
        "$workload" "$name" "$round" "$rps" "$p50" "$p99" "$errors" "$origin" "$ratio"
done
if ((${#PROXIES[@]} == 2)); then
    echo
    for workload in "${WORKLOADS[@]}"; do
        awk -v w="$workload" -v v="${RPS_SUM[$workload/verge]}" -v n="${RPS_SUM[$workload/nginx]}" '
            BEGIN {
                printf "%-12s verge/nginx requests/s, all rounds: %.2fx\n", w, (n > 0 ? v / n : 0)
            }'
    done
fi
