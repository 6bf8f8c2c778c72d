"""AWS CLI (v1, from the venv) against each backend: query, scan (with the CLI's auto-pagination),
batch-write-item and batch-get-item from JSON files. Invoked like test_cli.py does."""

from __future__ import annotations

import json

import pytest

from test_cli import J, aws


def N(v):
    return {"N": str(v)}


def S(v):
    return {"S": v}


@pytest.fixture
def qs_table(target, ddb, table_name, tmp_path):
    """A hash+range table (pk S, sk N) filled through batch-write-item from JSON files:
    partition 'p' with sk 0..29 (v = 'v<sk>', odd flag), partition 'q' with sk 0..4."""
    ddb.create_table(TableName=table_name, BillingMode="PAY_PER_REQUEST",  # boto3: quicker than another CLI run
                     AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                           {"AttributeName": "sk", "AttributeType": "N"}],
                     KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}])
    ddb.get_waiter("table_exists").wait(TableName=table_name, WaiterConfig={"Delay": 0.1, "MaxAttempts": 100})
    items = [{"pk": S("p"), "sk": N(i), "v": S(f"v{i}"), "odd": {"BOOL": i % 2 == 1}} for i in range(30)]
    items += [{"pk": S("q"), "sk": N(i), "v": S(f"q{i}")} for i in range(5)]
    for n, start in enumerate(range(0, len(items), 25)):  # at most 25 writes per call
        f = tmp_path / f"batch{n}.json"
        f.write_text(json.dumps({table_name: [{"PutRequest": {"Item": it}} for it in items[start:start + 25]]}))
        _, out, _ = aws(target, "batch-write-item", "--request-items", f"file://{f}")
        assert out == {"UnprocessedItems": {}}
    return table_name


def sks(out):
    return [int(i["sk"]["N"]) for i in out["Items"]]


def test_cli_query_auto_paginates(target, qs_table):
    # With a small --page-size the CLI follows LastEvaluatedKey itself and prints one merged result.
    _, out, _ = aws(target, "query", "--table-name", qs_table, "--key-condition-expression", "pk = :p",
                    "--expression-attribute-values", J({":p": S("p")}), "--page-size", "4")
    assert sks(out) == list(range(30))
    assert out["Count"] == 30 and out["ScannedCount"] == 30
    assert "LastEvaluatedKey" not in out and "NextToken" not in out
    _, out, _ = aws(target, "query", "--table-name", qs_table,
                    "--key-condition-expression", "pk = :p AND sk BETWEEN :a AND :b",
                    "--filter-expression", "odd = :t", "--projection-expression", "sk, v",
                    "--expression-attribute-values", J({":p": S("p"), ":a": N(5), ":b": N(20), ":t": {"BOOL": True}}),
                    "--no-scan-index-forward", "--page-size", "3")
    assert sks(out) == [19, 17, 15, 13, 11, 9, 7, 5]
    assert out["Items"][0] == {"sk": N(19), "v": S("v19")}
    assert out["Count"] == 8 and out["ScannedCount"] == 16
    _, out, _ = aws(target, "query", "--table-name", qs_table, "--key-condition-expression", "pk = :p",
                    "--expression-attribute-values", J({":p": S("p")}), "--select", "COUNT", "--page-size", "7")
    assert out["Count"] == 30 and "Items" not in out


def test_cli_query_max_items_and_starting_token(target, qs_table):
    # --max-items stops early and prints a NextToken; --starting-token resumes right after.
    base = ["query", "--table-name", qs_table, "--key-condition-expression", "pk = :p",
            "--expression-attribute-values", J({":p": S("p")}), "--page-size", "4"]
    _, out, _ = aws(target, *base, "--max-items", "10")
    assert sks(out) == list(range(10))
    token = out["NextToken"]
    _, out, _ = aws(target, *base, "--max-items", "15", "--starting-token", token)
    assert sks(out) == list(range(10, 25))
    _, out, _ = aws(target, *base, "--starting-token", out["NextToken"])
    assert sks(out) == list(range(25, 30))
    assert "NextToken" not in out


def test_cli_query_no_paginate_limit(target, qs_table):
    # --no-paginate sends one request: --limit bounds it and LastEvaluatedKey is printed.
    _, out, _ = aws(target, "query", "--table-name", qs_table, "--key-condition-expression", "pk = :p",
                    "--expression-attribute-values", J({":p": S("q")}), "--limit", "2", "--no-paginate")
    assert sks(out) == [0, 1]
    assert out["LastEvaluatedKey"] == {"pk": S("q"), "sk": N(1)}
    _, out, _ = aws(target, "query", "--table-name", qs_table, "--key-condition-expression", "pk = :p",
                    "--expression-attribute-values", J({":p": S("q")}), "--limit", "2", "--no-paginate",
                    "--exclusive-start-key", J(out["LastEvaluatedKey"]))
    assert sks(out) == [2, 3]


