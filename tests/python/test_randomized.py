"""Randomized differential tests: random workloads (randomized.py) sent to DynamoDB Local and onggi.

One test per sequence; seeds BASE, BASE+1, ... Environment:
  ONGGI_RANDOMIZED_SEQUENCES  number of sequences (default 20; each 40-80 operations)
  ONGGI_RANDOMIZED_SEED       base seed (default: a random one, printed at the start)
  ONGGI_RANDOMIZED_OPS        operations per sequence (default: 40-80, chosen by the seed)
  ONGGI_RANDOMIZED_SUBSET     all (default), single (Put/Get/Update/Delete only), or a comma list
A failure names its seed; replay, shrink and save it with randomized.py (--seed S, --minimize,
--dump-sequence FILE). The other tests here check the comparison itself, without servers.
"""

from __future__ import annotations

import json
import os
import random

import pytest

import difflib_ddb
import randomized as rz
from conftest import BACKENDS

COUNT = int(os.environ.get("ONGGI_RANDOMIZED_SEQUENCES", "20"))
OPS = int(os.environ["ONGGI_RANDOMIZED_OPS"]) if os.environ.get("ONGGI_RANDOMIZED_OPS") else None
SUBSET = os.environ.get("ONGGI_RANDOMIZED_SUBSET", "all")
BASE_SEED = int(os.environ.get("ONGGI_RANDOMIZED_SEED") or random.SystemRandom().randrange(1, 10**9))
SEEDS = [BASE_SEED + i for i in range(COUNT)]
TOTALS = {"sequences": 0, "ops": 0, "invalid": 0, "requests": 0, "failed": []}


@pytest.fixture(scope="module")
def randomized_report(request):
    tr = request.config.pluginmanager.getplugin("terminalreporter")
    capman = request.config.pluginmanager.getplugin("capturemanager")

    def say(line: str) -> None:
        # past output capture, so that the seed is visible even when the run passes
        if tr is None or capman is None:
            print(line)
            return
        with capman.global_and_fixture_disabled():
            tr.write_line("\n" + line)

    say(f"randomized: base seed {BASE_SEED}, {COUNT} sequences, ops-subset {SUBSET} "
        f"(replay: ONGGI_RANDOMIZED_SEED={BASE_SEED}, or randomized.py --seed S)")
    yield
    failed = TOTALS["failed"]
    say(f"randomized: {TOTALS['sequences']} sequences (seeds {BASE_SEED}..{BASE_SEED + COUNT - 1}), "
        f"{TOTALS['ops']} operations ({TOTALS['invalid']} invalid), {TOTALS['requests']} requests compared; "
        f"{len(failed)} sequences differ" + (f": seeds {', '.join(map(str, failed))}" if failed else ""))


@pytest.mark.skipif("onggi" not in BACKENDS or "ddblocal" not in BACKENDS,
                    reason="differential tests need both backends (ONGGI_TEST_BACKENDS)")
@pytest.mark.parametrize("seed", SEEDS, ids=[f"seed={s}" for s in SEEDS])
def test_randomized_sequence(seed, ddblocal_server, onggi_server, randomized_report):
    # onggi answers a random workload like DynamoDB Local, up to the known deliberate rules.
    r = rz.run_seed(ddblocal_server.endpoint, onggi_server.endpoint, seed, OPS, SUBSET)
    TOTALS["sequences"] += 1
    TOTALS["ops"] += r.ops
    TOTALS["invalid"] += r.invalid
    TOTALS["requests"] += r.requests
    if r.diffs:
        TOTALS["failed"].append(seed)
    if r.diffs:
        pytest.fail(f"seed {seed}: operation {r.diffs[0].index} of the sequence differs\n"
                    + "\n".join(d.render() for d in r.diffs)
                    + "\nreplay: " + rz.replay_hint(seed, OPS, SUBSET) + " [--minimize]", pytrace=False)


# --------------------------------------------------------------------------- the tester itself

