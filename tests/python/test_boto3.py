"""boto3 client/resource tests of table and single-item operations.

Every test runs against each backend (the `target` fixture: onggi and DynamoDB Local), so the
expectations here are proven against DynamoDB Local. A few checks apply only to onggi because
DynamoDB Local lacks the field (guarded by `target.is_ddblocal`).
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import boto3
import pytest
from boto3.dynamodb.conditions import Attr
from boto3.dynamodb.types import Binary
from botocore.config import Config
from botocore.exceptions import ClientError

from conftest import ACCESS_KEY, REGION, SECRET_KEY, make_client, unique_table_name

HASH_S = dict(KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
              AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}])
PPR = dict(BillingMode="PAY_PER_REQUEST")


def create(ddb, name, key=None, **kw):
    """Create a table (hash key pk:S, on-demand, unless told otherwise) and wait until ACTIVE."""
    args = dict(TableName=name, **(key or HASH_S))
    if "ProvisionedThroughput" not in kw and "BillingMode" not in kw:
        args.update(PPR)
    args.update(kw)
    desc = ddb.create_table(**args)["TableDescription"]
    wait_active(ddb, name)
    return desc


def wait_active(ddb, name, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        t = ddb.describe_table(TableName=name)["Table"]
        if t["TableStatus"] == "ACTIVE" and all(
                g.get("IndexStatus", "ACTIVE") == "ACTIVE" for g in t.get("GlobalSecondaryIndexes", [])):
            return t
        assert time.monotonic() < deadline, f"table {name} not ACTIVE: {t['TableStatus']}"
        time.sleep(0.05)


def err(excinfo) -> tuple[str, str]:
    e = excinfo.value.response["Error"]
    return e["Code"], e["Message"]


@pytest.fixture
def tbl(ddb, table_name):
    """A fresh on-demand table with hash key pk (S)."""
    create(ddb, table_name)
    return table_name


@pytest.fixture
def tbl2(ddb, table_name):
    """A fresh on-demand table with hash key pk (S) and range key sk (N)."""
    create(ddb, table_name, key=dict(
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                              {"AttributeName": "sk", "AttributeType": "N"}]))
    return table_name


def get(ddb, table, key, **kw):
    return ddb.get_item(TableName=table, Key=key, ConsistentRead=True, **kw).get("Item")


# =========================================================================== tables

def test_create_hash_table_describe_fields(ddb, table_name, target):
    # CreateTable echoes a full, ACTIVE description; DescribeTable returns the same schema and metadata.
    before = datetime.now(timezone.utc)
    desc = create(ddb, table_name)
    assert desc["TableName"] == table_name
    assert desc["TableStatus"] in ("ACTIVE", "CREATING")
    t = ddb.describe_table(TableName=table_name)["Table"]
    assert t["TableName"] == table_name
    assert t["TableStatus"] == "ACTIVE"
    assert t["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}]
    assert t["AttributeDefinitions"] == [{"AttributeName": "pk", "AttributeType": "S"}]
    assert t["TableArn"].startswith("arn:aws:dynamodb:") and t["TableArn"].endswith(f":table/{table_name}")
    assert t["ItemCount"] == 0 and t["TableSizeBytes"] == 0
    assert t["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert t["ProvisionedThroughput"]["ReadCapacityUnits"] == 0
    assert t["ProvisionedThroughput"]["WriteCapacityUnits"] == 0
    created = t["CreationDateTime"]
    assert before - timedelta(minutes=5) <= created <= datetime.now(timezone.utc) + timedelta(minutes=5)
    if not target.is_ddblocal:  # DynamoDB Local omits TableId; real DynamoDB (and onggi) return a UUID
        assert len(t["TableId"]) == 36 and t["TableId"].count("-") == 4


@pytest.mark.parametrize("htype,rtype", [("S", "N"), ("N", "B"), ("B", "S")])
def test_create_hash_range_provisioned(ddb, table_name, htype, rtype):
    # Hash+range tables with every key type; PROVISIONED throughput is echoed back exactly.
    create(ddb, table_name, key=dict(
        KeySchema=[{"AttributeName": "h", "KeyType": "HASH"}, {"AttributeName": "r", "KeyType": "RANGE"}],
        AttributeDefinitions=[{"AttributeName": "h", "AttributeType": htype},
                              {"AttributeName": "r", "AttributeType": rtype}]),
        ProvisionedThroughput={"ReadCapacityUnits": 3, "WriteCapacityUnits": 4})
    t = ddb.describe_table(TableName=table_name)["Table"]
    assert t["KeySchema"] == [{"AttributeName": "h", "KeyType": "HASH"}, {"AttributeName": "r", "KeyType": "RANGE"}]
    assert sorted((a["AttributeName"], a["AttributeType"]) for a in t["AttributeDefinitions"]) == \
        [("h", htype), ("r", rtype)]
    assert t["ProvisionedThroughput"]["ReadCapacityUnits"] == 3
    assert t["ProvisionedThroughput"]["WriteCapacityUnits"] == 4
    assert t["ProvisionedThroughput"]["NumberOfDecreasesToday"] == 0
    assert t.get("BillingModeSummary", {}).get("BillingMode", "PROVISIONED") == "PROVISIONED"


def test_create_with_lsi_and_gsi(ddb, table_name):
    # LSI and GSI definitions are accepted and described with key schema, projection and throughput.
    create(ddb, table_name, key=dict(
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[{"AttributeName": n, "AttributeType": t}
                              for n, t in [("pk", "S"), ("sk", "S"), ("lsk", "N"), ("gpk", "S")]]),
        ProvisionedThroughput={"ReadCapacityUnits": 5, "WriteCapacityUnits": 5},
        LocalSecondaryIndexes=[{"IndexName": "by_lsk", "KeySchema": [
            {"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "lsk", "KeyType": "RANGE"}],
            "Projection": {"ProjectionType": "KEYS_ONLY"}}],
        GlobalSecondaryIndexes=[{"IndexName": "by_gpk", "KeySchema": [{"AttributeName": "gpk", "KeyType": "HASH"}],
                                 "Projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["a", "b"]},
                                 "ProvisionedThroughput": {"ReadCapacityUnits": 2, "WriteCapacityUnits": 1}}])
    t = ddb.describe_table(TableName=table_name)["Table"]
    (lsi,) = t["LocalSecondaryIndexes"]
    assert lsi["IndexName"] == "by_lsk"
    assert lsi["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "lsk", "KeyType": "RANGE"}]
    assert lsi["Projection"] == {"ProjectionType": "KEYS_ONLY"}
    assert lsi["IndexArn"].endswith(f":table/{table_name}/index/by_lsk")
    (gsi,) = t["GlobalSecondaryIndexes"]
    assert gsi["IndexName"] == "by_gpk"
    assert gsi["KeySchema"] == [{"AttributeName": "gpk", "KeyType": "HASH"}]
    assert gsi["Projection"] == {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["a", "b"]}
    assert gsi["IndexStatus"] == "ACTIVE"
    assert gsi["ProvisionedThroughput"]["ReadCapacityUnits"] == 2
    assert gsi["ProvisionedThroughput"]["WriteCapacityUnits"] == 1
    assert gsi["IndexArn"].endswith(f":table/{table_name}/index/by_gpk")


def test_create_existing_table_fails(ddb, tbl):
    # Creating a table that exists is ResourceInUseException.
    with pytest.raises(ClientError) as ei:
        ddb.create_table(TableName=tbl, **HASH_S, **PPR)
    assert err(ei) == ("ResourceInUseException", "Cannot create preexisting table")


def test_create_provisioned_without_throughput_fails(ddb, table_name):
    # PROVISIONED (the default billing mode) requires ProvisionedThroughput.
    with pytest.raises(ClientError) as ei:
        ddb.create_table(TableName=table_name, **HASH_S)
    assert err(ei) == ("ValidationException", "No provisioned throughput specified for the table")


def test_create_table_invalid_name(ddb):
    # Table names must match [a-zA-Z0-9_.-]{3,255}.
    for bad in ("ab", "bad name!", "x" * 256):
        with pytest.raises(ClientError) as ei:
            ddb.create_table(TableName=bad, **HASH_S, **PPR)
        code, msg = err(ei)
        assert code == "ValidationException"
        assert msg.startswith("Invalid table/index name.  Table/index names must be between 3 and 255 characters long")


def test_list_tables_pagination(ddb):
    # ListTables is sorted; Limit/ExclusiveStartTableName page through it; the paginator sees everything.
    prefix = unique_table_name("lt")
    names = [f"{prefix}_{c}" for c in "abc"]
    try:
        for n in names:
            create(ddb, n)
        r = ddb.list_tables(ExclusiveStartTableName=prefix, Limit=2)
        assert r["TableNames"] == names[:2]
        assert r["LastEvaluatedTableName"] == names[1]
        r = ddb.list_tables(ExclusiveStartTableName=r["LastEvaluatedTableName"], Limit=2)
        assert r["TableNames"][0] == names[2]
        allnames = []
        for page in ddb.get_paginator("list_tables").paginate(PaginationConfig={"PageSize": 1}):
            assert len(page["TableNames"]) <= 1
            allnames += page["TableNames"]
        assert allnames == sorted(allnames)
        assert [n for n in allnames if n.startswith(prefix)] == names
    finally:
        for n in names:
            try:
                ddb.delete_table(TableName=n)
            except ClientError:
                pass


def test_list_tables_limit_validation(target):
    # Limit above 100 is rejected by the server (boto3 parameter validation turned off).
    c = boto3.client("dynamodb", endpoint_url=target.endpoint, region_name=REGION,
                     aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
                     config=Config(parameter_validation=False, retries={"max_attempts": 1}))
    with pytest.raises(ClientError) as ei:
        c.list_tables(Limit=101)
    assert err(ei) == ("ValidationException", "Limit in ListTables must be <= 100")
    with pytest.raises(ClientError) as ei:
        c.list_tables(Limit=0)
    assert err(ei) == ("ValidationException", "Limit must be greater than or equal to 1")


def test_update_table_throughput_and_billing(ddb, table_name):
    # UpdateTable changes provisioned throughput, then switches to PAY_PER_REQUEST.
    create(ddb, table_name, ProvisionedThroughput={"ReadCapacityUnits": 1, "WriteCapacityUnits": 1})
    d = ddb.update_table(TableName=table_name,
                         ProvisionedThroughput={"ReadCapacityUnits": 6, "WriteCapacityUnits": 2})["TableDescription"]
    assert d["TableName"] == table_name
    t = wait_active(ddb, table_name)
    assert (t["ProvisionedThroughput"]["ReadCapacityUnits"], t["ProvisionedThroughput"]["WriteCapacityUnits"]) == (6, 2)
    ddb.update_table(TableName=table_name, BillingMode="PAY_PER_REQUEST")
    t = wait_active(ddb, table_name)
    assert t["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert (t["ProvisionedThroughput"]["ReadCapacityUnits"], t["ProvisionedThroughput"]["WriteCapacityUnits"]) == (0, 0)


def test_delete_table_then_not_found(ddb, table_name):
    # DeleteTable returns the description; afterwards the table is gone for every operation.
    create(ddb, table_name)
    ddb.put_item(TableName=table_name, Item={"pk": {"S": "a"}})
    d = ddb.delete_table(TableName=table_name)["TableDescription"]
    assert d["TableName"] == table_name
    assert d["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}]
    deadline = time.monotonic() + 10
    while True:  # a DELETING table may still be described for a moment
        try:
            ddb.describe_table(TableName=table_name)
        except ClientError as e:
            assert e.response["Error"]["Code"] == "ResourceNotFoundException"
            break
        assert time.monotonic() < deadline
        time.sleep(0.05)
    for call in (lambda: ddb.describe_table(TableName=table_name),
                 lambda: ddb.get_item(TableName=table_name, Key={"pk": {"S": "a"}}),
                 lambda: ddb.put_item(TableName=table_name, Item={"pk": {"S": "a"}}),
                 lambda: ddb.delete_table(TableName=table_name)):
        with pytest.raises(ClientError) as ei:
            call()
        code, msg = err(ei)
        assert code == "ResourceNotFoundException"
        assert msg in ("Cannot do operations on a non-existent table",
                       f"Requested resource not found: Table: {table_name} not found")
    assert table_name not in ddb.list_tables()["TableNames"]


def test_item_count_and_size_after_writes(ddb, tbl):
    # DescribeTable ItemCount/TableSizeBytes reflect stored items (DynamoDB Local updates them at once).
    ddb.put_item(TableName=tbl, Item={"pk": {"S": "a"}, "v": {"S": "hello"}})
    ddb.put_item(TableName=tbl, Item={"pk": {"S": "b"}})
    t = ddb.describe_table(TableName=tbl)["Table"]
    # Real DynamoDB refreshes these about every six hours, so (0, 0) is also acceptable.
    # Size: "pk"+"a" (3) + "v"+"hello" (6) + "pk"+"b" (3) = 12 bytes.
    assert (t["ItemCount"], t["TableSizeBytes"]) in ((0, 0), (2, 12))


# =========================================================================== items: types

ALL_TYPES = {
    "pk": {"S": "k1"},
    "s": {"S": "héllo wörld"},
    "s_empty": {"S": ""},
    "n_int": {"N": "42"},
    "n_neg": {"N": "-17.25"},
    "n_38": {"N": "12345678901234567890123456789012345678"},
    "n_tiny": {"N": "1E-130"},
    "n_huge": {"N": "9.9999999999999999999999999999999999999E+125"},
    "b": {"B": b"\x00\x01\xff"},
    "b_empty": {"B": b""},
    "ss": {"SS": ["b", "a", "c"]},
    "ns": {"NS": ["3", "1.5", "-2"]},
    "bs": {"BS": [b"\x01", b"\x00"]},
    "m": {"M": {"inner": {"S": "x"}, "deeper": {"M": {"n": {"N": "1"}, "l": {"L": [{"BOOL": False}]}}}}},
    "l": {"L": [{"S": "a"}, {"N": "1"}, {"NULL": True}, {"L": []}, {"M": {}}, {"SS": ["z"]}]},
    "null": {"NULL": True},
    "t": {"BOOL": True},
    "f": {"BOOL": False},
}


def norm_item(item):
    out = {}
    for k, v in item.items():
        out[k] = norm_value(v)
    return out


def norm_value(v):
    (t, x), = v.items()
    if t in ("SS", "BS"):
        return {t: sorted(x)}
    if t == "NS":
        return {t: sorted(Decimal(n) for n in x)}
    if t == "N":
        return {t: Decimal(x)}
    if t == "M":
        return {t: norm_item(x)}
    if t == "L":
        return {t: [norm_value(e) for e in x]}
    return v


def test_put_get_every_type(ddb, tbl):
    # Every attribute type round-trips through PutItem/GetItem with equal values.
    ddb.put_item(TableName=tbl, Item=ALL_TYPES)
    item = get(ddb, tbl, {"pk": {"S": "k1"}})
    assert norm_item(item) == norm_item(ALL_TYPES)
    assert item["n_38"] == {"N": "12345678901234567890123456789012345678"}
    assert item["b"] == {"B": b"\x00\x01\xff"}
    assert item["b_empty"] == {"B": b""}
    assert item["s_empty"] == {"S": ""}


def test_number_normalization(ddb, tbl):
    # Numbers are stored canonically: trailing zeros, leading zeros, exponent and sign are normalized.
    ddb.put_item(TableName=tbl, Item={"pk": {"S": "n"}, "a": {"N": "1.50"}, "b": {"N": "000123.4500"},
                                      "c": {"N": "1E+2"}, "d": {"N": "-0"}, "e": {"N": "1.23e-5"},
                                      "f": {"N": "+7"}, "g": {"N": "1.0000000000000000000000000000000000000000"}})
    item = get(ddb, tbl, {"pk": {"S": "n"}})
    assert item["a"] == {"N": "1.5"}
    assert item["b"] == {"N": "123.45"}
    assert item["c"] == {"N": "100"}
    assert item["d"] == {"N": "0"}
    assert item["e"] == {"N": "0.0000123"}
    assert item["f"] == {"N": "7"}
    assert item["g"] == {"N": "1"}


@pytest.mark.parametrize("value,message", [
    ("123456789012345678901234567890123456789", "DynamoDB only supports precision up to 38 digits"),
    ("1E+126", "Number overflow. Attempting to store a number with magnitude larger than supported range"),
    ("1E-131", "Number underflow. Attempting to store a number with magnitude smaller than supported range"),
    ("abc", "A value provided cannot be converted into a number"),
    ("", "A value provided cannot be converted into a number"),
    ("NaN", "A value provided cannot be converted into a number"),
])
def test_invalid_numbers_rejected(ddb, tbl, value, message):
    # Numbers beyond 38 digits / 1E-130..1E+126 or unparsable are ValidationException; item unchanged.
    ddb.put_item(TableName=tbl, Item={"pk": {"S": "n"}, "v": {"N": "1"}})
    with pytest.raises(ClientError) as ei:
        ddb.put_item(TableName=tbl, Item={"pk": {"S": "n"}, "v": {"N": value}})
    assert err(ei) == ("ValidationException", message)
    assert get(ddb, tbl, {"pk": {"S": "n"}}) == {"pk": {"S": "n"}, "v": {"N": "1"}}


def test_number_key_equivalence(ddb, table_name):
    # 1.0 and 1 (and 1E0) are the same number key: they address the same item.
    create(ddb, table_name, key=dict(KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                                     AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "N"}]))
    ddb.put_item(TableName=table_name, Item={"pk": {"N": "1.0"}, "v": {"S": "first"}})
    ddb.put_item(TableName=table_name, Item={"pk": {"N": "1E0"}, "w": {"S": "second"}})
    item = get(ddb, table_name, {"pk": {"N": "1"}})
    assert item == {"pk": {"N": "1"}, "w": {"S": "second"}}


def test_resource_python_types(ddb_resource, ddb, tbl):
    # The boto3 resource layer round-trips Python types (Decimal, Binary, sets, dict, list, None, bool).
    table = ddb_resource.Table(tbl)
    item = {"pk": "r1", "n": Decimal("3.14"), "i": 7, "b": Binary(b"\x00x"), "ss": {"a", "b"},
            "ns": {Decimal("1"), Decimal("2.5")}, "bs": {Binary(b"\x01")}, "m": {"k": [1, "two", None, True]},
            "none": None, "flag": False}
    table.put_item(Item=item)
    got = table.get_item(Key={"pk": "r1"}, ConsistentRead=True)["Item"]
    assert got["n"] == Decimal("3.14") and got["i"] == Decimal(7)
    assert got["b"] == Binary(b"\x00x")
    assert got["ss"] == {"a", "b"} and got["ns"] == {Decimal("1"), Decimal("2.5")} and got["bs"] == {Binary(b"\x01")}
    assert got["m"] == {"k": [Decimal(1), "two", None, True]}
    assert got["none"] is None and got["flag"] is False


def test_resource_condition_and_update(ddb_resource, tbl):
    # Resource-level ConditionExpression objects and update_item with ALL_NEW.
    table = ddb_resource.Table(tbl)
    table.put_item(Item={"pk": "r2", "count": 1, "tags": {"x"}})
    r = table.update_item(Key={"pk": "r2"}, UpdateExpression="SET #c = #c + :one ADD tags :t",
                          ConditionExpression=Attr("count").eq(1) & Attr("tags").contains("x"),
                          ExpressionAttributeNames={"#c": "count"},
                          ExpressionAttributeValues={":one": 1, ":t": {"y"}}, ReturnValues="ALL_NEW")
    assert r["Attributes"] == {"pk": "r2", "count": Decimal(2), "tags": {"x", "y"}}
    with pytest.raises(ClientError) as ei:
        table.put_item(Item={"pk": "r2"}, ConditionExpression=Attr("count").lt(2))
    assert ei.value.response["Error"]["Code"] == "ConditionalCheckFailedException"
    assert table.get_item(Key={"pk": "r2"}, ConsistentRead=True)["Item"]["count"] == Decimal(2)


def test_set_validation(ddb, tbl):
    # Empty sets and duplicate set members are rejected; the stored item is unchanged.
    ddb.put_item(TableName=tbl, Item={"pk": {"S": "s"}, "ss": {"SS": ["a"]}})
    cases = [
        ({"SS": []}, "One or more parameter values were invalid: An string set  may not be empty"),
        ({"NS": []}, "One or more parameter values were invalid: An number set  may not be empty"),
        ({"BS": []}, "One or more parameter values were invalid: Binary sets should not be empty"),
        ({"SS": ["a", "a"]}, "One or more parameter values were invalid: Input collection [a, a] contains duplicates"),
        ({"NS": ["1", "1.0"]}, "Input collection contains duplicates"),
        ({"BS": [b"x", b"x"]}, "One or more parameter values were invalid: Input collection of type BS contains duplicates."),
    ]
    for value, message in cases:
        with pytest.raises(ClientError) as ei:
            ddb.put_item(TableName=tbl, Item={"pk": {"S": "s"}, "ss": value})
        assert err(ei) == ("ValidationException", message), value
    assert get(ddb, tbl, {"pk": {"S": "s"}}) == {"pk": {"S": "s"}, "ss": {"SS": ["a"]}}


# =========================================================================== conditions

def test_condition_success_and_failure(ddb, tbl):
    # ConditionExpression passes/fails as evaluated; a failure is ConditionalCheckFailedException, no write.
    ddb.put_item(TableName=tbl, Item={"pk": {"S": "c"}, "v": {"N": "5"}, "s": {"S": "abc"}})
    ddb.put_item(TableName=tbl, Item={"pk": {"S": "c"}, "v": {"N": "6"}, "s": {"S": "abc"}},
                 ConditionExpression="v = :five AND begins_with(s, :a) AND size(s) = :three",
                 ExpressionAttributeValues={":five": {"N": "5"}, ":a": {"S": "ab"}, ":three": {"N": "3"}})
    with pytest.raises(ClientError) as ei:
        ddb.put_item(TableName=tbl, Item={"pk": {"S": "c"}, "v": {"N": "7"}},
                     ConditionExpression="v = :five", ExpressionAttributeValues={":five": {"N": "5"}})
    assert err(ei) == ("ConditionalCheckFailedException", "The conditional request failed")
    assert "Item" not in ei.value.response
    assert get(ddb, tbl, {"pk": {"S": "c"}})["v"] == {"N": "6"}


def test_condition_failure_returns_all_old(ddb, tbl):
    # ReturnValuesOnConditionCheckFailure=ALL_OLD puts the current item in the error response.
    ddb.put_item(TableName=tbl, Item={"pk": {"S": "c"}, "v": {"N": "5"}})
    with pytest.raises(ClientError) as ei:
        ddb.update_item(TableName=tbl, Key={"pk": {"S": "c"}}, UpdateExpression="SET v = :x",
                        ConditionExpression="v > :x", ExpressionAttributeValues={":x": {"N": "10"}},
                        ReturnValuesOnConditionCheckFailure="ALL_OLD")
    assert ei.value.response["Error"]["Code"] == "ConditionalCheckFailedException"
    assert ei.value.response["Item"] == {"pk": {"S": "c"}, "v": {"N": "5"}}
    with pytest.raises(ClientError) as ei:
        ddb.delete_item(TableName=tbl, Key={"pk": {"S": "c"}}, ConditionExpression="attribute_not_exists(v)",
                        ReturnValuesOnConditionCheckFailure="ALL_OLD")
    assert ei.value.response["Item"] == {"pk": {"S": "c"}, "v": {"N": "5"}}
    assert get(ddb, tbl, {"pk": {"S": "c"}}) == {"pk": {"S": "c"}, "v": {"N": "5"}}


def test_condition_on_missing_item(ddb, tbl):
    # Conditions on a missing item see no attributes: attribute_not_exists passes, comparisons fail.
    ddb.put_item(TableName=tbl, Item={"pk": {"S": "new"}}, ConditionExpression="attribute_not_exists(pk)")
    with pytest.raises(ClientError) as ei:
        ddb.put_item(TableName=tbl, Item={"pk": {"S": "new"}}, ConditionExpression="attribute_not_exists(pk)")
    assert err(ei)[0] == "ConditionalCheckFailedException"
    with pytest.raises(ClientError) as ei:
        ddb.update_item(TableName=tbl, Key={"pk": {"S": "other"}}, UpdateExpression="SET a = :v",
                        ConditionExpression="a < :v", ExpressionAttributeValues={":v": {"N": "1"}})
    assert err(ei)[0] == "ConditionalCheckFailedException"
    assert get(ddb, tbl, {"pk": {"S": "other"}}) is None
    # "<>" against a missing attribute is true.
    ddb.update_item(TableName=tbl, Key={"pk": {"S": "other"}}, UpdateExpression="SET a = :v",
                    ConditionExpression="a <> :v", ExpressionAttributeValues={":v": {"N": "1"}})
    assert get(ddb, tbl, {"pk": {"S": "other"}}) == {"pk": {"S": "other"}, "a": {"N": "1"}}


@pytest.mark.parametrize("expr,values,expected", [
    ("attribute_exists(m.k)", {}, True),
    ("attribute_not_exists(m.zz)", {}, True),
    ("attribute_type(n, :t)", {":t": {"S": "N"}}, True),
    ("attribute_type(l, :t)", {":t": {"S": "M"}}, False),
    ("begins_with(s, :p)", {":p": {"S": "hel"}}, True),
    ("begins_with(s, :p)", {":p": {"S": "elo"}}, False),
    ("contains(s, :p)", {":p": {"S": "ll"}}, True),
    ("contains(ss, :p)", {":p": {"S": "b"}}, True),
    ("contains(l, :p)", {":p": {"N": "2"}}, True),
    ("contains(ns, :p)", {":p": {"N": "9"}}, False),
    ("size(s) = :n", {":n": {"N": "5"}}, True),
    ("size(l) > :n", {":n": {"N": "2"}}, True),
    ("size(m) = :n", {":n": {"N": "1"}}, True),
    ("n BETWEEN :a AND :b", {":a": {"N": "1"}, ":b": {"N": "10"}}, True),
    ("n IN (:a, :b)", {":a": {"N": "1"}, ":b": {"N": "5"}}, True),
    ("n IN (:a, :b)", {":a": {"N": "1"}, ":b": {"N": "2"}}, False),
    ("NOT (n < :a) AND (s >= :s OR n = :a)", {":a": {"N": "5"}, ":s": {"S": "z"}}, True),
    ("l[1] = :v AND m.k = :k", {":v": {"N": "2"}, ":k": {"S": "v"}}, True),
    ("n <> :s", {":s": {"S": "5"}}, True),
    ("n < :s", {":s": {"S": "6"}}, False),
])
def test_condition_functions(ddb, tbl, expr, values, expected):
    # Each condition function/operator evaluates as DynamoDB does against a known item.
    item = {"pk": {"S": "f"}, "n": {"N": "5"}, "s": {"S": "hello"}, "ss": {"SS": ["a", "b"]},
            "ns": {"NS": ["1", "2"]}, "l": {"L": [{"N": "1"}, {"N": "2"}, {"N": "3"}]}, "m": {"M": {"k": {"S": "v"}}}}
    ddb.put_item(TableName=tbl, Item=item)
    kw = {"ExpressionAttributeValues": values} if values else {}
    try:
        ddb.put_item(TableName=tbl, Item=item, ConditionExpression=expr, **kw)
        passed = True
    except ClientError as e:
        assert e.response["Error"]["Code"] == "ConditionalCheckFailedException", e.response["Error"]
        passed = False
    assert passed is expected


# =========================================================================== updates

def test_update_arithmetic_if_not_exists_list_append(ddb, tbl):
    # SET with +/-, if_not_exists and list_append (both orders) compute the documented values.
    ddb.put_item(TableName=tbl, Item={"pk": {"S": "u"}, "n": {"N": "10"}, "l": {"L": [{"N": "1"}]}})
    r = ddb.update_item(
        TableName=tbl, Key={"pk": {"S": "u"}},
        UpdateExpression="SET n = n + :d, m = n - :d, c = if_not_exists(c, :zero), n2 = if_not_exists(n, :zero), "
                         "l = list_append(l, :tail), l2 = list_append(:head, l)",
        ExpressionAttributeValues={":d": {"N": "2.5"}, ":zero": {"N": "0"}, ":tail": {"L": [{"S": "t"}]},
                                   ":head": {"L": [{"S": "h"}]}},
        ReturnValues="ALL_NEW")
    a = r["Attributes"]
    assert a["n"] == {"N": "12.5"}
    assert a["m"] == {"N": "7.5"}  # operands are read from the old item
    assert a["c"] == {"N": "0"}
    assert a["n2"] == {"N": "10"}
    assert a["l"] == {"L": [{"N": "1"}, {"S": "t"}]}
    assert a["l2"] == {"L": [{"S": "h"}, {"N": "1"}]}


def test_update_remove_including_list_elements(ddb, tbl):
    # REMOVE deletes attributes, map keys and list elements (indexes refer to the old list; list shifts).
    ddb.put_item(TableName=tbl, Item={"pk": {"S": "u"}, "a": {"S": "x"}, "m": {"M": {"k": {"S": "v"}, "j": {"N": "1"}}},
                                      "l": {"L": [{"N": "0"}, {"N": "1"}, {"N": "2"}, {"N": "3"}]}})
    ddb.update_item(TableName=tbl, Key={"pk": {"S": "u"}}, UpdateExpression="REMOVE a, m.k, l[0], l[2], l[9], nope")
    assert get(ddb, tbl, {"pk": {"S": "u"}}) == {"pk": {"S": "u"}, "m": {"M": {"j": {"N": "1"}}},
                                                 "l": {"L": [{"N": "1"}, {"N": "3"}]}}


def test_update_set_list_index_beyond_end_appends(ddb, tbl):
    # SET l[10] on a 2-element list appends at the end.
    ddb.put_item(TableName=tbl, Item={"pk": {"S": "u"}, "l": {"L": [{"N": "0"}, {"N": "1"}]}})
    ddb.update_item(TableName=tbl, Key={"pk": {"S": "u"}}, UpdateExpression="SET l[10] = :v, l[0] = :w",
                    ExpressionAttributeValues={":v": {"S": "end"}, ":w": {"S": "first"}})
    assert get(ddb, tbl, {"pk": {"S": "u"}})["l"] == {"L": [{"S": "first"}, {"N": "1"}, {"S": "end"}]}


def test_update_add_and_delete(ddb, tbl):
    # ADD increments numbers / unions sets (creating them when absent); DELETE subtracts from sets.
    ddb.put_item(TableName=tbl, Item={"pk": {"S": "u"}, "n": {"N": "1"}, "ss": {"SS": ["a", "b"]},
                                      "ss2": {"SS": ["a", "b"]}, "ns": {"NS": ["1"]}, "bs": {"BS": [b"\x01"]}})
    ddb.update_item(TableName=tbl, Key={"pk": {"S": "u"}},
                    UpdateExpression="ADD n :five, ss :c, ns :ns, bs :bs, newn :five, newss :c DELETE ss2 :ab",
                    ExpressionAttributeValues={":five": {"N": "5"}, ":c": {"SS": ["c"]}, ":ns": {"NS": ["2", "1"]},
                                               ":bs": {"BS": [b"\x02"]}, ":ab": {"SS": ["a"]}})
    item = get(ddb, tbl, {"pk": {"S": "u"}})
    assert item["n"] == {"N": "6"}
    assert sorted(item["ss"]["SS"]) == ["a", "b", "c"]
    assert item["ss2"] == {"SS": ["b"]}
    assert sorted(item["ns"]["NS"]) == ["1", "2"]
    assert sorted(item["bs"]["BS"]) == [b"\x01", b"\x02"]
    assert item["newn"] == {"N": "5"}
    assert item["newss"] == {"SS": ["c"]}
    # Deleting every element removes the attribute.
    ddb.update_item(TableName=tbl, Key={"pk": {"S": "u"}}, UpdateExpression="DELETE ss :all",
                    ExpressionAttributeValues={":all": {"SS": ["a", "b", "c", "zz"]}})
    assert "ss" not in get(ddb, tbl, {"pk": {"S": "u"}})


def test_update_creates_item(ddb, tbl):
    # UpdateItem on a missing key creates the item (with only the key if no update expression).
    r = ddb.update_item(TableName=tbl, Key={"pk": {"S": "fresh"}}, UpdateExpression="SET a = :v",
                        ExpressionAttributeValues={":v": {"S": "x"}}, ReturnValues="ALL_OLD")
    assert "Attributes" not in r
    r = ddb.update_item(TableName=tbl, Key={"pk": {"S": "bare"}}, ReturnValues="ALL_NEW")
    assert r["Attributes"] == {"pk": {"S": "bare"}}
    assert get(ddb, tbl, {"pk": {"S": "fresh"}}) == {"pk": {"S": "fresh"}, "a": {"S": "x"}}


def test_update_nested_map_paths(ddb, tbl):
    # SET on nested map/list paths changes only that element; a missing parent is an error.
    ddb.put_item(TableName=tbl, Item={"pk": {"S": "u"}, "m": {"M": {"a": {"M": {"b": {"N": "1"}}},
                                                                     "l": {"L": [{"M": {"x": {"N": "0"}}}]}}}})
    ddb.update_item(TableName=tbl, Key={"pk": {"S": "u"}}, UpdateExpression="SET m.a.b = m.a.b + :one, m.l[0].y = :s",
                    ExpressionAttributeValues={":one": {"N": "1"}, ":s": {"S": "new"}})
    assert get(ddb, tbl, {"pk": {"S": "u"}})["m"] == {"M": {"a": {"M": {"b": {"N": "2"}}},
                                                             "l": {"L": [{"M": {"x": {"N": "0"}, "y": {"S": "new"}}}]}}}
    with pytest.raises(ClientError) as ei:
        ddb.update_item(TableName=tbl, Key={"pk": {"S": "u"}}, UpdateExpression="SET nope.x = :s",
                        ExpressionAttributeValues={":s": {"S": "new"}})
    assert err(ei) == ("ValidationException", "The document path provided in the update expression is invalid for update")


@pytest.mark.parametrize("rv,expected", [
    ("NONE", None),
    ("ALL_OLD", {"pk": {"S": "r"}, "a": {"N": "1"}, "b": {"S": "keep"}, "c": {"S": "gone"}}),
    ("UPDATED_OLD", {"a": {"N": "1"}, "c": {"S": "gone"}}),
    ("ALL_NEW", {"pk": {"S": "r"}, "a": {"N": "2"}, "b": {"S": "keep"}, "d": {"S": "new"}}),
    ("UPDATED_NEW", {"a": {"N": "2"}, "d": {"S": "new"}}),
])
def test_update_return_values(ddb, tbl, rv, expected):
    # UpdateItem ReturnValues returns exactly the documented attribute subsets.
    ddb.put_item(TableName=tbl, Item={"pk": {"S": "r"}, "a": {"N": "1"}, "b": {"S": "keep"}, "c": {"S": "gone"}})
    r = ddb.update_item(TableName=tbl, Key={"pk": {"S": "r"}}, UpdateExpression="SET a = a + :one, d = :d REMOVE c",
                        ExpressionAttributeValues={":one": {"N": "1"}, ":d": {"S": "new"}}, ReturnValues=rv)
    assert r.get("Attributes") == expected


def test_put_delete_return_values(ddb, tbl):
    # PutItem/DeleteItem support NONE and ALL_OLD only; ALL_OLD is absent when there was no item.
    r = ddb.put_item(TableName=tbl, Item={"pk": {"S": "r"}, "v": {"N": "1"}}, ReturnValues="ALL_OLD")
    assert "Attributes" not in r
    r = ddb.put_item(TableName=tbl, Item={"pk": {"S": "r"}, "v": {"N": "2"}}, ReturnValues="ALL_OLD")
    assert r["Attributes"] == {"pk": {"S": "r"}, "v": {"N": "1"}}
    r = ddb.put_item(TableName=tbl, Item={"pk": {"S": "r"}, "v": {"N": "3"}}, ReturnValues="NONE")
    assert "Attributes" not in r
    for bad in ("ALL_NEW", "UPDATED_OLD", "UPDATED_NEW"):
        with pytest.raises(ClientError) as ei:
            ddb.put_item(TableName=tbl, Item={"pk": {"S": "r"}}, ReturnValues=bad)
        assert err(ei) == ("ValidationException", "Return values set to invalid value")
        with pytest.raises(ClientError) as ei:
            ddb.delete_item(TableName=tbl, Key={"pk": {"S": "r"}}, ReturnValues=bad)
        assert err(ei) == ("ValidationException", "Return values set to invalid value")
    r = ddb.delete_item(TableName=tbl, Key={"pk": {"S": "r"}}, ReturnValues="ALL_OLD")
    assert r["Attributes"] == {"pk": {"S": "r"}, "v": {"N": "3"}}
    r = ddb.delete_item(TableName=tbl, Key={"pk": {"S": "r"}}, ReturnValues="ALL_OLD")
    assert "Attributes" not in r
    assert get(ddb, tbl, {"pk": {"S": "r"}}) is None


def test_delete_item_with_condition(ddb, tbl2):
    # DeleteItem with a composite key honours its ConditionExpression.
    key = {"pk": {"S": "d"}, "sk": {"N": "1"}}
    ddb.put_item(TableName=tbl2, Item={**key, "v": {"S": "x"}})
    with pytest.raises(ClientError) as ei:
        ddb.delete_item(TableName=tbl2, Key=key, ConditionExpression="v = :y", ExpressionAttributeValues={":y": {"S": "y"}})
    assert err(ei)[0] == "ConditionalCheckFailedException"
    assert get(ddb, tbl2, key) is not None
    ddb.delete_item(TableName=tbl2, Key=key, ConditionExpression="v = :x", ExpressionAttributeValues={":x": {"S": "x"}})
    assert get(ddb, tbl2, key) is None


# =========================================================================== projections

def test_projection_nested_paths_and_indexes(ddb, tbl):
    # ProjectionExpression keeps only the named paths; list indexes compact into a new list.
    ddb.put_item(TableName=tbl, Item={
        "pk": {"S": "p"}, "a": {"N": "5"}, "b": {"S": "no"},
        "l": {"L": [{"N": "0"}, {"M": {"x": {"S": "y"}, "z": {"N": "0"}}}, {"N": "2"}]},
        "m": {"M": {"k": {"S": "v"}, "n": {"M": {"deep": {"S": "d"}, "o": {"N": "1"}}}}},
        "#weird": {"S": "hash-named"}})
    item = get(ddb, tbl, {"pk": {"S": "p"}}, ProjectionExpression="a, l[1].x, m.n.deep, l[7], zzz")
    assert item == {"a": {"N": "5"}, "l": {"L": [{"M": {"x": {"S": "y"}}}]},
                    "m": {"M": {"n": {"M": {"deep": {"S": "d"}}}}}}
    item = get(ddb, tbl, {"pk": {"S": "p"}}, ProjectionExpression="l[2], l[0]")
    assert item == {"l": {"L": [{"N": "0"}, {"N": "2"}]}}
    item = get(ddb, tbl, {"pk": {"S": "p"}}, ProjectionExpression="#w, #m.#n.o",
               ExpressionAttributeNames={"#w": "#weird", "#m": "m", "#n": "n"})
    assert item == {"#weird": {"S": "hash-named"}, "m": {"M": {"n": {"M": {"o": {"N": "1"}}}}}}
    assert get(ddb, tbl, {"pk": {"S": "p"}}, ProjectionExpression="nothing") == {}


def test_get_missing_item(ddb, tbl):
    # GetItem of a missing key returns no Item member at all.
    r = ddb.get_item(TableName=tbl, Key={"pk": {"S": "absent"}})
    assert "Item" not in r


def test_expression_attribute_names_for_reserved_words(ddb, tbl):
    # Reserved words must go through #names; dots inside a #name are part of the attribute name.
    ddb.put_item(TableName=tbl, Item={"pk": {"S": "n"}, "status": {"S": "on"}, "a.b": {"S": "dotted"},
                                      "a": {"M": {"b": {"S": "nested"}}}})
    item = get(ddb, tbl, {"pk": {"S": "n"}}, ProjectionExpression="#s, #ab, a.b",
               ExpressionAttributeNames={"#s": "status", "#ab": "a.b"})
    assert item == {"status": {"S": "on"}, "a.b": {"S": "dotted"}, "a": {"M": {"b": {"S": "nested"}}}}
    with pytest.raises(ClientError) as ei:
        get(ddb, tbl, {"pk": {"S": "n"}}, ProjectionExpression="status")
    assert err(ei) == ("ValidationException",
                       "Invalid ProjectionExpression: Attribute name is a reserved keyword; reserved keyword: status")


# =========================================================================== legacy parameters

def test_legacy_expected_and_conditional_operator(ddb, tbl):
    # Expected (Value/Exists and ComparisonOperator forms) with ConditionalOperator AND/OR.
    ddb.put_item(TableName=tbl, Item={"pk": {"S": "g"}, "a": {"N": "5"}})
    ddb.put_item(TableName=tbl, Item={"pk": {"S": "g"}, "a": {"N": "6"}}, Expected={"a": {"Value": {"N": "5"}}})
    with pytest.raises(ClientError) as ei:
        ddb.put_item(TableName=tbl, Item={"pk": {"S": "g"}, "a": {"N": "7"}}, Expected={"a": {"Value": {"N": "5"}}})
    assert err(ei)[0] == "ConditionalCheckFailedException"
    ddb.put_item(TableName=tbl, Item={"pk": {"S": "g"}, "a": {"N": "7"}},
                 Expected={"a": {"Exists": True, "Value": {"N": "6"}}, "zz": {"Exists": False}})
    ddb.put_item(TableName=tbl, Item={"pk": {"S": "g"}, "a": {"N": "8"}},
                 Expected={"a": {"ComparisonOperator": "LT", "AttributeValueList": [{"N": "0"}]},
                           "zz": {"ComparisonOperator": "NULL"}}, ConditionalOperator="OR")
    with pytest.raises(ClientError) as ei:
        ddb.put_item(TableName=tbl, Item={"pk": {"S": "g"}, "a": {"N": "9"}},
                     Expected={"a": {"ComparisonOperator": "GT", "AttributeValueList": [{"N": "0"}]},
                               "zz": {"ComparisonOperator": "NOT_NULL"}}, ConditionalOperator="AND")
    assert err(ei)[0] == "ConditionalCheckFailedException"
    assert get(ddb, tbl, {"pk": {"S": "g"}})["a"] == {"N": "8"}


def test_legacy_attribute_updates(ddb, tbl):
    # AttributeUpdates PUT/ADD/DELETE actions, with Expected, and UPDATED_OLD return values.
    ddb.put_item(TableName=tbl, Item={"pk": {"S": "g"}, "a": {"N": "5"}, "s": {"S": "x"}, "ss": {"SS": ["a", "b"]}})
    r = ddb.update_item(TableName=tbl, Key={"pk": {"S": "g"}}, AttributeUpdates={
        "a": {"Action": "ADD", "Value": {"N": "2"}}, "s": {"Action": "DELETE"},
        "ss": {"Action": "DELETE", "Value": {"SS": ["a"]}}, "n": {"Action": "PUT", "Value": {"S": "new"}},
        "l": {"Action": "ADD", "Value": {"L": [{"S": "x"}]}}},
        Expected={"a": {"Value": {"N": "5"}}}, ReturnValues="UPDATED_OLD")
    assert r["Attributes"] == {"a": {"N": "5"}, "s": {"S": "x"}, "ss": {"SS": ["a", "b"]}}
    assert get(ddb, tbl, {"pk": {"S": "g"}}) == {"pk": {"S": "g"}, "a": {"N": "7"}, "ss": {"SS": ["b"]},
                                                 "n": {"S": "new"}, "l": {"L": [{"S": "x"}]}}


def test_legacy_attributes_to_get(ddb, tbl):
    # AttributesToGet projects top-level attributes; mixing it with ProjectionExpression is an error.
    ddb.put_item(TableName=tbl, Item={"pk": {"S": "g"}, "a": {"N": "5"}, "b": {"S": "x"}})
    assert get(ddb, tbl, {"pk": {"S": "g"}}, AttributesToGet=["a", "nope"]) == {"a": {"N": "5"}}
    with pytest.raises(ClientError) as ei:
        get(ddb, tbl, {"pk": {"S": "g"}}, AttributesToGet=["a"], ProjectionExpression="b")
    assert err(ei) == ("ValidationException",
                       "Can not use both expression and non-expression parameters in the same request: "
                       "Non-expression parameters: {AttributesToGet} Expression parameters: {ProjectionExpression}")


def test_legacy_mixed_with_expressions_rejected(ddb, tbl):
    # Expected + ConditionExpression and AttributeUpdates + UpdateExpression are rejected; item unchanged.
    ddb.put_item(TableName=tbl, Item={"pk": {"S": "g"}, "a": {"N": "5"}})
    with pytest.raises(ClientError) as ei:
        ddb.put_item(TableName=tbl, Item={"pk": {"S": "g"}}, Expected={"a": {"Value": {"N": "5"}}},
                     ConditionExpression="a = :v", ExpressionAttributeValues={":v": {"N": "5"}})
    assert err(ei) == ("ValidationException",
                       "Can not use both expression and non-expression parameters in the same request: "
                       "Non-expression parameters: {Expected} Expression parameters: {ConditionExpression}")
    with pytest.raises(ClientError) as ei:
        ddb.update_item(TableName=tbl, Key={"pk": {"S": "g"}}, AttributeUpdates={"a": {"Action": "DELETE"}},
                        UpdateExpression="REMOVE a")
    assert err(ei) == ("ValidationException",
                       "Can not use both expression and non-expression parameters in the same request: "
                       "Non-expression parameters: {AttributeUpdates} Expression parameters: {UpdateExpression}")
    with pytest.raises(ClientError) as ei:
        ddb.put_item(TableName=tbl, Item={"pk": {"S": "g"}}, ConditionalOperator="AND")
    assert err(ei) == ("ValidationException", "ConditionalOperator cannot be used without Filter or Expected")
    assert get(ddb, tbl, {"pk": {"S": "g"}}) == {"pk": {"S": "g"}, "a": {"N": "5"}}


# =========================================================================== errors (item unchanged)

ORIGINAL = {"pk": {"S": "e"}, "v": {"N": "1"}, "s": {"S": "x"}}


@pytest.fixture
def seeded(ddb, tbl):
    ddb.put_item(TableName=tbl, Item=ORIGINAL)
    yield tbl
    assert get(ddb, tbl, {"pk": {"S": "e"}}) == ORIGINAL, "a failed request changed the stored item"


def test_error_missing_key(ddb, seeded):
    # An item without its key attribute, or a Key without it, is a ValidationException.
    with pytest.raises(ClientError) as ei:
        ddb.put_item(TableName=seeded, Item={"v": {"N": "2"}})
    assert err(ei) == ("ValidationException", "One of the required keys was not given a value")
    with pytest.raises(ClientError) as ei:
        ddb.get_item(TableName=seeded, Key={})
    assert err(ei) == ("ValidationException", "The number of conditions on the keys is invalid")
    with pytest.raises(ClientError) as ei:
        ddb.update_item(TableName=seeded, Key={"pk": {"S": "e"}, "extra": {"S": "x"}}, UpdateExpression="SET v = :v",
                        ExpressionAttributeValues={":v": {"N": "9"}})
    assert err(ei) == ("ValidationException", "The number of conditions on the keys is invalid")


def test_error_wrong_key_type(ddb, seeded):
    # A key attribute of the wrong type is "Type mismatch for key".
    for call in (lambda: ddb.put_item(TableName=seeded, Item={"pk": {"N": "1"}}),
                 lambda: ddb.get_item(TableName=seeded, Key={"pk": {"B": b"e"}}),
                 lambda: ddb.delete_item(TableName=seeded, Key={"pk": {"N": "1"}})):
        with pytest.raises(ClientError) as ei:
            call()
        assert err(ei) == ("ValidationException", "One or more parameter values were invalid: Type mismatch for key")


def test_error_empty_string_key(ddb, seeded):
    # Empty strings are allowed in non-key attributes but not in keys.
    with pytest.raises(ClientError) as ei:
        ddb.put_item(TableName=seeded, Item={"pk": {"S": ""}})
    assert err(ei) == ("ValidationException", "One or more parameter values are not valid. The AttributeValue for "
                                              "a key attribute cannot contain an empty string value. Key: pk")


def test_error_update_key_attribute(ddb, seeded):
    # Key attributes cannot be SET or REMOVEd by UpdateItem.
    with pytest.raises(ClientError) as ei:
        ddb.update_item(TableName=seeded, Key={"pk": {"S": "e"}}, UpdateExpression="SET pk = :v",
                        ExpressionAttributeValues={":v": {"S": "other"}})
    assert err(ei) == ("ValidationException", "One or more parameter values were invalid: Cannot update attribute pk. "
                                              "This attribute is part of the key")


def test_error_oversized_item(ddb, seeded):
    # Items over 400 KB (names + values) are rejected; exactly 400 KB is accepted.
    with pytest.raises(ClientError) as ei:
        ddb.put_item(TableName=seeded, Item={"pk": {"S": "e"}, "d": {"S": "x" * (400 * 1024)}})
    assert err(ei) == ("ValidationException", "Item size has exceeded the maximum allowed size")
    with pytest.raises(ClientError) as ei:
        ddb.update_item(TableName=seeded, Key={"pk": {"S": "e"}}, UpdateExpression="SET d = :d",
                        ExpressionAttributeValues={":d": {"S": "x" * (400 * 1024)}})
    assert err(ei) == ("ValidationException", "Item size to update has exceeded the maximum allowed size")
    # pk(2) + "big"(1 byte value) ... : 2+1 (pk) + 1+N (d) = 400 KB exactly
    ddb.put_item(TableName=seeded, Item={"pk": {"S": "big"}, "d": {"S": "x" * (400 * 1024 - 6)}})
    assert len(get(ddb, seeded, {"pk": {"S": "big"}})["d"]["S"]) == 400 * 1024 - 6


def test_error_key_too_long(ddb, seeded):
    # Hash keys up to 2048 bytes and range keys up to 1024 bytes; one byte more is rejected.
    ddb.put_item(TableName=seeded, Item={"pk": {"S": "k" * 2048}})
    with pytest.raises(ClientError) as ei:
        ddb.put_item(TableName=seeded, Item={"pk": {"S": "k" * 2049}})
    assert err(ei) == ("ValidationException", "Hash primary key values must be under 2048 bytes, and range primary "
                                              "key values must be under 1024 bytes")


def test_error_invalid_table_name_on_item_ops(ddb):
    # Item operations validate the table name before looking it up.
    with pytest.raises(ClientError) as ei:
        ddb.get_item(TableName="no way!", Key={"pk": {"S": "e"}})
    assert err(ei)[0] == "ValidationException"
    assert err(ei)[1].startswith("Invalid table/index name.")


@pytest.mark.parametrize("kw,message", [
    (dict(ConditionExpression="v = = :v", ExpressionAttributeValues={":v": {"N": "1"}}),
     'Invalid ConditionExpression: Syntax error; token: "=", near: "= = :v"'),
    (dict(ConditionExpression="v = :v"),
     "Invalid ConditionExpression: An expression attribute value used in expression is not defined; attribute value: :v"),
    (dict(ConditionExpression="#v = :v", ExpressionAttributeValues={":v": {"N": "1"}}),
     "Invalid ConditionExpression: An expression attribute name used in the document path is not defined; attribute name: #v"),
    (dict(ConditionExpression="v = :v", ExpressionAttributeValues={":v": {"N": "1"}, ":w": {"N": "2"}}),
     "Value provided in ExpressionAttributeValues unused in expressions: keys: {:w}"),
    (dict(ConditionExpression="v = :v", ExpressionAttributeValues={":v": {"N": "1"}},
          ExpressionAttributeNames={"#n": "v"}),
     "Value provided in ExpressionAttributeNames unused in expressions: keys: {#n}"),
    (dict(ConditionExpression="attribute_exists(status)"),
     "Invalid ConditionExpression: Attribute name is a reserved keyword; reserved keyword: status"),
    (dict(ConditionExpression="nofunc(v)"),
     "Invalid ConditionExpression: Invalid function name; function: nofunc"),
    (dict(ConditionExpression=""), "Invalid ConditionExpression: The expression can not be empty;"),
])
def test_error_malformed_condition(ddb, seeded, kw, message):
    # Malformed condition expressions and bad placeholders are ValidationExceptions with exact messages.
    with pytest.raises(ClientError) as ei:
        ddb.put_item(TableName=seeded, Item={"pk": {"S": "e"}}, **kw)
    assert err(ei) == ("ValidationException", message)


@pytest.mark.parametrize("expr,values,message", [
    ("SET v = :v, v = :v", {":v": {"N": "1"}},
     "Invalid UpdateExpression: Two document paths overlap with each other; must remove or rewrite one of these "
     "paths; path one: [v], path two: [v]"),
    ("SET v = :v REMOVE v", {":v": {"N": "1"}},
     "Invalid UpdateExpression: Two document paths overlap with each other; must remove or rewrite one of these "
     "paths; path one: [v], path two: [v]"),
    ("SET v = :v SET s = :v", {":v": {"N": "1"}},
     'Invalid UpdateExpression: The "SET" section can only be used once in an update expression;'),
    ("SET v = s + :v", {":v": {"N": "1"}}, "An operand in the update expression has an incorrect data type"),
    ("SET v = nope + :v", {":v": {"N": "1"}},
     "The provided expression refers to an attribute that does not exist in the item"),
    ("ADD s :v", {":v": {"N": "1"}}, "An operand in the update expression has an incorrect data type"),
    ("DELETE v :v", {":v": {"N": "1"}},
     "Invalid UpdateExpression: Incorrect operand type for operator or function; operator: DELETE, operand type: "
     "NUMBER, typeSet: ALLOWED_FOR_DELETE_OPERAND"),
    ("SET v = size(s)", None, "Invalid UpdateExpression: The function is not allowed in an update expression; function: size"),
    ("SET", None, 'Invalid UpdateExpression: Syntax error; token: "<EOF>", near: "SET"'),
])
def test_error_bad_update_expression(ddb, seeded, expr, values, message):
    # Invalid update expressions (overlaps, repeated sections, wrong operand types) are rejected.
    kw = {"ExpressionAttributeValues": values} if values else {}
    with pytest.raises(ClientError) as ei:
        ddb.update_item(TableName=seeded, Key={"pk": {"S": "e"}}, UpdateExpression=expr, **kw)
    assert err(ei) == ("ValidationException", message)


def test_error_attribute_value_shape(ddb, seeded, target):
    # Attribute values with no type or with two types are rejected (sent raw, bypassing boto3 validation).
    import difflib_ddb
    for value, message in [
        ({}, "Supplied AttributeValue is empty, must contain exactly one of the supported datatypes"),
        ({"S": "a", "N": "1"}, "Supplied AttributeValue has more than one datatypes set, must contain exactly one "
                               "of the supported datatypes"),
        ({"NULL": False}, "One or more parameter values were invalid: Null attribute value types must have the value "
                          "of true"),
    ]:
        r = difflib_ddb.send(target.endpoint, "PutItem", {"TableName": seeded, "Item": {"pk": {"S": "e"}, "x": value}})
        assert r.status == 400
        assert r.json["__type"] == "com.amazon.coral.validate#ValidationException"
        assert {k.lower(): v for k, v in r.json.items()}["message"] == message


def test_nesting_depth_limit(ddb, seeded):
    # Documents nest up to 32 levels (31 containers inside the attribute value here); deeper is rejected.
    def nest(depth):
        v = {"S": "leaf"}
        for _ in range(depth):
            v = {"M": {"a": v}}
        return v
    ddb.put_item(TableName=seeded, Item={"pk": {"S": "deep"}, "d": nest(31)})
    with pytest.raises(ClientError) as ei:
        ddb.put_item(TableName=seeded, Item={"pk": {"S": "deep"}, "d": nest(32)})
    assert err(ei) == ("ValidationException", "Nesting Levels have exceeded supported limits: Attributes in the item "
                                              "have nested levels beyond supported limit")


def test_separate_client_sees_writes(target, tbl):
    # A second, independent client connection reads what the first wrote (strongly consistent read).
    c2 = make_client(target.endpoint)
    c1 = make_client(target.endpoint)
    c1.put_item(TableName=tbl, Item={"pk": {"S": "x"}, "v": {"S": "1"}})
    assert c2.get_item(TableName=tbl, Key={"pk": {"S": "x"}}, ConsistentRead=True)["Item"]["v"] == {"S": "1"}


def test_update_sets_every_type(ddb, tbl):
    # UpdateItem SET stores values of every type exactly as PutItem would.
    values = {k: v for k, v in ALL_TYPES.items() if k != "pk"}
    names = {f"#a{i}": k for i, k in enumerate(values)}
    vals = {f":v{i}": v for i, v in enumerate(values.values())}
    expr = "SET " + ", ".join(f"#a{i} = :v{i}" for i in range(len(values)))
    r = ddb.update_item(TableName=tbl, Key={"pk": {"S": "k1"}}, UpdateExpression=expr, ExpressionAttributeNames=names,
                        ExpressionAttributeValues=vals, ReturnValues="UPDATED_NEW")
    assert norm_item(r["Attributes"]) == norm_item(values)
    assert norm_item(get(ddb, tbl, {"pk": {"S": "k1"}})) == norm_item(ALL_TYPES)


def test_range_key_size_limit(ddb, table_name):
    # Range keys may be 1024 bytes (binary here); 1025 is rejected and nothing is stored.
    create(ddb, table_name, key=dict(
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "sk", "AttributeType": "B"}]))
    ddb.put_item(TableName=table_name, Item={"pk": {"S": "p"}, "sk": {"B": b"\x01" * 1024}})
    with pytest.raises(ClientError) as ei:
        ddb.put_item(TableName=table_name, Item={"pk": {"S": "q"}, "sk": {"B": b"\x01" * 1025}})
    assert err(ei) == ("ValidationException", "Hash primary key values must be under 2048 bytes, and range primary "
                                              "key values must be under 1024 bytes")
    assert get(ddb, table_name, {"pk": {"S": "p"}, "sk": {"B": b"\x01" * 1024}}) is not None
    r = ddb.get_item(TableName=table_name, Key={"pk": {"S": "q"}, "sk": {"B": b"\x01" * 1024}}, ConsistentRead=True)
    assert "Item" not in r
