#!/usr/bin/env python3
"""Differential harness: send the same raw DynamoDB JSON requests to two endpoints and compare.

Library used by test_differential.py, and a small CLI:

    python tests/python/difflib_ddb.py --dump sequences/x.json --endpoint http://127.0.0.1:8000
    python tests/python/difflib_ddb.py --dump sequences/x.json --endpoint URL --raw      # unnormalized
    python tests/python/difflib_ddb.py --compare sequences/*.json --expected URL --actual URL
    python tests/python/difflib_ddb.py --call PutItem '{"TableName": ...}' --endpoint URL

Sequence files (sequences/*.json):

    {"name": "...", "description": "...",
     "steps": [ [op, request], [op, request, options], ... ]}

* op is the operation name (sent as X-Amz-Target: DynamoDB_20120810.<op>).
* request is a JSON object (serialised compactly), or a string sent verbatim as the body
  (for malformed-JSON cases).
* options (optional) is an object:
    "unsigned": true          send without Authorization / X-Amz-Date headers
    "target": "..."           full X-Amz-Target header value (null: omit the header)
    "content_type": "..."     Content-Type header (default application/x-amz-json-1.0)
    "headers": {...}          extra headers (added after signing)
    "note": "..."             free text, printed in diffs
* Macros, expanded anywhere inside request before sending:
    {"$rep": ["ab", 3]}                     -> "ababab"
    {"$b64rep": ["ab", 3]}                  -> base64 of b"ababab"
    {"$nest": ["M"|"L", depth, leaf]}      -> depth levels of M (key "a") or L around leaf
Step ids are "<file stem>/<0-based step index>"; deliberate_differences.json maps such ids (or
"<file stem>/*") to the reason onggi differs on purpose.
"""

from __future__ import annotations

import argparse
import base64
import difflib
import glob
import http.client
import json
import os
import re
import sys
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

HERE = os.path.dirname(os.path.abspath(__file__))
SEQ_DIR = os.path.join(HERE, "sequences")
DELIBERATE_FILE = os.path.join(HERE, "deliberate_differences.json")

ACCESS_KEY = os.environ.get("ONGGI_TEST_ACCESS_KEY_ID", "AKIDEXAMPLE")
SECRET_KEY = os.environ.get("ONGGI_TEST_SECRET_ACCESS_KEY", "secret")
REGION = "us-east-1"
TARGET_PREFIX = "DynamoDB_20120810."
CONTENT_TYPE = "application/x-amz-json-1.0"
REQUEST_TIMEOUT = float(os.environ.get("ONGGI_TEST_REQUEST_TIMEOUT", "20"))

# Fields whose values legitimately differ between two servers (identity, time). They are
# replaced by "<volatile>" when present, so presence is still compared.
VOLATILE_KEYS = {
    "TableArn", "TableId", "IndexArn", "LatestStreamArn", "LatestStreamLabel", "StreamArn",
    "CreationDateTime", "LastIncreaseDateTime", "LastDecreaseDateTime",
    "LastUpdateToPayPerRequestDateTime", "BackupArn", "SourceTableArn", "ResourceArn",
    "ReplicaTableClassSummary", "LastUpdateDateTime", "InaccessibleEncryptionDateTime",
    "ArchivalDateTime",
}
# Fields onggi sends on purpose that DynamoDB Local omits (real DynamoDB sends them): dropped from
# both sides. TableId: real DynamoDB's DescribeTable has it; DynamoDB Local's does not.
DROPPED_KEYS = {"TableId"}
# Fields whose values differ on purpose, masked as "<differs>" (presence still compared).
# IndexSizeBytes: onggi counts each entry as its projected attributes plus the 100 bytes of
# overhead DynamoDB documents; DynamoDB Local counts the whole base item without overhead.
DIFFERING_KEYS = {"IndexSizeBytes"}
SET_TYPES = ("SS", "NS", "BS")


# --------------------------------------------------------------------------- transport

@dataclass
class Response:
    status: int
    headers: dict[str, str]
    text: str

    @property
    def json(self) -> Any:
        try:
            return json.loads(self.text)
        except ValueError:
            return None


_conns: dict[str, http.client.HTTPConnection] = {}


