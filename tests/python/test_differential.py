"""Differential tests: the same raw requests to DynamoDB Local (expected) and onggi (actual).

Each sequences/*.json file is one test. Responses are compared after normalisation (see
difflib_ddb.normalize): HTTP status, full __type, message (key case-insensitive), and body with
volatile fields (ARNs, ids, timestamps, transitional table statuses) masked and sets sorted.
Differences listed in deliberate_differences.json are reported but do not fail.
"""

from __future__ import annotations

import re

import pytest

import difflib_ddb
from conftest import BACKENDS

SEQUENCES = difflib_ddb.load_sequences()
DELIBERATE = difflib_ddb.load_deliberate()


@pytest.mark.skipif("onggi" not in BACKENDS or "ddblocal" not in BACKENDS,
                    reason="differential tests need both backends (ONGGI_TEST_BACKENDS)")
@pytest.mark.parametrize("seq", SEQUENCES, ids=[s.stem for s in SEQUENCES])
def test_sequence(seq, ddblocal_server, onggi_server):
    # onggi answers every step of the sequence exactly like DynamoDB Local (modulo volatile fields).
    diffs = difflib_ddb.compare_sequence(ddblocal_server.endpoint, onggi_server.endpoint, seq,
                                         DELIBERATE, difflib_ddb.SESSION_REPORT)
    unexpected = [d for d in diffs if d.reason is None]
    assert not unexpected, f"{len(unexpected)} of {len(seq.steps)} steps differ:\n" + \
        "\n".join(d.render() for d in unexpected)


def test_sequence_files_are_well_formed():
    # Sequence files parse, use diff_-prefixed table names unique to one sequence, and delete every
    # table they create; deliberate_differences.json only names existing steps.
    owner: dict[str, str] = {}
    for seq in SEQUENCES:
        assert seq.steps, seq.path
        created = seq.table_names()
        for name in created:
            assert name.startswith("diff_"), f"{seq.stem}: table {name} must start with diff_"
            assert owner.setdefault(name, seq.stem) == seq.stem, f"table {name} used by {owner[name]} and {seq.stem}"
        live: set[str] = set()
        for step in seq.steps:
            assert re.fullmatch(r"[A-Za-z]+", step.op), f"{seq.stem}: bad op {step.op!r}"
            assert set(step.options) <= {"unsigned", "target", "content_type", "headers", "note"}, step.options
            req = step.request
            name = req.get("TableName") if isinstance(req, dict) else None
            if isinstance(name, str) and name in created:
                if step.op == "CreateTable":
                    live.add(name)
                elif step.op == "DeleteTable":
                    live.discard(name)
        assert not live, f"{seq.stem}: tables not deleted at the end: {sorted(live)}"
    steps = {f"{s.stem}/{i}" for s in SEQUENCES for i in range(len(s.steps))} | {f"{s.stem}/*" for s in SEQUENCES}
    for key, reason in DELIBERATE.items():
        assert key in steps, f"deliberate_differences.json: unknown step {key}"
        assert isinstance(reason, str) and reason.strip(), f"deliberate_differences.json: {key} needs a reason"


def test_differential_harness_detects_differences():
    # The normaliser masks volatile fields and set order, but keeps real differences visible.
    r1 = difflib_ddb.Response(200, {}, '{"Table":{"TableArn":"arn:1","TableId":"a","CreationDateTime":1.5,'
                                       '"Item":{"s":{"SS":["b","a"]}}}}')
    r2 = difflib_ddb.Response(200, {}, '{"Table":{"TableArn":"arn:2","TableId":"b","CreationDateTime":9.5,'
                                       '"Item":{"s":{"SS":["a","b"]}}}}')
    assert difflib_ddb.normalize(r1) == difflib_ddb.normalize(r2)
    e1 = difflib_ddb.Response(400, {}, '{"__type":"x#ValidationException","Message":"m"}')
    e2 = difflib_ddb.Response(400, {}, '{"__type":"x#ValidationException","message":"m"}')
    assert difflib_ddb.normalize(e1) == difflib_ddb.normalize(e2)
    e3 = difflib_ddb.Response(400, {}, '{"__type":"y#ValidationException","message":"m"}')
    assert difflib_ddb.normalize(e1) != difflib_ddb.normalize(e3)
    n1 = difflib_ddb.Response(200, {}, '{"Item":{"n":{"N":"1.5"}}}')
    n2 = difflib_ddb.Response(200, {}, '{"Item":{"n":{"N":"1.50"}}}')
    assert difflib_ddb.normalize(n1) != difflib_ddb.normalize(n2)
    d1 = difflib_ddb.Response(200, {}, '{"TableDescription":{"TableStatus":"ACTIVE"}}')
    d2 = difflib_ddb.Response(200, {}, '{"TableDescription":{"TableStatus":"DELETING"}}')
    assert difflib_ddb.normalize(d1, "DeleteTable") == difflib_ddb.normalize(d2, "DeleteTable")
    assert difflib_ddb.normalize(d1, "DescribeTable") != difflib_ddb.normalize(d2, "DescribeTable")
