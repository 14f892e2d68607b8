# What the bench scripts share (sourced, not run): a `serve` of their own.
#
#   start_serve BIN LOG STORE_FLAGS...
#     starts `BIN serve` on a free port of 127.0.0.1 with --rate-limit 0, the
#     flags of the array SERVE_FLAGS (default: --log-format json) and
#     STORE_FLAGS (--data-dir DIR or --database-url URL), its stderr in LOG;
#     waits for /healthz; sets PID, URL and TOKEN (`BIN token STORE_FLAGS...`).
#   stop_serve
#     stops it and waits for it.
#   fresh_db NAME / drop_db NAME
#     (re)creates / drops the PostgreSQL database NAME on 127.0.0.1:5432
#     (user postgres, trust), for a `serve --database-url` of its own.
start_serve() {
  local bin=$1 log=$2
  shift 2
  local port=$((20000 + RANDOM % 10000))
  local flags=(--log-format json)
  if declare -p SERVE_FLAGS >/dev/null 2>&1; then
    flags=(${SERVE_FLAGS[@]+"${SERVE_FLAGS[@]}"})
  fi
  "$bin" serve --listen "127.0.0.1:$port" --rate-limit 0 ${flags[@]+"${flags[@]}"} "$@" \
    2>"$log" >/dev/null &
  PID=$!
  URL=http://127.0.0.1:$port
  for _ in $(seq 100); do curl -sf "$URL/healthz" >/dev/null && break; sleep 0.1; done
  TOKEN=$("$bin" token "$@")
}

stop_serve() {
  kill "$PID"
  wait "$PID" 2>/dev/null || true
}

fresh_db() {
  PGOPTIONS="-c client_min_messages=warning" \
    psql -q -h 127.0.0.1 -U postgres -c "drop database if exists $1" test
  psql -q -h 127.0.0.1 -U postgres -c "create database $1" test
}

drop_db() {
  PGOPTIONS="-c client_min_messages=warning" \
    psql -q -h 127.0.0.1 -U postgres -c "drop database if exists $1" test
}
