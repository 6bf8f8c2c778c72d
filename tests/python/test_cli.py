"""AWS CLI (v1, from the venv) against each backend: table and single-item commands, JSON output."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ACCESS_KEY, REGION, SECRET_KEY

AWS = str(Path(sys.executable).with_name("aws"))
if not os.access(AWS, os.X_OK):
    AWS = shutil.which("aws") or AWS


def aws(target, *args, check=True):
    """Run `aws dynamodb <args>` against the target; returns (exit code, parsed JSON stdout or None, stderr)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY, AWS_DEFAULT_REGION=REGION,
               AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull, AWS_MAX_ATTEMPTS="1",
               AWS_RETRY_MODE="standard", AWS_PAGER="")
    p = subprocess.run([AWS, "dynamodb", *args, "--endpoint-url", target.endpoint, "--output", "json"],
                       capture_output=True, text=True, env=env, timeout=45)
    out = json.loads(p.stdout) if p.stdout.strip() else None
    if check:
        assert p.returncode == 0, f"aws {' '.join(args)} failed ({p.returncode}): {p.stderr}"
    return p.returncode, out, p.stderr


def J(v) -> str:
    return json.dumps(v)


@pytest.fixture
def cli_table(target, table_name):
    """A hash+range table created through the CLI (deleted by the table_name fixture)."""
    _, out, _ = aws(target, "create-table", "--table-name", table_name,
                    "--attribute-definitions", "AttributeName=pk,AttributeType=S", "AttributeName=sk,AttributeType=N",
                    "--key-schema", "AttributeName=pk,KeyType=HASH", "AttributeName=sk,KeyType=RANGE",
                    "--billing-mode", "PAY_PER_REQUEST")
    # create-table prints the new table's description.
    assert out["TableDescription"]["TableName"] == table_name
    assert out["TableDescription"]["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"},
                                                    {"AttributeName": "sk", "KeyType": "RANGE"}]
    return table_name


def test_cli_table_lifecycle(target, cli_table):
    # describe-table and list-tables show the table; delete-table removes it; describing it again fails.
    _, out, _ = aws(target, "describe-table", "--table-name", cli_table)
    t = out["Table"]
    assert t["TableStatus"] == "ACTIVE"
    assert t["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert sorted((a["AttributeName"], a["AttributeType"]) for a in t["AttributeDefinitions"]) == [("pk", "S"), ("sk", "N")]
    _, out, _ = aws(target, "list-tables", "--exclusive-start-table-name", cli_table[:-1])
    assert cli_table in out["TableNames"]
    _, out, _ = aws(target, "delete-table", "--table-name", cli_table)
    assert out["TableDescription"]["TableName"] == cli_table
    rc, out, err = aws(target, "describe-table", "--table-name", cli_table, check=False)
    assert rc != 0 and out is None
    assert "ResourceNotFoundException" in err


def test_cli_item_roundtrip(target, cli_table):
    # put-item / get-item / update-item (expressions, ALL_NEW) / delete-item (ALL_OLD) via the CLI.
    key = {"pk": {"S": "user#1"}, "sk": {"N": "10"}}
    item = {**key, "name": {"S": "Ada"}, "visits": {"N": "1"}, "tags": {"SS": ["a", "b"]},
            "profile": {"M": {"langs": {"L": [{"S": "en"}]}, "active": {"BOOL": True}}}}
    _, out, _ = aws(target, "put-item", "--table-name", cli_table, "--item", J(item))
    assert out is None or out == {}  # put-item prints nothing without return values
    _, out, _ = aws(target, "get-item", "--table-name", cli_table, "--key", J(key), "--consistent-read")
    got = out["Item"]
    assert got["name"] == {"S": "Ada"} and got["visits"] == {"N": "1"}
    assert sorted(got["tags"]["SS"]) == ["a", "b"]
    assert got["profile"] == {"M": {"langs": {"L": [{"S": "en"}]}, "active": {"BOOL": True}}}

    _, out, _ = aws(target, "update-item", "--table-name", cli_table, "--key", J(key),
                    "--update-expression", "SET visits = visits + :one, #n = :n REMOVE profile.active ADD tags :t",
                    "--condition-expression", "attribute_exists(pk)",
                    "--expression-attribute-names", J({"#n": "name"}),
                    "--expression-attribute-values", J({":one": {"N": "1"}, ":n": {"S": "Ada L."}, ":t": {"SS": ["c"]}}),
                    "--return-values", "ALL_NEW")
    a = out["Attributes"]
    assert a["visits"] == {"N": "2"} and a["name"] == {"S": "Ada L."}
    assert sorted(a["tags"]["SS"]) == ["a", "b", "c"]
    assert a["profile"] == {"M": {"langs": {"L": [{"S": "en"}]}}}

    _, out, _ = aws(target, "get-item", "--table-name", cli_table, "--key", J(key),
                    "--projection-expression", "visits, profile.langs[0]")
    assert out["Item"] == {"visits": {"N": "2"}, "profile": {"M": {"langs": {"L": [{"S": "en"}]}}}}

    _, out, _ = aws(target, "delete-item", "--table-name", cli_table, "--key", J(key), "--return-values", "ALL_OLD")
    assert out["Attributes"]["visits"] == {"N": "2"}
    _, out, _ = aws(target, "get-item", "--table-name", cli_table, "--key", J(key))
    assert out is None or "Item" not in out  # a missing item prints nothing (or {})


def test_cli_errors(target, cli_table):
    # A failed condition exits non-zero with ConditionalCheckFailedException on stderr; the item is unchanged.
    key = {"pk": {"S": "c"}, "sk": {"N": "1"}}
    aws(target, "put-item", "--table-name", cli_table, "--item", J({**key, "v": {"N": "1"}}))
    rc, out, err = aws(target, "put-item", "--table-name", cli_table, "--item", J({**key, "v": {"N": "2"}}),
                       "--condition-expression", "attribute_not_exists(pk)", check=False)
    assert rc != 0 and out is None
    assert "ConditionalCheckFailedException" in err and "The conditional request failed" in err
    _, out, _ = aws(target, "get-item", "--table-name", cli_table, "--key", J(key), "--consistent-read")
    assert out["Item"]["v"] == {"N": "1"}
    # A server-side ValidationException is reported with its message and a non-zero exit code.
    rc, out, err = aws(target, "get-item", "--table-name", cli_table, "--key", J({"pk": {"S": "x"}}), check=False)
    assert rc != 0 and out is None
    assert "ValidationException" in err and "The number of conditions on the keys is invalid" in err
