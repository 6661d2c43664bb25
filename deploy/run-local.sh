#!/usr/bin/env bash
# Starts N text-session-api processes on one Postgres and nginx in front of them, on
# this machine, and stops them all on SIGINT/SIGTERM.
#
#   STORE=postgres://postgres@127.0.0.1:5432/test deploy/run-local.sh        # 3 processes
#   STORE=postgres://… N=5 BALANCER_PORT=9000 deploy/run-local.sh
#
# Settings (environment):
#   STORE           the Postgres database they share (required)
#   N               how many processes (3)
#   BALANCER_PORT   where nginx listens, on 127.0.0.1 (8080)
#   INSTANCE_PORTS  the processes' ports, space-separated (BALANCER_PORT+1 … +N)
#   BIN             the binary (target/release/text-session-api, built if missing)
#   RUN_DIR         nginx's configuration and logs, the processes' logs (target/deploy)
# Anything else in the environment (LEASE_SECS, API_KEYS, OPENAI_API_KEY…) reaches the
# processes. Prints one line per process and then `balancer: http://…` once all answer.
set -euo pipefail
cd "$(dirname "$0")/.."

: "${STORE:?STORE must name the Postgres database the processes share}"
case "$STORE" in
    postgres://* | postgresql://*) ;;
    *) echo "STORE must be postgres://… (several processes share sessions only on Postgres)" >&2; exit 2 ;;
esac
N=${N:-3}
BALANCER_PORT=${BALANCER_PORT:-8080}
if [[ -z "${INSTANCE_PORTS:-}" ]]; then
    INSTANCE_PORTS=$(seq "$((BALANCER_PORT + 1))" "$((BALANCER_PORT + N))" | tr '\n' ' ')
fi
RUN_DIR=$(mkdir -p "${RUN_DIR:-target/deploy}" && cd "${RUN_DIR:-target/deploy}" && pwd)
BIN=${BIN:-target/release/text-session-api}
NGINX=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
[[ -x "$NGINX" ]] || { echo "nginx is not installed (Debian: apt-get install nginx-light)" >&2; exit 2; }
if [[ ! -x "$BIN" ]]; then
    cargo build --release --locked
fi

pids=()
stop() {
    trap - INT TERM EXIT
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap 'stop; exit 0' INT TERM
trap stop EXIT

servers=""
for port in $INSTANCE_PORTS; do
    addr="127.0.0.1:$port"
    BIND_ADDR="$addr" INSTANCE_ADDR="$addr" "$BIN" --bind "$addr" --instance-addr "$addr" \
        >"$RUN_DIR/instance-$port.out" 2>"$RUN_DIR/instance-$port.log" &
    pids+=($!)
    servers+="        server $addr max_fails=0;"$'\n'
    echo "process $addr (pid $!, log $RUN_DIR/instance-$port.log)"
done

for dir in client_body proxy fastcgi uwsgi scgi; do mkdir -p "$RUN_DIR/$dir"; done
template=$(<deploy/nginx.conf.template)
template=${template//__LISTEN__/127.0.0.1:$BALANCER_PORT}
template=${template//__RUN_DIR__/$RUN_DIR}
template=${template//__SERVERS__/${servers%$'\n'}}
printf '%s\n' "$template" >"$RUN_DIR/nginx.conf"
"$NGINX" -c "$RUN_DIR/nginx.conf" -p "$RUN_DIR" -e "$RUN_DIR/nginx-error.log" &
nginx_pid=$!
pids+=("$nginx_pid")

for port in $INSTANCE_PORTS "$BALANCER_PORT"; do
    for _ in $(seq 100); do
        curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
        sleep 0.1
    done
    curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null || {
        echo "127.0.0.1:$port does not answer; logs in $RUN_DIR" >&2
        exit 1
    }
done
echo "balancer: http://127.0.0.1:$BALANCER_PORT"
# A process that dies leaves the others serving (its sessions move to them once their
# leases lapse); the balancer ending ends everything.
wait "$nginx_pid" || true
echo "nginx ended; stopping the processes" >&2
exit 1