def _conn(endpoint: str) -> http.client.HTTPConnection:
    c = _conns.get(endpoint)
    if c is None:
        u = urllib.parse.urlsplit(endpoint)
        c = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=REQUEST_TIMEOUT)
        _conns[endpoint] = c
    return c


def send(endpoint: str, op: str | None, body: Any, options: dict | None = None) -> Response:
    """Send one DynamoDB JSON request; body is a dict (serialised) or str/bytes (verbatim)."""
    options = options or {}
    endpoint = endpoint.rstrip("/")
    if isinstance(body, (bytes, bytearray)):
        data = bytes(body)
    elif isinstance(body, str):
        data = body.encode()
    else:
        data = json.dumps(body, separators=(",", ":")).encode()
    headers = {"Content-Type": options.get("content_type", CONTENT_TYPE)}
    target = options["target"] if "target" in options else (TARGET_PREFIX + op if op else None)
    if target is not None:
        headers["X-Amz-Target"] = target
    if not options.get("unsigned"):
        req = AWSRequest(method="POST", url=endpoint + "/", data=data, headers=headers)
        SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "dynamodb", REGION).add_auth(req)
        headers = dict(req.headers.items())
    headers.update(options.get("headers", {}))
    for attempt in range(2):  # one retry on a stale keep-alive connection
        c = _conn(endpoint)
        try:
            c.request("POST", "/", body=data, headers=headers)
            r = c.getresponse()
            text = r.read().decode("utf-8", "replace")
            resp = Response(r.status, {k.lower(): v for k, v in r.getheaders()}, text)
            if r.getheader("connection", "").lower() == "close":
                c.close()
                _conns.pop(endpoint, None)
            return resp
        except (http.client.HTTPException, ConnectionError, OSError):
            c.close()
            _conns.pop(endpoint, None)
            if attempt:
                raise
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------- macros

def expand(v: Any) -> Any:
    if isinstance(v, dict):
        if len(v) == 1:
            (k, arg), = v.items()
            if k == "$rep":
                return arg[0] * arg[1]
            if k == "$b64rep":
                return base64.b64encode(arg[0].encode() * arg[1]).decode()
            if k == "$nest":
                kind, depth, leaf = arg
                out = expand(leaf)
                for _ in range(depth):
                    out = {"M": {"a": out}} if kind == "M" else {"L": [out]}
                return out
        return {k: expand(x) for k, x in v.items()}
    if isinstance(v, list):
        return [expand(x) for x in v]
    return v


# --------------------------------------------------------------------------- normalisation

def _normalize_value(v: Any) -> Any:
    if isinstance(v, dict):
        out = {}
        for k, x in v.items():
            if k in DROPPED_KEYS:
                continue
            if k in VOLATILE_KEYS:
                out[k] = "<volatile>"
            elif k in DIFFERING_KEYS:
                out[k] = "<differs>"
            elif k in SET_TYPES and isinstance(x, list) and len(v) == 1:
                out[k] = sorted(x)
            else:
                out[k] = _normalize_value(x)
        return out
    if isinstance(v, list):
        return [_normalize_value(x) for x in v]
    return v


# Transitional statuses that depend on timing: DynamoDB Local answers ACTIVE at once, real DynamoDB
# (and maybe onggi) CREATING / UPDATING / DELETING. Either is accepted in the responses of these ops.
TRANSITIONAL = {
    "CreateTable": {"ACTIVE", "CREATING"},
    "UpdateTable": {"ACTIVE", "UPDATING"},
    "DeleteTable": {"ACTIVE", "DELETING"},
}


def _normalize_status(v: Any, allowed: set[str]) -> Any:
    if isinstance(v, dict):
        return {k: ("<" + "|".join(sorted(allowed)) + ">"
                    if k in ("TableStatus", "IndexStatus") and x in allowed else _normalize_status(x, allowed))
                for k, x in v.items()}
    if isinstance(v, list):
        return [_normalize_status(x, allowed) for x in v]
    return v