def resp(body: dict, status: int = 200) -> difflib_ddb.Response:
    return difflib_ddb.Response(status, {}, json.dumps(body))


def pages(*bodies: dict) -> list[rz.Page]:
    return [rz.Page({}, resp(b)) for b in bodies]


def item(k: str, r: str | None = None, **attrs) -> dict:
    out = {"pk": {"S": k}}
    if r is not None:
        out["g"] = {"N": r}
    out.update({n: {"S": v} for n, v in attrs.items()})
    return out


def test_generator_is_deterministic_and_cleans_up():
    # Same seed, same operations (whatever PYTHONHASHSEED); rnd_<seed>_<n> tables, all deleted at the end.
    for seed in (1, 2, 3, 12345):
        a, names = rz.generate(seed)
        b, _ = rz.generate(seed)
        assert [x.to_json() for x in a] == [x.to_json() for x in b]
        assert all(n.startswith(f"rnd_{seed}_") for n in names)
        created = [x.request["TableName"] for x in a if x.op == "CreateTable" and not x.invalid]
        deleted = [x.request["TableName"] for x in a if x.op == "DeleteTable"]
        assert created and sorted(created) == sorted(deleted) and a[-1].op == "DeleteTable"
        body = [x for x in a if x.op not in ("CreateTable", "DeleteTable", "DescribeTable")]
        assert 40 <= len(body) <= 80
    single, _ = rz.generate(7, 200, "single")
    assert {x.op for x in single} <= {"CreateTable", "DescribeTable", "DeleteTable", "PutItem", "GetItem",
                                      "UpdateItem", "DeleteItem"}
    mixed, _ = rz.generate(7, 400)
    assert {"Query", "Scan", "BatchGetItem", "BatchWriteItem"} <= {x.op for x in mixed}
    assert {x.mode for x in mixed} >= {"query", "query_index", "scan", "pscan", "batch_get", "batch_write"}
    assert 0.04 < sum(bool(x.invalid) for x in mixed) / len(mixed) < 0.2


def test_orders_that_may_differ_are_ignored():
    scan = rz.LOp("Scan", {"TableName": "t", "Limit": 2}, mode="scan")
    a = pages({"Items": [item("a"), item("b")], "Count": 2, "ScannedCount": 2, "LastEvaluatedKey": item("b")},
              {"Items": [item("c")], "Count": 1, "ScannedCount": 1})
    b = pages({"Items": [item("c"), item("a")], "Count": 2, "ScannedCount": 2, "LastEvaluatedKey": item("a")},
              {"Items": [item("b")], "Count": 1, "ScannedCount": 1})
    assert rz.build_view(scan, a) == rz.build_view(scan, b)
    pscan = rz.LOp("Scan", {"TableName": "t", "TotalSegments": 2}, mode="pscan")
    c = pages({"Items": [item("a")], "Count": 1, "ScannedCount": 1},
              {"Items": [item("b"), item("c")], "Count": 2, "ScannedCount": 2})
    d = pages({"Items": [item("c"), item("b"), item("a")], "Count": 3, "ScannedCount": 3},
              {"Items": [], "Count": 0, "ScannedCount": 0})
    assert rz.build_view(pscan, c) == rz.build_view(pscan, d)
    # index query: ties (equal index sort key g) in any order, otherwise the order counts
    q = rz.LOp("Query", {"TableName": "t", "IndexName": "i"}, mode="query_index", info={"tie_attr": "g"})
    e = pages({"Items": [item("a", "1"), item("b", "1"), item("c", "2")], "Count": 3, "ScannedCount": 3})
    f = pages({"Items": [item("b", "1"), item("a", "1"), item("c", "2")], "Count": 3, "ScannedCount": 3})
    g = pages({"Items": [item("c", "2"), item("a", "1"), item("b", "1")], "Count": 3, "ScannedCount": 3})
    assert rz.build_view(q, e) == rz.build_view(q, f)
    assert rz.build_view(q, e) != rz.build_view(q, g)
    bg = rz.LOp("BatchGetItem", {}, mode="batch_get")
    h = pages({"Responses": {"t": [item("a"), item("b")]}, "UnprocessedKeys": {},
               "ConsumedCapacity": [{"TableName": "t", "CapacityUnits": 1.0}, {"TableName": "u", "CapacityUnits": 0.5}]})
    i = pages({"Responses": {"t": [item("b"), item("a")]}, "UnprocessedKeys": {},
               "ConsumedCapacity": [{"TableName": "u", "CapacityUnits": 0.5}, {"TableName": "t", "CapacityUnits": 1.0}]})
    assert rz.build_view(bg, h) == rz.build_view(bg, i)


