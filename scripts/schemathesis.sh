#!/usr/bin/env bash
# Runs schemathesis against the admin API's own OpenAPI document (GET /api/spec.json).
#
# Builds `provider` and `fake-homeserver`, generates a configuration for loopback with a fresh
# SQLite database in a temporary directory, starts the fake homeserver and `provider serve`,
# creates an admin user (`provider manage register-user --admin`) and gets an admin token the
# way automation does (README, "Admin API"): the configured confidential client, listed in
# `admin.clients`, asks for `urn:mas:admin` with the client_credentials grant. Then
# `schemathesis run` with the checks not_a_server_error and response_schema_conformance, bounded
# by SCHEMATHESIS_MAX_TIME seconds (240; at most 270, the admin token's life), and everything it started is stopped.
#
# schemathesis comes from PyPI into a virtualenv under the target directory (never
# system-wide). Exit status: schemathesis's (0 when no check failed).
#
#   scripts/schemathesis.sh                  # 240 s of testing (270 at most)
#   SCHEMATHESIS_MAX_TIME=60 scripts/schemathesis.sh
#   scripts/schemathesis.sh --max-examples 20   # extra arguments go to `schemathesis run`
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
VENV=$TARGET/schemathesis-venv
SCHEMATHESIS_VERSION=${SCHEMATHESIS_VERSION:-4.32.5}
# The admin token is an access token of 5 minutes (ACCESS_TOKEN_LIFETIME_SECONDS): a run stays
# within it, else its last part is answered 401.
MAX_TIME=${SCHEMATHESIS_MAX_TIME:-240}
if [ "$MAX_TIME" -gt 270 ]; then MAX_TIME=270; fi
REPORT_DIR=${SCHEMATHESIS_REPORT_DIR:-$TARGET/schemathesis-report}

# A free loopback port (asked of the kernel, then released).
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

if [ ! -x "$VENV/bin/schemathesis" ] ||
    ! "$VENV/bin/schemathesis" --version | grep -q "$SCHEMATHESIS_VERSION"; then
    echo "installing schemathesis $SCHEMATHESIS_VERSION into $VENV" >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet "schemathesis==$SCHEMATHESIS_VERSION"
fi

[ -n "${SCHEMATHESIS_NO_BUILD:-}" ] || (cd "$ROOT" && cargo build --quiet -p provider --bin provider -p fake-homeserver --bin fake-homeserver)
PROVIDER=$TARGET/debug/provider
HOMESERVER=$TARGET/debug/fake-homeserver

# Left out: finishing OAuth 2.0 sessions, as schemathesis soon finishes the admin token's own
# session (listed by GET /oauth2-sessions) and every later request is then answered 401. It is
# tested on its own at the end, once the rest is done.
mkdir -p "$REPORT_DIR"
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    # The servers' logs are kept with the report.
    cp "$WORK"/*.log "$REPORT_DIR"/ 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

PORT=$(free_port)
HS_PORT=$(free_port)
BASE=http://127.0.0.1:$PORT
CONFIG=$WORK/provider.yaml
"$PROVIDER" config generate --issuer "$BASE/" --listen "127.0.0.1:$PORT" \
    --database-url "sqlite://$WORK/provider.db" --server-name localhost \
    --homeserver-endpoint "http://127.0.0.1:$HS_PORT/" > "$CONFIG"

# The generated configuration's confidential client, and the homeserver's shared secret.
yaml_value() { grep -m1 "^ *$1:" "$CONFIG" | sed -e "s/^ *$1: *//" -e 's/^"//' -e 's/"$//'; }
CLIENT_ID=$(grep -m1 -- '- client_id:' "$CONFIG" | sed -e 's/.*client_id: *//' -e 's/"//g')
CLIENT_SECRET=$(yaml_value client_secret)
MATRIX_SECRET=$(sed -n '/^matrix:/,/^[a-z]/p' "$CONFIG" | grep -m1 '^  secret:' | sed -e 's/^  secret: *//' -e 's/"//g')

# That client may get urn:mas:admin with client_credentials (README, "Admin API"); rate limits
# off, so that schemathesis's volume is not answered 429.
export PROVIDER__ADMIN__CLIENTS="[\"$CLIENT_ID\"]"
export PROVIDER__CLIENTS__0__GRANT_TYPES="[authorization_code, refresh_token, client_credentials]"
export PROVIDER__RATE_LIMITING__ENABLED=false
"$PROVIDER" config check "$CONFIG" >/dev/null

FAKE_HOMESERVER_SECRET=$MATRIX_SECRET "$HOMESERVER" --server-name localhost \
    --provider-endpoint "$BASE/" --listen "127.0.0.1:$HS_PORT" 2> "$WORK/homeserver.log" &
PIDS+=($!)
PROVIDER_LOG_FORMAT=json "$PROVIDER" serve -c "$CONFIG" 2> "$WORK/provider.log" &
PIDS+=($!)

for _ in $(seq 1 100); do
    curl -sf "$BASE/health" >/dev/null && break
    sleep 0.2
done
curl -sf "$BASE/health" >/dev/null || { echo "the provider did not start:" >&2; tail -20 "$WORK/provider.log" >&2; exit 1; }

# An administrator, as an operator makes one.
ADMIN_PASSWORD=$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')
printf '%s\n' "$ADMIN_PASSWORD" | "$PROVIDER" manage register-user -c "$CONFIG" admin --admin \
    --password-stdin --yes

TOKEN=$(curl -sf -u "$CLIENT_ID:$CLIENT_SECRET" -d grant_type=client_credentials \
    -d scope=urn:mas:admin "$BASE/oauth2/token" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])')

set +e
cd "$WORK"  # schemathesis keeps its example database in the working directory
"$VENV/bin/schemathesis" run "$BASE/api/spec.json" \
    --header "Authorization: Bearer $TOKEN" \
    --checks not_a_server_error,response_schema_conformance \
    --exclude-path '/api/admin/v1/oauth2-sessions/{id}/finish' \
    --max-time "$MAX_TIME" \
    --workers 1 \
    --seed "${SCHEMATHESIS_SEED:-1}" \
    --report junit --report-dir "$REPORT_DIR" \
    "$@"
STATUS=$?
if [ "$STATUS" -eq 0 ]; then
    "$VENV/bin/schemathesis" run "$BASE/api/spec.json" \
        --header "Authorization: Bearer $TOKEN" \
        --checks not_a_server_error,response_schema_conformance \
        --include-path '/api/admin/v1/oauth2-sessions/{id}/finish' \
        --max-time 30 --workers 1 --seed "${SCHEMATHESIS_SEED:-1}"
    STATUS=$?
fi
set -e
if grep -q '"level":"ERROR"' "$WORK/provider.log"; then
    echo "--- errors the provider logged:" >&2
    grep '"level":"ERROR"' "$WORK/provider.log" | tail -20 >&2
fi
exit "$STATUS"