def normalize(resp: Response, op: str | None = None) -> dict:
    """Comparable view of a response: status, error type, message, body sans volatile fields."""
    body = resp.json
    out: dict[str, Any] = {"status": resp.status}
    if not isinstance(body, dict):
        out["raw_body"] = resp.text
        return out
    body = dict(body)
    if "__type" in body:
        out["__type"] = body.pop("__type")
    for k in list(body):
        if k.lower() == "message":
            out["message"] = body.pop(k)
    if body:
        # Batch operations list one ConsumedCapacity per table in no defined order (DynamoDB Local
        # uses a Java HashMap's).
        if isinstance(body.get("ConsumedCapacity"), list):
            body["ConsumedCapacity"] = sorted(body["ConsumedCapacity"],
                                              key=lambda c: str(c.get("TableName") if isinstance(c, dict) else c))
        out["body"] = _normalize_value(body)
        if op in TRANSITIONAL:
            out["body"] = _normalize_status(out["body"], TRANSITIONAL[op])
    return out


# --------------------------------------------------------------------------- sequences

@dataclass
class Step:
    op: str
    request: Any
    options: dict = field(default_factory=dict)


@dataclass
class Sequence:
    stem: str
    name: str
    steps: list[Step]
    path: str

    def table_names(self) -> set[str]:
        names = set()
        for s in self.steps:
            if s.op == "CreateTable" and isinstance(s.request, dict):
                n = s.request.get("TableName")
                if isinstance(n, str) and re.fullmatch(r"[A-Za-z0-9_.-]{3,255}", n):
                    names.add(n)
        return names


def resolve_sequence_path(path: str) -> str:
    """Accept a path, a path relative to sequences/, or a bare sequence name."""
    for cand in (path, os.path.join(SEQ_DIR, path), os.path.join(SEQ_DIR, path + ".json"),
                 os.path.join(SEQ_DIR, os.path.basename(path))):
        if os.path.isfile(cand):
            return cand
    raise FileNotFoundError(path)


def load_sequence(path: str) -> Sequence:
    path = resolve_sequence_path(path)
    with open(path) as f:
        doc = json.load(f)
    steps = []
    for i, raw in enumerate(doc["steps"]):
        if not isinstance(raw, list) or len(raw) not in (2, 3) or not isinstance(raw[0], str):
            raise ValueError(f"{path}: step {i} must be [op, request] or [op, request, options]")
        steps.append(Step(raw[0], raw[1], raw[2] if len(raw) == 3 else {}))
    stem = os.path.splitext(os.path.basename(path))[0]
    return Sequence(stem, doc.get("name", stem), steps, path)


def load_sequences(pattern: str | None = None) -> list[Sequence]:
    paths = sorted(glob.glob(pattern or os.path.join(SEQ_DIR, "*.json")))
    return [load_sequence(p) for p in paths]


def load_deliberate() -> dict[str, str]:
    if not os.path.exists(DELIBERATE_FILE):
        return {}
    with open(DELIBERATE_FILE) as f:
        return json.load(f)


def cleanup_tables(endpoint: str, names: set[str]) -> None:
    """Best-effort delete of tables (left over from an interrupted earlier run)."""
    for n in sorted(names):
        r = send(endpoint, "DeleteTable", {"TableName": n})
        if r.status == 400 and "protected against deletion" in r.text:
            # left behind with DeletionProtectionEnabled by an interrupted run: lift it, then delete
            send(endpoint, "UpdateTable", {"TableName": n, "DeletionProtectionEnabled": False})
            send(endpoint, "DeleteTable", {"TableName": n})


def run_sequence(endpoint: str, seq: Sequence) -> list[tuple[Step, Response]]:
    cleanup_tables(endpoint, seq.table_names())
    out = []
    try:
        for step in seq.steps:
            out.append((step, send(endpoint, step.op, expand(step.request), step.options)))
    finally:
        cleanup_tables(endpoint, seq.table_names())
    return out


def _short(v: Any, limit: int = 300) -> str:
    s = v if isinstance(v, str) else json.dumps(v, separators=(",", ":"))
    return s if len(s) <= limit else s[:limit] + f"...(+{len(s) - limit} chars)"


def _pretty(v: Any) -> list[str]:
    return [_short(line, 400) for line in json.dumps(v, indent=2, sort_keys=True).splitlines()]


