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
import re

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


def _tops(expr: str, names: dict) -> list[str]:
    return [names.get(x, x) for x in re.findall(r"(?:^|,)\s*([^.,\[\s]+)", expr)]


def test_valid_parts_of_steps_carry_no_second_error():
    # A deliberately invalid step has one error: no self-comparison ("a >= a" is refused statically),
    # key-attribute updates without a condition (DynamoDB Local checks the condition first), no unused
    # attribute definition in a valid CreateTable, one overlapping pair in a broken projection.
    cmp_re = re.compile(r"([#\w][^\s(),]*) (?:=|<>|<=|>=|<|>) ([#\w][^\s(),]*)")
    seen_overlap = seen_key = 0
    for seed in range(1, 160):
        for lop in rz.generate(seed)[0]:
            req = lop.request
            names = req.get("ExpressionAttributeNames") or {}

            def resolve(p: str) -> str:
                return ".".join(names.get(x, x) for x in re.split(r"\.", p))

            for member in ("ConditionExpression", "FilterExpression"):
                for left, right in cmp_re.findall(req.get(member) or ""):
                    assert resolve(left) != resolve(right), (seed, req[member])
            if lop.op == "CreateTable" and not lop.invalid:
                used = {k["AttributeName"] for k in req["KeySchema"]}
                for member in ("LocalSecondaryIndexes", "GlobalSecondaryIndexes"):
                    used |= {k["AttributeName"] for ix in req.get(member, []) for k in ix["KeySchema"]}
                assert used == {d["AttributeName"] for d in req["AttributeDefinitions"]}
            if lop.invalid == "update update_key":
                seen_key += 1
                assert "ConditionExpression" not in req
            if lop.invalid == "expression overlap in ProjectionExpression":
                seen_overlap += 1
                tops = _tops(req["ProjectionExpression"], names)
                assert len(tops) == len(set(tops)) + 1, req["ProjectionExpression"]
    assert seen_overlap and seen_key


def test_lek_on_the_inclusive_bound_rule():
    # onggi's LastEvaluatedKey on the last item of "s <= :c" (then an empty page) equals DynamoDB Local's
    # answer without it; not for another bound, nor for "=", nor the other way round.
    def query(op: str, values: list, forward: bool = True) -> rz.LOp:
        return rz.LOp("Query", {"TableName": "t", "Limit": 2, "ScanIndexForward": forward}, mode="query",
                      info={"range_cond": {"attr": "s", "op": op, "values": values}})

    a, c = {"pk": {"S": "h"}, "s": {"S": "a"}}, {"pk": {"S": "h"}, "s": {"S": "c"}}
    exp = pages({"Items": [a, c], "Count": 2, "ScannedCount": 2})
    act = pages({"Items": [a, c], "Count": 2, "ScannedCount": 2, "LastEvaluatedKey": c},
                {"Items": [], "Count": 0, "ScannedCount": 0})
    ev, av = rz.compare_op(query("<=", [{"S": "c"}]), exp, act)
    assert ev == av
    ev, av = rz.compare_op(query("BETWEEN", [{"S": "0"}, {"S": "c"}]), exp, act)
    assert ev == av
    for lop in (query("<=", [{"S": "d"}]), query("=", [{"S": "c"}]), query("<=", [{"S": "c"}], forward=False),
                query(">=", [{"S": "c"}])):
        ev, av = rz.compare_op(lop, exp, act)
        assert ev != av
    ev, av = rz.compare_op(query("<=", [{"S": "c"}]), act, exp)
    assert ev != av


def test_gsi_partial_key_capacity_rule():
    # DynamoDB Local's charge to a composite GSI the item is in neither before nor after is accepted;
    # a charge onggi makes and DynamoDB Local does not, or one for an item that was in the index, is not.
    lop = rz.LOp("PutItem", {"TableName": "t", "Item": {"pk": {"S": "a"}, "gr": {"S": "1"}},
                             "ReturnConsumedCapacity": "INDEXES"},
                 info={"composite_gsis": {"t": {"key": ["pk"], "gsis": {"gsi_0": ["gh", "gr"]}}}})
    charged = pages({"ConsumedCapacity": {"TableName": "t", "CapacityUnits": 2.0, "Table": {"CapacityUnits": 1.0},
                                          "GlobalSecondaryIndexes": {"gsi_0": {"CapacityUnits": 1.0}}}})
    free = pages({"ConsumedCapacity": {"TableName": "t", "CapacityUnits": 1.0, "Table": {"CapacityUnits": 1.0}}})
    partial = {"gsi_states": {"t": [({"pk": {"S": "a"}, "gh": {"S": "1"}}, {"pk": {"S": "a"}, "gr": {"S": "1"}})]}}
    was_in = {"gsi_states": {"t": [({"pk": {"S": "a"}, "gh": {"S": "1"}, "gr": {"S": "0"}},
                                    {"pk": {"S": "a"}, "gr": {"S": "1"}})]}}
    ev, av = rz.compare_op(lop, charged, free, partial)
    assert ev == av
    ev, av = rz.compare_op(lop, free, charged, partial)
    assert ev != av
    ev, av = rz.compare_op(lop, charged, free, was_in)
    assert ev != av
    ev, av = rz.compare_op(lop, charged, free, None)
    assert ev != av
    total = dict(lop.request, ReturnConsumedCapacity="TOTAL")
    lop_t = rz.LOp("PutItem", total, info=lop.info)
    ev, av = rz.compare_op(lop_t, pages({"ConsumedCapacity": {"TableName": "t", "CapacityUnits": 2.0}}),
                           pages({"ConsumedCapacity": {"TableName": "t", "CapacityUnits": 1.0}}), partial)
    assert ev == av


