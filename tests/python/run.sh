#!/usr/bin/env bash
# Run onggi's Python black-box tests (boto3, AWS CLI, differential vs DynamoDB Local).
#   tests/python/run.sh                         # everything
#   tests/python/run.sh test_boto3.py -k ddblocal -x   # args go to pytest; paths relative to tests/python
# Env: ONGGI_BIN, ONGGI_ENDPOINT, DDB_LOCAL_ENDPOINT, DDB_LOCAL_JAR_DIR, ONGGI_TEST_BACKENDS (see README.md).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
VENV="${ONGGI_PY_VENV:-$REPO/target/py-venv}"

"$HERE/setup.sh"

cd "$HERE"
# Per-test bound: pytest-timeout (pytest.ini: timeout = 60). Whole-run bound below.
exec timeout --kill-after=10 "${ONGGI_TEST_TOTAL_TIMEOUT:-900}" \
    "$VENV/bin/python" -m pytest "$@"