@dataclass
class Difference:
    step_id: str
    step: Step
    expected: dict
    actual: dict
    reason: str | None = None  # set when listed in deliberate_differences.json

    def render(self) -> str:
        head = f"--- {self.step_id}: {self.step.op} {_short(self.step.request, 240)}"
        if self.step.options.get("note"):
            head += f"\n    note: {self.step.options['note']}"
        if self.reason:
            head += f"\n    deliberate: {self.reason}"
        diff = difflib.unified_diff(_pretty(self.expected), _pretty(self.actual),
                                    "expected (DynamoDB Local)", "actual (onggi)", lineterm="", n=2)
        return head + "\n" + "\n".join("    " + line for line in diff)


@dataclass
class Report:
    sequences: int = 0
    steps: int = 0
    differences: list[Difference] = field(default_factory=list)

    @property
    def unexpected(self) -> list[Difference]:
        return [d for d in self.differences if d.reason is None]

    def summary(self) -> str:
        lines = [f"differential: {self.sequences} sequences, {self.steps} steps compared, "
                 f"{len(self.unexpected)} differences, "
                 f"{len(self.differences) - len(self.unexpected)} deliberate"]
        lines += [d.render() for d in self.differences]
        return "\n".join(lines)


SESSION_REPORT = Report()  # filled by test_differential.py, printed by conftest.py


def compare_sequence(expected_ep: str, actual_ep: str, seq: Sequence,
                     deliberate: dict[str, str], report: Report) -> list[Difference]:
    exp = run_sequence(expected_ep, seq)
    act = run_sequence(actual_ep, seq)
    diffs = []
    for i, ((step, e), (_, a)) in enumerate(zip(exp, act)):
        ne, na = normalize(e, step.op), normalize(a, step.op)
        report.steps += 1
        if ne != na:
            sid = f"{seq.stem}/{i}"
            reason = deliberate.get(sid) or deliberate.get(f"{seq.stem}/*")
            diffs.append(Difference(sid, step, ne, na, reason))
    report.sequences += 1
    report.differences.extend(diffs)
    return diffs


# --------------------------------------------------------------------------- CLI

def _main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--dump", nargs="+", metavar="SEQ", help="print one endpoint's responses")
    g.add_argument("--compare", nargs="+", metavar="SEQ", help="compare --expected and --actual")
    g.add_argument("--call", nargs=2, metavar=("OP", "JSON"), help="send one request")
    ap.add_argument("--endpoint", help="endpoint for --dump / --call")
    ap.add_argument("--expected", help="reference endpoint (DynamoDB Local) for --compare")
    ap.add_argument("--actual", help="endpoint under test (onggi) for --compare")
    ap.add_argument("--raw", action="store_true", help="print raw status and body (no normalisation)")
    a = ap.parse_args(argv)

    def show(step_id: str, step: Step, r: Response) -> None:
        print(f"== {step_id} {step.op} {_short(step.request, 200)}")
        if a.raw:
            print(f"   {r.status} {r.text}")
        else:
            print("   " + json.dumps(normalize(r, step.op), sort_keys=True))

    if a.call:
        if not a.endpoint:
            ap.error("--call needs --endpoint")
        body = a.call[1]
        try:
            body = json.loads(body)
        except ValueError:
            pass
        step = Step(a.call[0], body)
        show("call", step, send(a.endpoint, step.op, expand(body)))
        return 0
    if a.dump:
        if not a.endpoint:
            ap.error("--dump needs --endpoint")
        for p in a.dump:
            seq = load_sequence(p)
            for i, (step, r) in enumerate(run_sequence(a.endpoint, seq)):
                show(f"{seq.stem}/{i}", step, r)
        return 0
    if not (a.expected and a.actual):
        ap.error("--compare needs --expected and --actual")
    report = Report()
    deliberate = load_deliberate()
    for p in a.compare:
        compare_sequence(a.expected, a.actual, load_sequence(p), deliberate, report)
    print(report.summary())
    return 1 if report.unexpected else 0


if __name__ == "__main__":
    # Not SIGPIPE=SIG_DFL: that also kills the process silently (exit 141) when a server closes a
    # keep-alive connection mid-write, bypassing send()'s retry. Stay quiet on a closed stdout instead.
    import traceback
    try:
        rc = _main(sys.argv[1:])
        sys.stdout.flush()
    except BrokenPipeError as e:
        if any(f.name == "send" for f in traceback.extract_tb(e.__traceback__)):
            raise  # the server side, after send()'s retry
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # stdout closed (head/less)
        rc = 1
    sys.exit(rc)