def test_cli_scan_auto_paginates(target, qs_table):
    # scan with a small --page-size returns every item once; filters and COUNT add up across pages.
    _, out, _ = aws(target, "scan", "--table-name", qs_table, "--page-size", "4")
    keys = [(i["pk"]["S"], int(i["sk"]["N"])) for i in out["Items"]]
    assert len(keys) == len(set(keys)) == 35
    assert sorted(keys) == sorted([("p", i) for i in range(30)] + [("q", i) for i in range(5)])
    assert out["Count"] == 35 and out["ScannedCount"] == 35
    _, out, _ = aws(target, "scan", "--table-name", qs_table, "--page-size", "6",
                    "--filter-expression", "odd = :f", "--expression-attribute-values", J({":f": {"BOOL": False}}))
    assert sorted(sks(out)) == list(range(0, 30, 2))
    assert out["Count"] == 15 and out["ScannedCount"] == 35
    _, out, _ = aws(target, "scan", "--table-name", qs_table, "--select", "COUNT", "--page-size", "10")
    assert out["Count"] == 35
    _, out, _ = aws(target, "scan", "--table-name", qs_table, "--max-items", "20", "--page-size", "7")
    first = [(i["pk"]["S"], i["sk"]["N"]) for i in out["Items"]]
    assert len(first) == 20 and "NextToken" in out
    _, out, _ = aws(target, "scan", "--table-name", qs_table, "--page-size", "7", "--starting-token", out["NextToken"])
    rest = [(i["pk"]["S"], i["sk"]["N"]) for i in out["Items"]]
    assert len(rest) == 15 and not set(first) & set(rest)
    # Parallel scan segments through the CLI cover the table once.
    seen = []
    for seg in range(3):
        _, out, _ = aws(target, "scan", "--table-name", qs_table, "--segment", str(seg), "--total-segments", "3",
                        "--page-size", "5", "--projection-expression", "pk, sk")
        seen += [(i["pk"]["S"], i["sk"]["N"]) for i in out["Items"]]
    assert len(seen) == len(set(seen)) == 35


def test_cli_batch_write_delete_and_get(target, qs_table, tmp_path):
    # batch-write-item deletes from a file; batch-get-item reads keys with a projection.
    f = tmp_path / "deletes.json"
    f.write_text(json.dumps({qs_table: [{"DeleteRequest": {"Key": {"pk": S("p"), "sk": N(i)}}} for i in range(10)]}))
    _, out, _ = aws(target, "batch-write-item", "--request-items", f"file://{f}", "--return-consumed-capacity", "TOTAL")
    assert out["UnprocessedItems"] == {}
    assert out["ConsumedCapacity"] == [{"TableName": qs_table, "CapacityUnits": 10.0}]
    g = tmp_path / "gets.json"
    g.write_text(json.dumps({qs_table: {"Keys": [{"pk": S("p"), "sk": N(i)} for i in (5, 10, 11)],
                                        "ProjectionExpression": "sk, v", "ConsistentRead": True}}))
    _, out, _ = aws(target, "batch-get-item", "--request-items", f"file://{g}")
    got = sorted(out["Responses"][qs_table], key=lambda i: int(i["sk"]["N"]))
    assert got == [{"sk": N(10), "v": S("v10")}, {"sk": N(11), "v": S("v11")}]
    assert out["UnprocessedKeys"] == {}
    _, out, _ = aws(target, "query", "--table-name", qs_table, "--key-condition-expression", "pk = :p",
                    "--expression-attribute-values", J({":p": S("p")}), "--consistent-read", "--page-size", "8")
    assert sks(out) == list(range(10, 30))


def test_cli_batch_write_errors(target, qs_table, tmp_path):
    # 26 writes, or two writes of one key, fail with a non-zero exit code and the server's message.
    f = tmp_path / "too_many.json"
    f.write_text(json.dumps({qs_table: [{"PutRequest": {"Item": {"pk": S("x"), "sk": N(i)}}} for i in range(26)]}))
    rc, out, err = aws(target, "batch-write-item", "--request-items", f"file://{f}", check=False)
    assert rc != 0 and out is None
    assert "ValidationException" in err
    # DynamoDB Local's wording, or real DynamoDB's list constraint ("... less than or equal to 25 ...").
    assert "Too many items requested for the BatchWriteItem call" in err or "less than or equal to 25" in err
    f = tmp_path / "dups.json"
    f.write_text(json.dumps({qs_table: [{"PutRequest": {"Item": {"pk": S("x"), "sk": N(1)}}},
                                        {"DeleteRequest": {"Key": {"pk": S("x"), "sk": N(1)}}}]}))
    rc, out, err = aws(target, "batch-write-item", "--request-items", f"file://{f}", check=False)
    assert rc != 0 and "Provided list of item keys contains duplicates" in err
    rc, out, err = aws(target, "query", "--table-name", qs_table, "--key-condition-expression", "v = :v",
                       "--expression-attribute-values", J({":v": S("v1")}), check=False)
    assert rc != 0 and "Query condition missed key schema element" in err