def test_real_differences_are_kept():
    # Base-table Query pages compare exactly; counts, items and messages always count.
    q = rz.LOp("Query", {"TableName": "t"}, mode="query")
    assert rz.build_view(q, pages({"Items": [item("a"), item("b")], "Count": 2, "ScannedCount": 2})) != \
        rz.build_view(q, pages({"Items": [item("b"), item("a")], "Count": 2, "ScannedCount": 2}))
    scan = rz.LOp("Scan", {"TableName": "t"}, mode="scan")
    assert rz.build_view(scan, pages({"Items": [item("a")], "Count": 1, "ScannedCount": 2})) != \
        rz.build_view(scan, pages({"Items": [item("a")], "Count": 1, "ScannedCount": 1}))
    assert rz.build_view(scan, pages({"Items": [item("a", x="1")], "Count": 1, "ScannedCount": 1})) != \
        rz.build_view(scan, pages({"Items": [item("a", x="2")], "Count": 1, "ScannedCount": 1}))
    get = rz.LOp("GetItem", {"TableName": "t"})
    e1 = rz.build_view(get, [rz.Page({}, resp({"__type": "x#ValidationException", "message": "a"}, 400))])
    e2 = rz.build_view(get, [rz.Page({}, resp({"__type": "x#ValidationException", "message": "b"}, 400))])
    assert e1 != e2


def test_number_spelling_rule():
    # DynamoDB Local's non-canonical numbers ("2.0" from arithmetic, nested "01") equal onggi's canonical
    # ones; a non-canonical number from onggi is still a difference.
    get = rz.LOp("GetItem", {"TableName": "t"})
    exp = pages({"Item": {"a": {"N": "2.0"}, "m": {"M": {"x": {"N": "01"}, "s": {"NS": ["1E2", "3"]}}}}})
    act = pages({"Item": {"a": {"N": "2"}, "m": {"M": {"x": {"N": "1"}, "s": {"NS": ["100", "3"]}}}}})
    ev, av = rz.compare_op(get, exp, act)
    assert ev == av
    ev, av = rz.compare_op(get, act, exp)
    assert ev != av
    ev, av = rz.compare_op(get, pages({"Item": {"a": {"N": "2.0"}}}), pages({"Item": {"a": {"N": "3"}}}))
    assert ev != av


def test_dumped_sequence_is_a_valid_sequence_file(tmp_path):
    # A dump follows the sequences/*.json rules (diff_ names, every table deleted) and loads.
    lops, names = rz.generate(5, 30)
    trace = [(lop, [rz.Page(lop.request, resp({}))], []) for lop in lops[:-1]]  # stopped before DeleteTable
    doc = rz.sequence_doc(5, "all", trace, names, failing=len(trace) - 1, reads=True)
    path = tmp_path / "rnd.json"
    rz.write_sequence(doc, str(path))
    seq = difflib_ddb.load_sequence(str(path))
    assert seq.steps and all(n.startswith("diff_rnd_5_") for n in seq.table_names())
    live = set()
    for step in seq.steps:
        assert set(step.options) <= {"note"}
        if step.op == "CreateTable":
            live.add(step.request["TableName"])
        elif step.op == "DeleteTable":
            live.discard(step.request["TableName"])
        for name in (step.request.get("RequestItems") or {}):
            assert name.startswith("diff_rnd_5_")
    assert not live