def test_unused_definition_rule():
    # Only the deliberate unused_def step, only DynamoDB Local accepting and onggi giving DynamoDB's message.
    msg = rz.UNUSED_DEFINITION
    ok = pages({"TableDescription": {"TableName": "t"}})
    refused = [rz.Page({}, resp({"__type": "com.amazon.coral.validate#ValidationException", "message": msg}, 400))]
    other = [rz.Page({}, resp({"__type": "com.amazon.coral.validate#ValidationException", "message": "x"}, 400))]
    lop = rz.LOp("CreateTable", {"TableName": "t"}, invalid="CreateTable unused_def")
    ev, av = rz.compare_op(lop, ok, refused)
    assert ev == av
    assert rz.compare_op(lop, ok, other)[0] != rz.compare_op(lop, ok, other)[1]
    assert rz.compare_op(lop, refused, ok)[0] != rz.compare_op(lop, refused, ok)[1]
    valid = rz.LOp("CreateTable", {"TableName": "t"})
    assert rz.compare_op(valid, ok, refused)[0] != rz.compare_op(valid, ok, refused)[1]


def test_update_precedence_candidates():
    # Only valid UpdateItems with several actions, failing with two different ValidationExceptions.
    def err(m: str) -> dict:
        return {"status": 400, "__type": "com.amazon.coral.validate#ValidationException", "message": m}

    lop = rz.LOp("UpdateItem", {"TableName": "t"}, info={"update_actions": [["SET", "a = c"], ["SET", "b.c = :v"]]})
    assert rz._update_precedence_candidate(lop, err("x"), err("y"))
    assert not rz._update_precedence_candidate(lop, err("x"), err("x"))
    assert not rz._update_precedence_candidate(lop, err("x"), {"status": 200})
    ccf = dict(err("x"), __type="com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException")
    assert not rz._update_precedence_candidate(lop, ccf, err("y"))
    one = rz.LOp("UpdateItem", {"TableName": "t"}, info={"update_actions": [["SET", "a = c"]]})
    assert not rz._update_precedence_candidate(one, err("x"), err("y"))
    bad = rz.LOp("UpdateItem", {"TableName": "t"}, info=lop.info, invalid="update overlap")
    assert not rz._update_precedence_candidate(bad, err("x"), err("y"))


def test_index_named_rule():
    # Either index keyed on the empty attribute may be named; an index without that key may not.
    def err(ix: str, key: str = "g2") -> list:
        return [rz.Page({}, resp({"__type": "com.amazon.coral.validate#ValidationException", "message":
                                  "One or more parameter values are not valid. A value specified for a secondary index "
                                  f"key is not supported. The AttributeValue for a key attribute cannot contain an empty "
                                  f"string value. IndexName: {ix}, IndexKey: {key}"}, 400))]

    lop = rz.LOp("PutItem", {"TableName": "t"}, info={"index_keys": {"gsi_0": ["part", "g2"], "gsi_1": ["g2", "g3"],
                                                                       "gsi_2": ["g3"]}},
                 invalid="item index key g2 wrong type/empty")
    ev, av = rz.compare_op(lop, err("gsi_1"), err("gsi_0"))
    assert ev == av
    for a in (err("gsi_2"), err("gsi_1", "g3"), err("gsi_9")):
        ev, av = rz.compare_op(lop, err("gsi_1"), a)
        assert ev != av
    plain = rz.LOp("PutItem", {"TableName": "t"})
    ev, av = rz.compare_op(plain, err("gsi_1"), err("gsi_0"))
    assert ev != av


def test_updated_nested_paths_rule():
    # DynamoDB Local's whole attribute, projected onto the written path l[1], is onggi's closed-up list.
    lop = rz.LOp("UpdateItem", {"TableName": "t", "ReturnValues": "UPDATED_NEW"},
                 info={"update_paths": [["l", 1], ["g"]]})
    exp = pages({"Attributes": {"l": {"L": [{"N": "-1"}, {"NS": ["164"]}]}, "g": {"S": "0"}}})
    act = pages({"Attributes": {"l": {"L": [{"NS": ["164"]}]}, "g": {"S": "0"}}})
    ev, av = rz.compare_op(lop, exp, act)
    assert ev == av
    wrong = pages({"Attributes": {"l": {"L": [{"N": "-1"}]}, "g": {"S": "0"}}})
    ev, av = rz.compare_op(lop, exp, wrong)
    assert ev != av
