#!/usr/bin/env bash
# Benchmark of `provider syn2mas migrate` (issue 15): a PostgreSQL Synapse database with
# $USERS generated users — each with a bcrypt password (cost 12, with a pepper), an e-mail
# address, two devices and their access tokens, every tenth user's second device logged in with a
# refresh token, every thousandth user an admin — migrated into a new PostgreSQL provider
# database. Prints the migration's report and its wall-clock time. Not a test: nothing asserts a
# duration.
#
# Synapse's schema is real Synapse's: its own `update_synapse_database` (matrix-synapse, pinned in
# synapse-harness) creates it in a new database; the rows are generated with SQL.
#
#   scripts/syn2mas-bench.sh                 # 100,000 users
#   USERS=10000 scripts/syn2mas-bench.sh
#
# Needs: PostgreSQL reachable at $PG (default postgres://postgres@127.0.0.1:5432, trust auth),
# psql, and the Synapse virtualenv ($SYNAPSE_VENV) with psycopg2 (as .ci/run makes it). Builds
# the provider in release mode (`cargo build --release -p provider`) unless $PROVIDER_BIN is set.
# The two databases (syn2mas_bench_synapse, syn2mas_bench_provider) are dropped and made anew.
set -euo pipefail
cd "$(dirname "$0")/.."

USERS="${USERS:-100000}"
PG="${PG:-postgres://postgres@127.0.0.1:5432}"
SYNAPSE_VENV="${SYNAPSE_VENV:-${CARGO_TARGET_DIR:-$PWD/target}/synapse-venv-1.163.2}"
PYTHON="$SYNAPSE_VENV/bin/python"
SYNAPSE_DB=syn2mas_bench_synapse
PROVIDER_DB=syn2mas_bench_provider
PEPPER=bench-pepper
SERVER=bench.example

"$PYTHON" -c 'import synapse, psycopg2' || {
  echo "$SYNAPSE_VENV needs matrix-synapse and psycopg2 (see .ci/run)" >&2
  exit 1
}
if [ -z "${PROVIDER_BIN:-}" ]; then
  cargo build --release -p provider --bin provider
  PROVIDER_BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/provider"
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

for db in "$SYNAPSE_DB" "$PROVIDER_DB"; do
  psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)"
done
# Synapse wants the C collation (`synapse/storage/engines/postgres.py`).
psql -q "$PG/postgres" -c "CREATE DATABASE $SYNAPSE_DB ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"
psql -q "$PG/postgres" -c "CREATE DATABASE $PROVIDER_DB"

pg_host="$("$PYTHON" -c 'import sys, urllib.parse as u; print(u.urlsplit(sys.argv[1]).hostname or "127.0.0.1")' "$PG")"
pg_port="$("$PYTHON" -c 'import sys, urllib.parse as u; print(u.urlsplit(sys.argv[1]).port or 5432)' "$PG")"
pg_user="$("$PYTHON" -c 'import sys, urllib.parse as u; print(u.urlsplit(sys.argv[1]).username or "postgres")' "$PG")"
"$PYTHON" -c '
import sys
from signedjson.key import generate_signing_key, write_signing_keys
write_signing_keys(open(sys.argv[1], "w"), [generate_signing_key("bench")])' "$work/signing.key"
cat >"$work/homeserver.yaml" <<EOF
server_name: $SERVER
report_stats: false
signing_key_path: $work/signing.key
macaroon_secret_key: bench
media_store_path: $work/media
password_config:
  pepper: $PEPPER
database:
  name: psycopg2
  args: {host: $pg_host, port: $pg_port, user: $pg_user, database: $SYNAPSE_DB}
EOF

echo "Synapse's schema (update_synapse_database)…" >&2
"$PYTHON" -m synapse._scripts.update_synapse_database --database-config "$work/homeserver.yaml" \
  >"$work/update.log" 2>&1 || { tail -20 "$work/update.log" >&2; exit 1; }

# One bcrypt hash for everyone, as Synapse makes it (cost 12, password + pepper).
hash="$("$PYTHON" -c 'import bcrypt, sys; print(bcrypt.hashpw(("password" + sys.argv[1]).encode(), bcrypt.gensalt(12)).decode())' "$PEPPER")"

echo "generating $USERS users…" >&2
psql -q -v ON_ERROR_STOP=1 "$PG/$SYNAPSE_DB" <<EOF
INSERT INTO users (name, password_hash, creation_ts, admin, approved)
  SELECT '@user' || i || ':$SERVER', '$hash', 1600000000 + i,
         CASE WHEN i % 1000 = 0 THEN 1 ELSE 0 END, TRUE
  FROM generate_series(1, $USERS) i;
INSERT INTO user_threepids (user_id, medium, address, validated_at, added_at)
  SELECT '@user' || i || ':$SERVER', 'email', 'user' || i || '@$SERVER',
         1600000000000 + i, 1600000000000 + i
  FROM generate_series(1, $USERS) i;
INSERT INTO devices (user_id, device_id, display_name, last_seen, ip, user_agent, hidden)
  SELECT '@user' || i || ':$SERVER', 'DEVICE' || i || 'N' || d, 'Device ' || d,
         1700000000000 + i, '10.0.0.1', 'Element/1.11', FALSE
  FROM generate_series(1, $USERS) i, generate_series(1, 2) d;
INSERT INTO refresh_tokens (id, user_id, device_id, token)
  SELECT i, '@user' || i || ':$SERVER', 'DEVICE' || i || 'N2', 'syr_' || md5('r' || i) || '_' || i
  FROM generate_series(10, $USERS, 10) i;
INSERT INTO access_tokens (id, user_id, device_id, token, valid_until_ms, last_validated,
                           refresh_token_id, used)
  SELECT 2 * i + d, '@user' || i || ':$SERVER', 'DEVICE' || i || 'N' || d,
         'syt_' || md5(i || 'a' || d) || '_' || i || '_' || d,
         CASE WHEN d = 2 AND i % 10 = 0 THEN 4102444800000 END, 1700000000000 + i,
         CASE WHEN d = 2 AND i % 10 = 0 THEN i END,
         CASE WHEN d = 2 AND i % 10 = 0 THEN TRUE END
  FROM generate_series(1, $USERS) i, generate_series(1, 2) d;
ANALYZE;
EOF

"$PROVIDER_BIN" config generate --issuer http://localhost:8080/ --server-name "$SERVER" \
  --database-url "$PG/$PROVIDER_DB" >"$work/provider.yaml"
export PROVIDER__SECRETS__PASSWORD_PEPPER="$PEPPER"

echo "provider syn2mas check…" >&2
"$PROVIDER_BIN" syn2mas check -c "$work/provider.yaml" --synapse-config "$work/homeserver.yaml"
echo "provider syn2mas migrate ($(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg))…" >&2
# Where the time goes: the seconds since the start at each table's first and last progress line
# (its first batch written, its last; before the first, Synapse's rows were read).
phases() {
  local line table count first=""
  while IFS= read -r line; do
    if [[ $line != progress$'\t'* ]]; then
      printf '%s\n' "$line"
      continue
    fi
    IFS=$'\t' read -r _ table count <<<"$line"
    [ "$table" = "$first" ] || { first="$table"; since "$table first batch"; }
    [ "${count%/*}" != "${count#*/}" ] || since "$table done ($count)"
  done
}
since() {
  awk -v now="$EPOCHREALTIME" -v t0="$start" -v what="$1" \
    'BEGIN { printf "  %6.1f s  %s\n", now - t0, what }'
}
start=$EPOCHREALTIME
"$PROVIDER_BIN" syn2mas migrate -c "$work/provider.yaml" --synapse-config "$work/homeserver.yaml" \
  2> >(phases >&2)
end=$EPOCHREALTIME
sleep 0.2 # the phases' last lines
printf 'migrate: %s users in %.1f s (load average after: %s)\n' "$USERS" \
  "$(awk "BEGIN {print $end - $start}")" "$(cut -d' ' -f1-3 /proc/loadavg)"
