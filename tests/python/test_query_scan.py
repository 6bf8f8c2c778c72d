"""boto3 tests of Query, Scan, batches, secondary indexes, TTL, tags, DescribeLimits and DescribeEndpoints.

Every test runs against each backend (the `target` fixture: onggi and DynamoDB Local), so the
expectations are proven against DynamoDB Local. Where DynamoDB Local departs from real DynamoDB (or
lacks an operation: tagging, DescribeEndpoints), the test asserts what DynamoDB documents and says
so in a comment, with a `target.is_ddblocal` guard.
"""

from __future__ import annotations

import time
from decimal import Decimal

import boto3
import pytest
from boto3.dynamodb.conditions import Attr, Key
from boto3.dynamodb.types import Binary
from botocore.config import Config
from botocore.exceptions import ClientError

from conftest import ACCESS_KEY, REGION, SECRET_KEY

PPR = dict(BillingMode="PAY_PER_REQUEST")
MB = 1024 * 1024


# --------------------------------------------------------------------------- helpers

def key_schema(hash_name="pk", hash_type="S", range_name=None, range_type=None):
    ks = [{"AttributeName": hash_name, "KeyType": "HASH"}]
    ad = [{"AttributeName": hash_name, "AttributeType": hash_type}]
    if range_name:
        ks.append({"AttributeName": range_name, "KeyType": "RANGE"})
        ad.append({"AttributeName": range_name, "AttributeType": range_type})
    return dict(KeySchema=ks, AttributeDefinitions=ad)


def create(ddb, name, key=None, **kw):
    """Create a table (hash key pk:S, on-demand, unless told otherwise) and wait until ACTIVE."""
    args = dict(TableName=name, **(key or key_schema()))
    if "ProvisionedThroughput" not in kw and "BillingMode" not in kw:
        args.update(PPR)
    for k, v in kw.items():
        if k == "AttributeDefinitions":
            args["AttributeDefinitions"] = args["AttributeDefinitions"] + v
        else:
            args[k] = v
    ddb.create_table(**args)
    return wait_active(ddb, name)


def wait_active(ddb, name, timeout=30.0):
    """Poll DescribeTable until the table and all its GSIs are ACTIVE (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        t = ddb.describe_table(TableName=name)["Table"]
        if t["TableStatus"] == "ACTIVE" and all(
                g.get("IndexStatus") == "ACTIVE" for g in t.get("GlobalSecondaryIndexes", [])):
            return t
        assert time.monotonic() < deadline, f"table {name} not ACTIVE after {timeout}s: {t}"
        time.sleep(0.1)


def err(excinfo) -> tuple[str, str]:
    e = excinfo.value.response["Error"]
    return e["Code"], e["Message"]


def raw_client(target):
    """A client without boto3's parameter validation, so the server's own checks are reached."""
    return boto3.client("dynamodb", endpoint_url=target.endpoint, region_name=REGION,
                        aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
                        config=Config(parameter_validation=False, retries={"max_attempts": 1},
                                      connect_timeout=5, read_timeout=30))


def query_all(table, **kw):
    """Follow LastEvaluatedKey to the end; returns (items, pages). Bounded to 1,000 pages."""
    items, pages = [], []
    for _ in range(1000):
        r = table.query(**kw)
        pages.append(r)
        items += r.get("Items", [])
        if "LastEvaluatedKey" not in r:
            return items, pages
        kw["ExclusiveStartKey"] = r["LastEvaluatedKey"]
    raise AssertionError("query did not terminate")


def scan_all(table, **kw):
    items, pages = [], []
    for _ in range(1000):
        r = table.scan(**kw)
        pages.append(r)
        items += r.get("Items", [])
        if "LastEvaluatedKey" not in r:
            return items, pages
        kw["ExclusiveStartKey"] = r["LastEvaluatedKey"]
    raise AssertionError("scan did not terminate")


def item_size(item: dict) -> int:
    """DynamoDB item size for the string/number/binary attributes these tests use (approximate for N)."""
    total = 0
    for k, v in item.items():
        total += len(k.encode())
        if isinstance(v, str):
            total += len(v.encode())
        elif isinstance(v, (bytes, Binary)):
            total += len(bytes(v) if isinstance(v, bytes) else v.value)
        else:
            total += 21  # numbers: at most 21 bytes
    return total


@pytest.fixture
def nums(ddb_resource, ddb, table_name):
    """Table pk:S + sk:N holding partition 'p' with sk 0..19 (attrs: n = sk, odd flag, tag on every 3rd)
    and partition 'q' with sk 0..4."""
    create(ddb, table_name, key=key_schema("pk", "S", "sk", "N"))
    t = ddb_resource.Table(table_name)
    for i in range(20):
        item = {"pk": "p", "sk": i, "n": i, "odd": i % 2 == 1}
        if i % 3 == 0:
            item["tag"] = f"t{i}"
        t.put_item(Item=item)
    for i in range(5):
        t.put_item(Item={"pk": "q", "sk": i, "n": 100 + i})
    return t


def sks(items):
    return [int(i["sk"]) for i in items]


# =========================================================================== Query

def test_query_every_sort_key_operator(nums):
    # Key().eq/lt/lte/gt/gte/between on a number sort key select exactly the matching range, in order.
    t = nums
    p = Key("pk").eq("p")
    assert sks(t.query(KeyConditionExpression=p)["Items"]) == list(range(20))
    assert sks(t.query(KeyConditionExpression=p & Key("sk").eq(7))["Items"]) == [7]
    assert sks(t.query(KeyConditionExpression=p & Key("sk").lt(3))["Items"]) == [0, 1, 2]
    assert sks(t.query(KeyConditionExpression=p & Key("sk").lte(3))["Items"]) == [0, 1, 2, 3]
    assert sks(t.query(KeyConditionExpression=p & Key("sk").gt(17))["Items"]) == [18, 19]
    assert sks(t.query(KeyConditionExpression=p & Key("sk").gte(17))["Items"]) == [17, 18, 19]
    assert sks(t.query(KeyConditionExpression=p & Key("sk").between(5, 8))["Items"]) == [5, 6, 7, 8]
    assert sks(t.query(KeyConditionExpression=p & Key("sk").between(8, 8))["Items"]) == [8]
    assert t.query(KeyConditionExpression=p & Key("sk").eq(Decimal("7.5")))["Items"] == []
    assert sks(t.query(KeyConditionExpression=Key("pk").eq("q"))["Items"]) == [0, 1, 2, 3, 4]
    assert t.query(KeyConditionExpression=Key("pk").eq("nobody"))["Items"] == []


def test_query_begins_with_and_string_order(ddb, ddb_resource, table_name):
    # begins_with and BETWEEN on a string sort key; strings sort by UTF-8 bytes (U+FFFF before U+10000,
    # upper case before lower case, ASCII before accented letters).
    create(ddb, table_name, key=key_schema("pk", "S", "sk", "S"))
    t = ddb_resource.Table(table_name)
    values = ["a", "ab", "abc", "abd", "b", "B", "a b", "é", "\uffff", "\U00010000", "z", "0"]
    for v in values:
        t.put_item(Item={"pk": "p", "sk": v})
    got = [i["sk"] for i in t.query(KeyConditionExpression=Key("pk").eq("p"))["Items"]]
    assert got == sorted(values, key=lambda s: s.encode("utf-8"))
    assert got.index("\uffff") < got.index("\U00010000")
    got = [i["sk"] for i in t.query(KeyConditionExpression=Key("pk").eq("p") & Key("sk").begins_with("ab"))["Items"]]
    assert got == ["ab", "abc", "abd"]
    got = [i["sk"] for i in t.query(KeyConditionExpression=Key("pk").eq("p") & Key("sk").between("a", "abc"))["Items"]]
    assert got == ["a", "a b", "ab", "abc"]


def test_query_scan_index_forward_and_limit_paging(nums):
    # Limit pages through the partition with ExclusiveStartKey, forwards and backwards, without gaps or
    # duplicates; LastEvaluatedKey is the key of the last item returned.
    t = nums
    for forward in (True, False):
        items, pages = query_all(t, KeyConditionExpression=Key("pk").eq("p"), Limit=3, ScanIndexForward=forward)
        assert sks(items) == (list(range(20)) if forward else list(range(19, -1, -1)))
        for page in pages[:-1]:
            assert page["Count"] == 3 == len(page["Items"])
            assert page["LastEvaluatedKey"] == {"pk": "p", "sk": page["Items"][-1]["sk"]}
        assert 1 <= len(pages) - 20 // 3 <= 2  # 7 pages (the last with 2 items), maybe an empty 8th
    # A page ending exactly at the last item may still carry LastEvaluatedKey; the next page is then empty.
    r = t.query(KeyConditionExpression=Key("pk").eq("q"), Limit=5)
    assert r["Count"] == 5
    if "LastEvaluatedKey" in r:
        r2 = t.query(KeyConditionExpression=Key("pk").eq("q"), Limit=5, ExclusiveStartKey=r["LastEvaluatedKey"])
        assert r2["Items"] == [] and "LastEvaluatedKey" not in r2
    # A start key that is not an existing item is fine: the query resumes after it.
    r = t.query(KeyConditionExpression=Key("pk").eq("p"), Limit=2, ExclusiveStartKey={"pk": "p", "sk": Decimal("4.5")})
    assert sks(r["Items"]) == [5, 6]
    r = t.query(KeyConditionExpression=Key("pk").eq("p"), Limit=2, ScanIndexForward=False,
                ExclusiveStartKey={"pk": "p", "sk": Decimal("4.5")})
    assert sks(r["Items"]) == [4, 3]


def test_query_filter_projection_select(nums):
    # FilterExpression (Attr) drops items after the read: Count counts matches, ScannedCount what was read;
    # Limit bounds the items read, not the matches.
    t = nums
    p = Key("pk").eq("p")
    r = t.query(KeyConditionExpression=p, FilterExpression=Attr("odd").eq(True))
    assert sks(r["Items"]) == list(range(1, 20, 2))
    assert (r["Count"], r["ScannedCount"]) == (10, 20)
    r = t.query(KeyConditionExpression=p, FilterExpression=Attr("tag").exists() & Attr("n").gt(5))
    assert sks(r["Items"]) == [6, 9, 12, 15, 18]
    r = t.query(KeyConditionExpression=p, FilterExpression=Attr("tag").begins_with("t1"))
    assert sks(r["Items"]) == [12, 15, 18]
    r = t.query(KeyConditionExpression=p, FilterExpression=Attr("n").is_in([3, 4, 5]) | Attr("tag").eq("t0"))
    assert sks(r["Items"]) == [0, 3, 4, 5]
    r = t.query(KeyConditionExpression=p, FilterExpression=Attr("tag").exists(), Limit=4)
    assert sks(r["Items"]) == [0, 3]
    assert (r["Count"], r["ScannedCount"]) == (2, 4)
    assert r["LastEvaluatedKey"] == {"pk": "p", "sk": 3}
    r = t.query(KeyConditionExpression=p, FilterExpression=Attr("n").gt(100))
    assert (r["Items"], r["Count"], r["ScannedCount"]) == ([], 0, 20)
    # ProjectionExpression (with a #name for the key attribute) returns only the named attributes.
    r = t.query(KeyConditionExpression=p & Key("sk").lt(4), ProjectionExpression="#s, tag",
                ExpressionAttributeNames={"#s": "sk"})
    assert r["Items"] == [{"sk": 0, "tag": "t0"}, {"sk": 1}, {"sk": 2}, {"sk": 3, "tag": "t3"}]
    # Select COUNT returns counts and no items.
    r = t.query(KeyConditionExpression=p, Select="COUNT")
    assert "Items" not in r and (r["Count"], r["ScannedCount"]) == (20, 20)
    r = t.query(KeyConditionExpression=p, Select="COUNT", FilterExpression=Attr("odd").eq(False))
    assert "Items" not in r and (r["Count"], r["ScannedCount"]) == (10, 20)
    r = t.query(KeyConditionExpression=p, Select="SPECIFIC_ATTRIBUTES", ProjectionExpression="n", Limit=2)
    assert r["Items"] == [{"n": 0}, {"n": 1}]


def test_query_consumed_capacity(nums):
    # Query capacity: eventually consistent reads cost half of strongly consistent ones.
    t = nums
    r1 = t.query(KeyConditionExpression=Key("pk").eq("p"), ReturnConsumedCapacity="TOTAL")
    r2 = t.query(KeyConditionExpression=Key("pk").eq("p"), ReturnConsumedCapacity="TOTAL", ConsistentRead=True)
    assert r1["ConsumedCapacity"]["TableName"] == t.name
    assert r1["ConsumedCapacity"]["CapacityUnits"] == 0.5  # < 4 KB read, eventually consistent
    assert r2["ConsumedCapacity"]["CapacityUnits"] == 1.0


def test_query_validation_errors(nums, target):
    # The common Query mistakes are refused with DynamoDB's messages.
    c = raw_client(target)
    name = nums.name

    def q(**kw):
        with pytest.raises(ClientError) as ei:
            c.query(TableName=name, **kw)
        return err(ei)

    v = {":p": {"S": "p"}, ":n": {"N": "1"}}
    assert q() == ("ValidationException",
                   "Either the KeyConditions or KeyConditionExpression parameter must be specified in the request.")
    assert q(KeyConditionExpression="n = :n", ExpressionAttributeValues={":n": {"N": "1"}}) == \
        ("ValidationException", "Query condition missed key schema element")
    assert q(KeyConditionExpression="pk = :p OR sk = :n", ExpressionAttributeValues=v) == \
        ("ValidationException", "Invalid operator used in KeyConditionExpression: OR")
    assert q(KeyConditionExpression="pk = :p AND begins_with(sk, :n)", ExpressionAttributeValues=v) == \
        ("ValidationException", "Invalid KeyConditionExpression: Incorrect operand type for operator or function; "
                                "operator or function: begins_with, operand type: N")
    assert q(KeyConditionExpression="pk = :p AND pk = :p", ExpressionAttributeValues={":p": v[":p"]}) == \
        ("ValidationException", "KeyConditionExpressions must only contain one condition per key")
    assert q(KeyConditionExpression="pk = :p", FilterExpression="sk > :n", ExpressionAttributeValues=v) == \
        ("ValidationException", "Filter Expression can only contain non-primary key attributes: Primary key attribute: sk")
    assert q(KeyConditionExpression="pk = :p", ExpressionAttributeValues=v) == \
        ("ValidationException", "Value provided in ExpressionAttributeValues unused in expressions: keys: {:n}")
    # DynamoDB Local: "Limit must be greater than or equal to 1"; DynamoDB's model constrains limit >= 1, whose
    # generic form is "1 validation error detected: Value '0' at 'limit' failed to satisfy constraint: ...".
    code, msg = q(KeyConditionExpression="pk = :p", ExpressionAttributeValues={":p": v[":p"]}, Limit=0)
    assert code == "ValidationException" and "greater than or equal to 1" in msg
    assert q(KeyConditionExpression="pk = :p", ExpressionAttributeValues={":p": v[":p"]}, Select="ALL_PROJECTED_ATTRIBUTES") == \
        ("ValidationException", "ALL_PROJECTED_ATTRIBUTES can be used only when Querying using an IndexName")
    assert q(KeyConditionExpression="pk = :p", ExpressionAttributeValues={":p": v[":p"]}, IndexName="nope") == \
        ("ValidationException", "The table does not have the specified index: nope")
    code, msg = q(KeyConditionExpression="pk = :p", ExpressionAttributeValues={":p": v[":p"]},
                  ExclusiveStartKey={"pk": {"S": "p"}})
    assert code == "ValidationException" and ("Exclusive Start Key" in msg or "starting key" in msg)
    with pytest.raises(ClientError) as ei:
        c.query(TableName=name + "_missing", KeyConditionExpression="pk = :p", ExpressionAttributeValues={":p": v[":p"]})
    assert err(ei)[0] == "ResourceNotFoundException"


# =========================================================================== Scan

def test_scan_filter_limit_paging(nums):
    # Scan returns every item once; Limit pages through; a filter keeps Count <= ScannedCount.
    t = nums
    items, pages = scan_all(t, Limit=4)
    keys = [(i["pk"], int(i["sk"])) for i in items]
    assert sorted(keys) == sorted([("p", i) for i in range(20)] + [("q", i) for i in range(5)])
    assert len(set(keys)) == 25
    assert all(p["Count"] <= 4 for p in pages) and len(pages) >= 7
    r = t.scan(FilterExpression=Attr("n").gte(100))
    assert sorted(int(i["n"]) for i in r["Items"]) == [100, 101, 102, 103, 104]
    assert (r["Count"], r["ScannedCount"]) == (5, 25)
    r = t.scan(FilterExpression=Key("pk").eq("q") & Attr("n").lt(102), ProjectionExpression="n")
    assert sorted(r["Items"], key=lambda i: i["n"]) == [{"n": 100}, {"n": 101}]
    r = t.scan(Select="COUNT")
    assert "Items" not in r and (r["Count"], r["ScannedCount"]) == (25, 25)
    items, _ = scan_all(t, Limit=3, FilterExpression=Attr("odd").eq(True))
    assert sorted(sks(items)) == list(range(1, 20, 2))


@pytest.mark.parametrize("total", [1, 2, 4, 7])
def test_parallel_scan_partitions_the_table(ddb, ddb_resource, table_name, total):
    # Segment/TotalSegments split the table: each item is returned by exactly one segment.
    create(ddb, table_name)
    t = ddb_resource.Table(table_name)
    with t.batch_writer() as bw:
        for i in range(60):
            bw.put_item(Item={"pk": f"item{i:03d}", "v": i})
    seen = []
    for seg in range(total):
        items, _ = scan_all(t, Segment=seg, TotalSegments=total, Limit=7)
        seen += [i["pk"] for i in items]
    assert sorted(seen) == [f"item{i:03d}" for i in range(60)]  # no item twice, none missing


@pytest.mark.parametrize("page_size", [1, 3, 10, 100])
def test_paginators_return_everything_once(ddb, nums, page_size):
    # The client paginators follow LastEvaluatedKey: query in key order, scan without duplicates.
    name = nums.name
    pages = list(ddb.get_paginator("query").paginate(
        TableName=name, KeyConditionExpression="pk = :p", ExpressionAttributeValues={":p": {"S": "p"}},
        PaginationConfig={"PageSize": page_size}))
    got = [int(i["sk"]["N"]) for p in pages for i in p["Items"]]
    assert got == list(range(20))
    assert all(p["Count"] <= page_size for p in pages)
    pages = list(ddb.get_paginator("query").paginate(
        TableName=name, KeyConditionExpression="pk = :p", ExpressionAttributeValues={":p": {"S": "p"}},
        ScanIndexForward=False, PaginationConfig={"PageSize": page_size}))
    assert [int(i["sk"]["N"]) for p in pages for i in p["Items"]] == list(range(19, -1, -1))
    pages = list(ddb.get_paginator("scan").paginate(TableName=name, PaginationConfig={"PageSize": page_size}))
    keys = [(i["pk"]["S"], int(i["sk"]["N"])) for p in pages for i in p["Items"]]
    assert len(keys) == len(set(keys)) == 25
    # Scan order is stable: the same scan gives the same order.
    again = [(i["pk"]["S"], int(i["sk"]["N"])) for p in ddb.get_paginator("scan").paginate(TableName=name)
             for i in p["Items"]]
    assert again == keys


def test_paginator_max_items_and_starting_token(ddb, nums):
    # MaxItems stops early with a NextToken; StartingToken resumes exactly where it stopped.
    name = nums.name
    kw = dict(TableName=name, KeyConditionExpression="pk = :p", ExpressionAttributeValues={":p": {"S": "p"}})
    first = ddb.get_paginator("query").paginate(**kw, PaginationConfig={"MaxItems": 7, "PageSize": 3}).build_full_result()
    assert [int(i["sk"]["N"]) for i in first["Items"]] == list(range(7))
    assert "NextToken" in first
    rest = ddb.get_paginator("query").paginate(
        **kw, PaginationConfig={"PageSize": 3, "StartingToken": first["NextToken"]}).build_full_result()
    assert [int(i["sk"]["N"]) for i in rest["Items"]] == list(range(7, 20))


# =========================================================================== key ordering

def test_numeric_sort_key_order(ddb, table_name):
    # Number sort keys sort numerically (not as strings): negatives, fractions, 38-digit values, exponents.
    create(ddb, table_name, key=key_schema("pk", "S", "sk", "N"))
    values = ["10", "9", "-1", "-10", "-1.5", "0", "0.001", "1E-130", "-1E-130", "2", "100", "1.25",
              "99999999999999999999999999999999999999", "-99999999999999999999999999999999999999",
              "12345678901234567890123456789012345678", "1E+125", "-1E+125", "0.5", "-0.5", "11"]
    for v in values:
        ddb.put_item(TableName=table_name, Item={"pk": {"S": "p"}, "sk": {"N": v}})
    r = ddb.query(TableName=table_name, KeyConditionExpression="pk = :p", ExpressionAttributeValues={":p": {"S": "p"}})
    got = [Decimal(i["sk"]["N"]) for i in r["Items"]]
    assert got == sorted(Decimal(v) for v in values)
    assert len(got) == len(values)
    # Numbers that differ only in form are one key: 1.250 is 1.25.
    r = ddb.query(TableName=table_name, KeyConditionExpression="pk = :p AND sk = :v",
                  ExpressionAttributeValues={":p": {"S": "p"}, ":v": {"N": "1.250"}})
    assert [i["sk"]["N"] for i in r["Items"]] == ["1.25"]
    r = ddb.query(TableName=table_name, KeyConditionExpression="pk = :p AND sk BETWEEN :a AND :b",
                  ExpressionAttributeValues={":p": {"S": "p"}, ":a": {"N": "-1.5"}, ":b": {"N": "1E-130"}})
    assert [Decimal(i["sk"]["N"]) for i in r["Items"]] == [Decimal(x) for x in
                                                          ["-1.5", "-1", "-0.5", "-1E-130", "0", "1E-130"]]
    r = ddb.query(TableName=table_name, KeyConditionExpression="pk = :p AND sk > :a", ScanIndexForward=False, Limit=3,
                  ExpressionAttributeValues={":p": {"S": "p"}, ":a": {"N": "0"}})
    assert [Decimal(i["sk"]["N"]) for i in r["Items"]] == [Decimal("1E+125"), Decimal("9" * 38),
                                                          Decimal("12345678901234567890123456789012345678")]


def test_binary_sort_key_bytewise(ddb, table_name):
    # Binary sort keys sort as unsigned bytes (0x80 after 0x7f; a prefix before its extensions).
    create(ddb, table_name, key=key_schema("pk", "B", "sk", "B"))
    values = [b"\x00", b"\x00\x00", b"\x01", b"\x7f", b"\x80", b"\x80\x00", b"\xff", b"\xff\xff", b"a", b"A"]
    for v in values:
        ddb.put_item(TableName=table_name, Item={"pk": {"B": b"k"}, "sk": {"B": v}})
    kv = {":p": {"B": b"k"}}
    r = ddb.query(TableName=table_name, KeyConditionExpression="pk = :p", ExpressionAttributeValues=kv)
    assert [i["sk"]["B"] for i in r["Items"]] == sorted(values)
    r = ddb.query(TableName=table_name, KeyConditionExpression="pk = :p AND begins_with(sk, :b)",
                  ExpressionAttributeValues={**kv, ":b": {"B": b"\x80"}})
    assert [i["sk"]["B"] for i in r["Items"]] == [b"\x80", b"\x80\x00"]
    r = ddb.query(TableName=table_name, KeyConditionExpression="pk = :p AND sk > :b",
                  ExpressionAttributeValues={**kv, ":b": {"B": b"\x7f"}})
    assert [i["sk"]["B"] for i in r["Items"]] == [b"\x80", b"\x80\x00", b"\xff", b"\xff\xff"]
    r = ddb.query(TableName=table_name, KeyConditionExpression="pk = :p AND sk BETWEEN :a AND :b",
                  ExpressionAttributeValues={**kv, ":a": {"B": b"\x00\x00"}, ":b": {"B": b"\x7f"}})
    assert [i["sk"]["B"] for i in r["Items"]] == [b"\x00\x00", b"\x01", b"A", b"a", b"\x7f"]


# =========================================================================== 1 MB pages

def test_query_and_scan_pages_stop_near_1mb(ddb, ddb_resource, table_name, target):
    # ~300 items of ~10 KB in one partition: a page stops once about 1 MB has been read, with a
    # LastEvaluatedKey; following the keys returns every item exactly once.
    create(ddb, table_name, key=key_schema("pk", "S", "sk", "N"))
    t = ddb_resource.Table(table_name)
    blob = "x" * 10_000
    with t.batch_writer() as bw:
        for i in range(300):
            bw.put_item(Item={"pk": "p", "sk": i, "data1": blob})
    size = item_size({"pk": "p", "sk": 0, "data1": blob})
    r = t.query(KeyConditionExpression=Key("pk").eq("p"))
    n = r["Count"]
    assert "LastEvaluatedKey" in r and r["LastEvaluatedKey"]["sk"] == n - 1
    assert (n - 1) * size < MB and MB // size - 5 <= n <= MB // size + 5  # about 1 MB (DynamoDB Local: 105)
    items, pages = query_all(t, KeyConditionExpression=Key("pk").eq("p"))
    assert sks(items) == list(range(300))
    assert 3 <= len(pages) <= 4
    # Scan pages obey the same limit.
    r = t.scan()
    assert "LastEvaluatedKey" in r and MB // size - 5 <= r["Count"] <= MB // size + 5
    items, _ = scan_all(t, ProjectionExpression="sk")
    assert sorted(sks(items)) == list(range(300))
    # Select COUNT counts at most one page of data too.
    r = t.query(KeyConditionExpression=Key("pk").eq("p"), Select="COUNT")
    assert "LastEvaluatedKey" in r and r["Count"] == n
    # With a filter matching nothing, real DynamoDB still stops after reading 1 MB (ScannedCount ~100,
    # Count 0, LastEvaluatedKey set). DynamoDB Local applies the limit to the data returned instead
    # and reads all 300 items in one page.
    r = t.query(KeyConditionExpression=Key("pk").eq("p"), FilterExpression=Attr("data1").not_exists())
    assert r["Count"] == 0
    if target.is_ddblocal:
        assert r["ScannedCount"] == 300 and "LastEvaluatedKey" not in r
    else:
        assert "LastEvaluatedKey" in r and MB // size - 5 <= r["ScannedCount"] <= MB // size + 5


# =========================================================================== batches

def test_batch_writer_put_delete_overwrite(ddb, ddb_resource, table_name):
    # batch_writer sends >25 puts in several BatchWriteItem calls, deletes, and dedupes with overwrite_by_pkeys.
    create(ddb, table_name, key=key_schema("pk", "S", "sk", "N"))
    t = ddb_resource.Table(table_name)
    with t.batch_writer() as bw:
        for i in range(60):
            bw.put_item(Item={"pk": "p", "sk": i, "v": f"v{i}"})
    items, _ = query_all(t, KeyConditionExpression=Key("pk").eq("p"), ConsistentRead=True)
    assert [(int(i["sk"]), i["v"]) for i in items] == [(i, f"v{i}") for i in range(60)]
    with t.batch_writer() as bw:
        for i in range(0, 60, 2):
            bw.delete_item(Key={"pk": "p", "sk": i})
    items, _ = query_all(t, KeyConditionExpression=Key("pk").eq("p"), ConsistentRead=True)
    assert sks(items) == list(range(1, 60, 2))
    # overwrite_by_pkeys keeps only the last request per key inside a buffered batch.
    with t.batch_writer(overwrite_by_pkeys=["pk", "sk"]) as bw:
        for rnd in range(3):
            for i in range(10):
                bw.put_item(Item={"pk": "o", "sk": i, "round": rnd})
        bw.delete_item(Key={"pk": "o", "sk": 9})
    items, _ = query_all(t, KeyConditionExpression=Key("pk").eq("o"), ConsistentRead=True)
    assert [(int(i["sk"]), int(i["round"])) for i in items] == [(i, 2) for i in range(9)]
    # Without overwrite_by_pkeys, two writes of one key in one batch are refused by the server.
    with pytest.raises(ClientError) as ei:
        with t.batch_writer() as bw:
            bw.put_item(Item={"pk": "d", "sk": 1})
            bw.put_item(Item={"pk": "d", "sk": 1, "x": 1})
    assert err(ei) == ("ValidationException", "Provided list of item keys contains duplicates")


def test_batch_get_item_two_tables(ddb, ddb_resource, table_names):
    # BatchGetItem reads from two tables at once, with projections (names placeholders), ConsistentRead,
    # and silently skips missing keys. Items come back in no particular order.
    a, b = table_names("bga"), table_names("bgb")
    create(ddb, a)
    create(ddb, b, key=key_schema("pk", "S", "sk", "N"))
    for i in range(10):
        ddb.put_item(TableName=a, Item={"pk": {"S": f"a{i}"}, "v": {"N": str(i)}, "name": {"S": f"n{i}"}})
        ddb.put_item(TableName=b, Item={"pk": {"S": "b"}, "sk": {"N": str(i)}, "w": {"S": f"w{i}"}, "x": {"N": "1"}})
    r = ddb.batch_get_item(RequestItems={
        a: {"Keys": [{"pk": {"S": f"a{i}"}} for i in (1, 3, 5, 42)],
            "ProjectionExpression": "pk, #n", "ExpressionAttributeNames": {"#n": "name"}},
        b: {"Keys": [{"pk": {"S": "b"}, "sk": {"N": str(i)}} for i in (0, 9)], "ConsistentRead": True},
    }, ReturnConsumedCapacity="TOTAL")
    assert r["UnprocessedKeys"] == {}
    got_a = sorted(r["Responses"][a], key=lambda i: i["pk"]["S"])
    assert got_a == [{"pk": {"S": f"a{i}"}, "name": {"S": f"n{i}"}} for i in (1, 3, 5)]
    got_b = sorted(r["Responses"][b], key=lambda i: int(i["sk"]["N"]))
    assert got_b == [{"pk": {"S": "b"}, "sk": {"N": str(i)}, "w": {"S": f"w{i}"}, "x": {"N": "1"}} for i in (0, 9)]
    caps = {c["TableName"]: c["CapacityUnits"] for c in r["ConsumedCapacity"]}
    # 0.5 per small item read eventually consistent, 1 per strongly consistent; the missing key a42 costs
    # nothing on DynamoDB Local (real DynamoDB may charge it as a minimal read).
    assert caps[b] == 2.0 and caps[a] in (1.5, 2.0) and set(caps) == {a, b}
    # The resource API: batch_get_item with plain Python values.
    r = ddb_resource.batch_get_item(RequestItems={a: {"Keys": [{"pk": "a7"}], "ProjectionExpression": "v"}})
    assert r["Responses"][a] == [{"v": 7}]


def test_batch_write_item_errors(ddb, target, table_names):
    # BatchWriteItem: duplicates, more than 25 requests, an empty request and a missing table are refused,
    # and nothing of a refused batch is written.
    a = table_names("bwe")
    create(ddb, a)
    c = raw_client(target)
    put = lambda k: {"PutRequest": {"Item": {"pk": {"S": k}}}}  # noqa: E731
    with pytest.raises(ClientError) as ei:
        c.batch_write_item(RequestItems={a: [put("x"), put("y"), put("x")]})
    assert err(ei) == ("ValidationException", "Provided list of item keys contains duplicates")
    with pytest.raises(ClientError) as ei:
        c.batch_write_item(RequestItems={a: [put("z"), {"DeleteRequest": {"Key": {"pk": {"S": "z"}}}}]})
    assert err(ei) == ("ValidationException", "Provided list of item keys contains duplicates")
    # More than 25 writes for one table break the request's list constraint. Real DynamoDB: "1 validation error
    # detected: Value '{...}' at 'requestItems' failed to satisfy constraint: Map value must satisfy constraint:
    # [Member must have length less than or equal to 25, ...]"; DynamoDB Local: the message below.
    with pytest.raises(ClientError) as ei:
        c.batch_write_item(RequestItems={a: [put(f"k{i}") for i in range(26)]})
    code, msg = err(ei)
    assert code == "ValidationException"
    assert msg == "Too many items requested for the BatchWriteItem call" or "less than or equal to 25" in msg
    # At most 25 writes per table but more than 25 in all: the batch-wide limit.
    b = table_names("bwe")
    create(ddb, b)
    with pytest.raises(ClientError) as ei:
        c.batch_write_item(RequestItems={a: [put(f"k{i}") for i in range(13)], b: [put(f"k{i}") for i in range(13)]})
    assert err(ei) == ("ValidationException", "Too many items requested for the BatchWriteItem call")
    c.batch_write_item(RequestItems={a: [put(f"k{i}") for i in range(25)]})  # 25 is fine
    with pytest.raises(ClientError) as ei:
        c.batch_write_item(RequestItems={})
    assert err(ei)[0] == "ValidationException"
    with pytest.raises(ClientError) as ei:
        c.batch_write_item(RequestItems={a: []})
    assert err(ei)[0] == "ValidationException"
    with pytest.raises(ClientError) as ei:
        c.batch_write_item(RequestItems={a: [put("m1")], a + "_missing": [put("m2")]})
    assert err(ei)[0] == "ResourceNotFoundException"
    with pytest.raises(ClientError) as ei:
        c.batch_write_item(RequestItems={a: [put("m3"), {"PutRequest": {"Item": {"v": {"S": "no key"}}}}]})
    assert err(ei)[0] == "ValidationException"
    with pytest.raises(ClientError) as ei:
        c.batch_write_item(RequestItems={a: [{"PutRequest": {"Item": {"pk": {"S": "big"}, "v": {"S": "x" * 410_000}}}}]})
    assert err(ei) == ("ValidationException", "Item size has exceeded the maximum allowed size")
    got = ddb.scan(TableName=a, ConsistentRead=True)["Items"]
    assert sorted(i["pk"]["S"] for i in got) == sorted(f"k{i}" for i in range(25))


def test_batch_get_item_errors(ddb, target, table_names):
    # BatchGetItem: more than 100 keys, duplicate keys, a missing table, no keys are refused.
    a = table_names("bge")
    create(ddb, a)
    c = raw_client(target)
    # More than 100 keys for one table (DynamoDB may phrase it as the Keys list constraint) or in all.
    with pytest.raises(ClientError) as ei:
        c.batch_get_item(RequestItems={a: {"Keys": [{"pk": {"S": f"k{i}"}} for i in range(101)]}})
    code, msg = err(ei)
    assert code == "ValidationException"
    assert msg == "Too many items requested for the BatchGetItem call" or "less than or equal to 100" in msg
    b = table_names("bge")
    create(ddb, b)
    with pytest.raises(ClientError) as ei:
        c.batch_get_item(RequestItems={a: {"Keys": [{"pk": {"S": f"k{i}"}} for i in range(60)]},
                                       b: {"Keys": [{"pk": {"S": f"k{i}"}} for i in range(41)]}})
    assert err(ei) == ("ValidationException", "Too many items requested for the BatchGetItem call")
    r = c.batch_get_item(RequestItems={a: {"Keys": [{"pk": {"S": f"k{i}"}} for i in range(100)]}})
    assert r["Responses"][a] == [] and r["UnprocessedKeys"] == {}
    with pytest.raises(ClientError) as ei:
        c.batch_get_item(RequestItems={a: {"Keys": [{"pk": {"S": "k"}}, {"pk": {"S": "k"}}]}})
    assert err(ei) == ("ValidationException", "Provided list of item keys contains duplicates")
    with pytest.raises(ClientError) as ei:
        c.batch_get_item(RequestItems={a + "_missing": {"Keys": [{"pk": {"S": "k"}}]}})
    assert err(ei)[0] == "ResourceNotFoundException"
    with pytest.raises(ClientError) as ei:
        c.batch_get_item(RequestItems={})
    assert err(ei)[0] == "ValidationException"
    with pytest.raises(ClientError) as ei:
        c.batch_get_item(RequestItems={a: {"Keys": [{"pk": {"N": "1"}}]}})
    assert err(ei)[0] == "ValidationException"


# =========================================================================== secondary indexes

INDEXED = dict(
    key=key_schema("pk", "S", "sk", "S"),
    AttributeDefinitions=[{"AttributeName": "lsk", "AttributeType": "N"},
                          {"AttributeName": "gpk", "AttributeType": "S"},
                          {"AttributeName": "gsk", "AttributeType": "N"}],
    LocalSecondaryIndexes=[
        {"IndexName": "lsi_keys", "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"},
                                                {"AttributeName": "lsk", "KeyType": "RANGE"}],
         "Projection": {"ProjectionType": "KEYS_ONLY"}}],
    GlobalSecondaryIndexes=[
        {"IndexName": "gsi_inc", "KeySchema": [{"AttributeName": "gpk", "KeyType": "HASH"},
                                               {"AttributeName": "gsk", "KeyType": "RANGE"}],
         "Projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["a"]}},
        {"IndexName": "gsi_all", "KeySchema": [{"AttributeName": "gpk", "KeyType": "HASH"}],
         "Projection": {"ProjectionType": "ALL"}},
        {"IndexName": "gsi_keys", "KeySchema": [{"AttributeName": "lsk", "KeyType": "HASH"}],
         "Projection": {"ProjectionType": "KEYS_ONLY"}}],
)

INDEXED_ITEMS = [
    {"pk": "p", "sk": "s1", "lsk": 30, "gpk": "g", "gsk": 3, "a": "a1", "b": "b1"},
    {"pk": "p", "sk": "s2", "lsk": 10, "gpk": "h", "gsk": 1, "a": "a2", "b": "b2"},
    {"pk": "p", "sk": "s3", "gpk": "g", "gsk": 2, "b": "b3"},             # not in lsi_keys / gsi_keys
    {"pk": "p", "sk": "s4", "lsk": 20, "a": "a4"},                          # not in the gpk indexes
    {"pk": "q", "sk": "s1", "gpk": "g", "gsk": 1, "a": "qa", "b": "qb"},   # another table partition
    {"pk": "p", "sk": "s5", "b": "b5"},                                     # in no index at all
]


@pytest.fixture
def indexed(ddb, ddb_resource, table_name):
    """A table with an LSI (KEYS_ONLY) and GSIs (INCLUDE, ALL, KEYS_ONLY), holding a sparse set of items."""
    kw = dict(INDEXED)
    create(ddb, table_name, **kw)
    t = ddb_resource.Table(table_name)
    for it in INDEXED_ITEMS:
        t.put_item(Item=it)
    return t


def test_lsi_query_projections(indexed):
    # An LSI holds only items having its sort key, ordered by it; KEYS_ONLY returns table and index keys;
    # asking for other attributes fetches them from the table.
    t = indexed
    r = t.query(IndexName="lsi_keys", KeyConditionExpression=Key("pk").eq("p"))
    assert r["Items"] == [{"pk": "p", "sk": "s2", "lsk": 10}, {"pk": "p", "sk": "s4", "lsk": 20},
                          {"pk": "p", "sk": "s1", "lsk": 30}]
    r = t.query(IndexName="lsi_keys", KeyConditionExpression=Key("pk").eq("p") & Key("lsk").gt(10),
                ScanIndexForward=False, Select="ALL_PROJECTED_ATTRIBUTES")
    assert r["Items"] == [{"pk": "p", "sk": "s1", "lsk": 30}, {"pk": "p", "sk": "s4", "lsk": 20}]
    r = t.query(IndexName="lsi_keys", KeyConditionExpression=Key("pk").eq("p"), Select="ALL_ATTRIBUTES")
    assert [i["sk"] for i in r["Items"]] == ["s2", "s4", "s1"]
    assert r["Items"][0] == INDEXED_ITEMS[1]
    r = t.query(IndexName="lsi_keys", KeyConditionExpression=Key("pk").eq("p"), ProjectionExpression="a, lsk")
    assert r["Items"] == [{"a": "a2", "lsk": 10}, {"a": "a4", "lsk": 20}, {"a": "a1", "lsk": 30}]
    r = t.query(IndexName="lsi_keys", KeyConditionExpression=Key("pk").eq("p"), ConsistentRead=True, Limit=2)
    assert [i["sk"] for i in r["Items"]] == ["s2", "s4"]
    assert r["LastEvaluatedKey"] == {"pk": "p", "sk": "s4", "lsk": 20}
    r = t.query(IndexName="lsi_keys", KeyConditionExpression=Key("pk").eq("p"), ExclusiveStartKey=r["LastEvaluatedKey"])
    assert [i["sk"] for i in r["Items"]] == ["s1"]


def test_gsi_query_projections(indexed, ddb):
    # GSIs hold only items having their key attributes (sparse), from every table partition, and
    # return what their projection holds.
    t = indexed
    r = t.query(IndexName="gsi_inc", KeyConditionExpression=Key("gpk").eq("g"))
    assert r["Items"] == [{"gpk": "g", "gsk": 1, "pk": "q", "sk": "s1", "a": "qa"},
                          {"gpk": "g", "gsk": 2, "pk": "p", "sk": "s3"},
                          {"gpk": "g", "gsk": 3, "pk": "p", "sk": "s1", "a": "a1"}]
    r = t.query(IndexName="gsi_inc", KeyConditionExpression=Key("gpk").eq("g") & Key("gsk").gte(2),
                ScanIndexForward=False)
    assert [i["gsk"] for i in r["Items"]] == [3, 2]
    r = t.query(IndexName="gsi_inc", KeyConditionExpression=Key("gpk").eq("g"), Limit=2)
    assert r["LastEvaluatedKey"] == {"gpk": "g", "gsk": 2, "pk": "p", "sk": "s3"}
    r = t.query(IndexName="gsi_inc", KeyConditionExpression=Key("gpk").eq("g"), ExclusiveStartKey=r["LastEvaluatedKey"])
    assert [i["gsk"] for i in r["Items"]] == [3]
    r = t.query(IndexName="gsi_inc", KeyConditionExpression=Key("gpk").eq("g"), Select="COUNT",
                FilterExpression=Attr("a").exists())
    assert (r["Count"], r["ScannedCount"]) == (2, 3)
    r = t.query(IndexName="gsi_all", KeyConditionExpression=Key("gpk").eq("h"))
    assert r["Items"] == [INDEXED_ITEMS[1]]
    r = t.query(IndexName="gsi_all", KeyConditionExpression=Key("gpk").eq("g"), Select="ALL_ATTRIBUTES")
    assert sorted((i["pk"], i["sk"]) for i in r["Items"]) == [("p", "s1"), ("p", "s3"), ("q", "s1")]
    r = t.query(IndexName="gsi_keys", KeyConditionExpression=Key("lsk").eq(20))
    assert r["Items"] == [{"lsk": 20, "pk": "p", "sk": "s4"}]
    # Attributes the GSI does not project cannot be asked for.
    with pytest.raises(ClientError) as ei:
        t.query(IndexName="gsi_inc", KeyConditionExpression=Key("gpk").eq("g"), Select="ALL_ATTRIBUTES")
    assert err(ei) == ("ValidationException", "One or more parameter values were invalid: Select type ALL_ATTRIBUTES "
                                              "is not supported for global secondary index gsi_inc because its "
                                              "projection type is not ALL")
    with pytest.raises(ClientError) as ei:
        t.query(IndexName="gsi_inc", KeyConditionExpression=Key("gpk").eq("g"), ProjectionExpression="b")
    assert err(ei) == ("ValidationException",
                       "One or more parameter values were invalid: Global secondary index gsi_inc does not project [b]")
    # Strongly consistent reads are not available on a GSI.
    with pytest.raises(ClientError) as ei:
        t.query(IndexName="gsi_all", KeyConditionExpression=Key("gpk").eq("g"), ConsistentRead=True)
    assert err(ei) == ("ValidationException", "Consistent reads are not supported on global secondary indexes")
    with pytest.raises(ClientError) as ei:
        t.scan(IndexName="gsi_all", ConsistentRead=True)
    assert err(ei) == ("ValidationException", "Consistent reads are not supported on global secondary indexes")
    # The key condition must name the index's keys.
    with pytest.raises(ClientError) as ei:
        t.query(IndexName="gsi_inc", KeyConditionExpression=Key("pk").eq("p"))
    assert err(ei) == ("ValidationException", "Query condition missed key schema element")
    # Capacity reported per index.
    r = ddb.query(TableName=t.name, IndexName="gsi_inc", KeyConditionExpression="gpk = :g",
                  ExpressionAttributeValues={":g": {"S": "g"}}, ReturnConsumedCapacity="INDEXES")
    cc = r["ConsumedCapacity"]
    assert cc["CapacityUnits"] == 0.5 and cc["GlobalSecondaryIndexes"] == {"gsi_inc": {"CapacityUnits": 0.5}}


def test_index_maintenance_on_writes(indexed):
    # Updates move items between index partitions, add them to and drop them from sparse indexes;
    # deletes remove them from every index.
    t = indexed
    t.update_item(Key={"pk": "p", "sk": "s2"}, UpdateExpression="SET gpk = :g, gsk = :n REMOVE lsk",
                  ExpressionAttributeValues={":g": "g", ":n": 5})
    t.update_item(Key={"pk": "p", "sk": "s5"}, UpdateExpression="SET lsk = :l", ExpressionAttributeValues={":l": 15})
    t.delete_item(Key={"pk": "q", "sk": "s1"})
    t.put_item(Item={"pk": "p", "sk": "s3", "b": "replaced"})  # drops out of the gpk indexes
    r = t.query(IndexName="gsi_inc", KeyConditionExpression=Key("gpk").eq("g"))
    assert [(i["pk"], i["sk"], i["gsk"]) for i in r["Items"]] == [("p", "s1", 3), ("p", "s2", 5)]
    assert t.query(IndexName="gsi_all", KeyConditionExpression=Key("gpk").eq("h"))["Items"] == []
    r = t.query(IndexName="lsi_keys", KeyConditionExpression=Key("pk").eq("p"))
    assert [(i["sk"], i["lsk"]) for i in r["Items"]] == [("s5", 15), ("s4", 20), ("s1", 30)]
    assert t.query(IndexName="gsi_keys", KeyConditionExpression=Key("lsk").eq(10))["Items"] == []
    assert t.query(IndexName="gsi_keys", KeyConditionExpression=Key("lsk").eq(15))["Items"] == \
        [{"lsk": 15, "pk": "p", "sk": "s5"}]
    r = t.scan(IndexName="gsi_all")
    assert sorted((i["pk"], i["sk"]) for i in r["Items"]) == [("p", "s1"), ("p", "s2")]
    r = t.scan(IndexName="lsi_keys", Select="COUNT")
    assert r["Count"] == 3


def test_describe_table_index_status_and_counts(indexed, ddb):
    # DescribeTable shows every index ACTIVE with its ItemCount (sparse: only items with the index keys).
    t = ddb.describe_table(TableName=indexed.name)["Table"]
    gsis = {g["IndexName"]: g for g in t["GlobalSecondaryIndexes"]}
    assert set(gsis) == {"gsi_inc", "gsi_all", "gsi_keys"}
    assert all(g["IndexStatus"] == "ACTIVE" for g in gsis.values())
    assert gsis["gsi_inc"]["Projection"] == {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["a"]}
    (lsi,) = t["LocalSecondaryIndexes"]
    # Real DynamoDB refreshes counts about every six hours, so 0 is also acceptable.
    assert gsis["gsi_inc"]["ItemCount"] in (0, 4)
    assert gsis["gsi_all"]["ItemCount"] in (0, 4)
    assert gsis["gsi_keys"]["ItemCount"] in (0, 3)
    assert lsi["ItemCount"] in (0, 3)
    assert t["ItemCount"] in (0, 6)
    if t["ItemCount"]:
        assert gsis["gsi_all"]["IndexSizeBytes"] > gsis["gsi_keys"]["IndexSizeBytes"] > 0


def test_update_table_adds_gsi_with_backfill_then_deletes_it(ddb, ddb_resource, table_name):
    # UpdateTable creating a GSI on a table with data: the index becomes ACTIVE (polled, bounded) and
    # holds the existing items; deleting it makes it disappear from DescribeTable and from Query.
    create(ddb, table_name, key=key_schema("pk", "S", "sk", "N"))
    t = ddb_resource.Table(table_name)
    with t.batch_writer() as bw:
        for i in range(40):
            item = {"pk": f"p{i % 4}", "sk": i}
            if i % 5:
                item["color"] = ["red", "green", "blue"][i % 3]
            bw.put_item(Item=item)
    d = ddb.update_table(TableName=table_name,
                         AttributeDefinitions=[{"AttributeName": "color", "AttributeType": "S"},
                                               {"AttributeName": "sk", "AttributeType": "N"}],
                         GlobalSecondaryIndexUpdates=[{"Create": {
                             "IndexName": "by_color",
                             "KeySchema": [{"AttributeName": "color", "KeyType": "HASH"},
                                           {"AttributeName": "sk", "KeyType": "RANGE"}],
                             "Projection": {"ProjectionType": "KEYS_ONLY"}}}])["TableDescription"]
    (g,) = d["GlobalSecondaryIndexes"]
    assert g["IndexName"] == "by_color" and g["IndexStatus"] in ("CREATING", "ACTIVE")
    wait_active(ddb, table_name, timeout=30)
    expected = {c: [i for i in range(40) if i % 5 and ["red", "green", "blue"][i % 3] == c]
                for c in ("red", "green", "blue")}
    for color, want in expected.items():
        items, _ = query_all(t, IndexName="by_color", KeyConditionExpression=Key("color").eq(color))
        assert sks(items) == want
        assert all(set(i) == {"pk", "sk", "color"} for i in items)
    # Writes after the backfill are maintained too.
    t.put_item(Item={"pk": "p0", "sk": 100, "color": "red"})
    items, _ = query_all(t, IndexName="by_color", KeyConditionExpression=Key("color").eq("red") & Key("sk").gt(39))
    assert sks(items) == [100]

    d = ddb.update_table(TableName=table_name, GlobalSecondaryIndexUpdates=[{"Delete": {"IndexName": "by_color"}}])
    deadline = time.monotonic() + 30
    while True:
        desc = ddb.describe_table(TableName=table_name)["Table"]
        if not desc.get("GlobalSecondaryIndexes"):
            break
        assert desc["GlobalSecondaryIndexes"][0]["IndexStatus"] in ("DELETING", "ACTIVE")
        assert time.monotonic() < deadline, "GSI not deleted after 30 s"
        time.sleep(0.1)
    with pytest.raises(ClientError) as ei:
        t.query(IndexName="by_color", KeyConditionExpression=Key("color").eq("red"))
    assert err(ei) == ("ValidationException", "The table does not have the specified index: by_color")
    # The table still answers queries.
    assert sks(t.query(KeyConditionExpression=Key("pk").eq("p1"))["Items"]) == [1, 5, 9, 13, 17, 21, 25, 29, 33, 37]


def test_update_table_gsi_errors(indexed, ddb):
    # GSI updates naming a missing index, an existing name, or an attribute without definition are refused.
    name = indexed.name
    ks = [{"AttributeName": "zz", "KeyType": "HASH"}]
    with pytest.raises(ClientError) as ei:
        ddb.update_table(TableName=name, GlobalSecondaryIndexUpdates=[{"Delete": {"IndexName": "nope_index"}}])
    assert err(ei)[0] == "ResourceNotFoundException"
    with pytest.raises(ClientError) as ei:
        ddb.update_table(TableName=name, AttributeDefinitions=[{"AttributeName": "gpk", "AttributeType": "S"}],
                         GlobalSecondaryIndexUpdates=[{"Create": {
                             "IndexName": "gsi_all", "KeySchema": [{"AttributeName": "gpk", "KeyType": "HASH"}],
                             "Projection": {"ProjectionType": "ALL"}}}])
    code, msg = err(ei)  # DynamoDB Local: "Attempting to create an index which already exists"
    assert code == "ValidationException" and "already exists" in msg
    with pytest.raises(ClientError) as ei:
        ddb.update_table(TableName=name, GlobalSecondaryIndexUpdates=[{"Create": {
            "IndexName": "gsi_new", "KeySchema": ks, "Projection": {"ProjectionType": "ALL"}}}])
    assert err(ei)[0] == "ValidationException"


# =========================================================================== TTL

def test_time_to_live(ddb, table_name):
    # UpdateTimeToLive enables and disables TTL on an attribute; DescribeTimeToLive reports it.
    create(ddb, table_name)
    d = ddb.describe_time_to_live(TableName=table_name)["TimeToLiveDescription"]
    assert d == {"TimeToLiveStatus": "DISABLED"}
    r = ddb.update_time_to_live(TableName=table_name, TimeToLiveSpecification={"Enabled": True, "AttributeName": "exp"})
    assert r["TimeToLiveSpecification"] == {"Enabled": True, "AttributeName": "exp"}
    d = ddb.describe_time_to_live(TableName=table_name)["TimeToLiveDescription"]
    assert d["TimeToLiveStatus"] in ("ENABLED", "ENABLING") and d["AttributeName"] == "exp"
    # Enabling again is refused, on the same attribute or another (DynamoDB Local: "TimeToLive is already
    # enabled" / "TimeToLive is active on a different AttributeName").
    with pytest.raises(ClientError) as ei:
        ddb.update_time_to_live(TableName=table_name, TimeToLiveSpecification={"Enabled": True, "AttributeName": "exp"})
    code, msg = err(ei)
    assert code == "ValidationException" and ("enabled" in msg or "active" in msg)
    with pytest.raises(ClientError) as ei:
        ddb.update_time_to_live(TableName=table_name, TimeToLiveSpecification={"Enabled": True, "AttributeName": "other"})
    code, msg = err(ei)
    assert code == "ValidationException" and ("enabled" in msg or "active" in msg)
    # Disabling must name the attribute TTL is enabled on.
    with pytest.raises(ClientError) as ei:
        ddb.update_time_to_live(TableName=table_name, TimeToLiveSpecification={"Enabled": False, "AttributeName": "other"})
    code, msg = err(ei)
    assert code == "ValidationException" and "different" in msg
    # Items whose TTL attribute is in the future (or not a number) are ordinary items.
    ddb.put_item(TableName=table_name, Item={"pk": {"S": "f"}, "exp": {"N": str(int(time.time()) + 86400)}})
    ddb.put_item(TableName=table_name, Item={"pk": {"S": "s"}, "exp": {"S": "not a number"}})
    assert ddb.get_item(TableName=table_name, Key={"pk": {"S": "f"}}, ConsistentRead=True)["Item"]["exp"]
    assert ddb.get_item(TableName=table_name, Key={"pk": {"S": "s"}}, ConsistentRead=True)["Item"]["exp"]
    # Disabling right after enabling: real DynamoDB may refuse a second change within about an hour
    # ("Time to live has been modified multiple times within a fixed interval"); otherwise it is disabled.
    try:
        r = ddb.update_time_to_live(TableName=table_name,
                                    TimeToLiveSpecification={"Enabled": False, "AttributeName": "exp"})
    except ClientError as e:
        assert e.response["Error"]["Code"] == "ValidationException"
        assert "multiple times" in e.response["Error"]["Message"]
        return
    assert r["TimeToLiveSpecification"] == {"Enabled": False, "AttributeName": "exp"}
    d = ddb.describe_time_to_live(TableName=table_name)["TimeToLiveDescription"]
    assert d["TimeToLiveStatus"] in ("DISABLED", "DISABLING")


def test_time_to_live_errors(ddb, target, table_name):
    create(ddb, table_name)
    c = raw_client(target)
    # Messages as DynamoDB Local words them are noted; the checks keep to what DynamoDB's own differ on least.
    with pytest.raises(ClientError) as ei:  # "AttributeName cannot be null when time to live is being enabled"
        c.update_time_to_live(TableName=table_name, TimeToLiveSpecification={"Enabled": True})
    code, msg = err(ei)
    assert code == "ValidationException" and "ttributeName" in msg
    with pytest.raises(ClientError) as ei:  # "TimeToLive is already disabled"
        c.update_time_to_live(TableName=table_name, TimeToLiveSpecification={"Enabled": False, "AttributeName": "exp"})
    code, msg = err(ei)
    assert code == "ValidationException" and "disabled" in msg
    for bad in ("", "x" * 256):
        with pytest.raises(ClientError) as ei:
            c.update_time_to_live(TableName=table_name, TimeToLiveSpecification={"Enabled": True, "AttributeName": bad})
        assert err(ei)[0] == "ValidationException"
    with pytest.raises(ClientError) as ei:
        c.update_time_to_live(TableName=table_name)
    assert err(ei)[0] == "ValidationException"
    for call in (lambda: c.describe_time_to_live(TableName=table_name + "_missing"),
                 lambda: c.update_time_to_live(TableName=table_name + "_missing",
                                               TimeToLiveSpecification={"Enabled": True, "AttributeName": "e"})):
        with pytest.raises(ClientError) as ei:
            call()
        assert err(ei)[0] == "ResourceNotFoundException"


# =========================================================================== tags

def _tags(ddb, arn, expect=None, timeout=30.0):
    """ListTagsOfResource as a dict. Real DynamoDB applies TagResource/UntagResource asynchronously
    (since August 2024), so when `expect` is given, poll until the tags equal it (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        tags = {}
        kw = {}
        for _ in range(100):
            r = ddb.list_tags_of_resource(ResourceArn=arn, **kw)
            tags.update({t["Key"]: t["Value"] for t in r["Tags"]})
            if not r.get("NextToken"):
                break
            kw["NextToken"] = r["NextToken"]
        if expect is None or tags == expect or time.monotonic() > deadline:
            return tags
        time.sleep(0.2)


def test_tags(ddb, table_name, target):
    # TagResource adds or overwrites tags, UntagResource removes them (unknown keys are fine),
    # ListTagsOfResource lists them, all addressed by the TableArn from DescribeTable.
    if target.is_ddblocal:
        pytest.skip("DynamoDB Local 3.3.0 answers UnknownOperationException "
                    "'Tagging is not currently supported in DynamoDB Local.'")
    create(ddb, table_name)
    arn = ddb.describe_table(TableName=table_name)["Table"]["TableArn"]
    assert _tags(ddb, arn) == {}
    ddb.tag_resource(ResourceArn=arn, Tags=[{"Key": "team", "Value": "db"}, {"Key": "env", "Value": ""},
                                            {"Key": "a b+-=._:/@", "Value": "v"}])
    assert _tags(ddb, arn, {"team": "db", "env": "", "a b+-=._:/@": "v"}) == \
        {"team": "db", "env": "", "a b+-=._:/@": "v"}
    ddb.tag_resource(ResourceArn=arn, Tags=[{"Key": "team", "Value": "storage"}])
    assert _tags(ddb, arn, {"team": "storage", "env": "", "a b+-=._:/@": "v"})["team"] == "storage"
    ddb.untag_resource(ResourceArn=arn, TagKeys=["env", "never-set"])
    assert _tags(ddb, arn, {"team": "storage", "a b+-=._:/@": "v"}) == {"team": "storage", "a b+-=._:/@": "v"}


def test_tags_on_create_table(ddb, table_name, target):
    # CreateTable's Tags are listed by ListTagsOfResource.
    if target.is_ddblocal:
        pytest.skip("DynamoDB Local 3.3.0 does not support tagging")
    create(ddb, table_name, Tags=[{"Key": "k1", "Value": "v1"}, {"Key": "k2", "Value": "v2"}])
    arn = ddb.describe_table(TableName=table_name)["Table"]["TableArn"]
    assert _tags(ddb, arn, {"k1": "v1", "k2": "v2"}) == {"k1": "v1", "k2": "v2"}


def test_tags_errors(ddb, table_name, target):
    # Bad ARNs, ARNs of missing tables, empty or too many tags are refused.
    if target.is_ddblocal:
        pytest.skip("DynamoDB Local 3.3.0 does not support tagging")
    create(ddb, table_name)
    arn = ddb.describe_table(TableName=table_name)["Table"]["TableArn"]
    c = raw_client(target)
    with pytest.raises(ClientError) as ei:
        c.tag_resource(ResourceArn="not-an-arn", Tags=[{"Key": "k", "Value": "v"}])
    assert err(ei)[0] in ("ValidationException", "AccessDeniedException")
    with pytest.raises(ClientError) as ei:
        c.list_tags_of_resource(ResourceArn="not-an-arn")
    assert err(ei)[0] in ("ValidationException", "AccessDeniedException")
    with pytest.raises(ClientError) as ei:
        c.tag_resource(ResourceArn=arn + "x", Tags=[{"Key": "k", "Value": "v"}])  # well-formed, no such table
    assert err(ei)[0] == "ResourceNotFoundException"
    with pytest.raises(ClientError) as ei:
        c.list_tags_of_resource(ResourceArn=arn + "x")
    assert err(ei)[0] == "ResourceNotFoundException"
    with pytest.raises(ClientError) as ei:
        c.tag_resource(ResourceArn=arn, Tags=[])
    assert err(ei)[0] == "ValidationException"
    with pytest.raises(ClientError) as ei:
        c.tag_resource(ResourceArn=arn)
    assert err(ei)[0] == "ValidationException"
    with pytest.raises(ClientError) as ei:
        c.untag_resource(ResourceArn=arn)
    assert err(ei)[0] == "ValidationException"
    with pytest.raises(ClientError) as ei:  # more than 50 tags on one resource
        c.tag_resource(ResourceArn=arn, Tags=[{"Key": f"k{i}", "Value": "v"} for i in range(51)])
    assert err(ei)[0] == "ValidationException"
    with pytest.raises(ClientError) as ei:  # key longer than 128 characters
        c.tag_resource(ResourceArn=arn, Tags=[{"Key": "k" * 129, "Value": "v"}])
    assert err(ei)[0] == "ValidationException"
    with pytest.raises(ClientError) as ei:  # value longer than 256 characters
        c.tag_resource(ResourceArn=arn, Tags=[{"Key": "k", "Value": "v" * 257}])
    assert err(ei)[0] == "ValidationException"
    with pytest.raises(ClientError) as ei:  # characters outside the allowed set
        c.tag_resource(ResourceArn=arn, Tags=[{"Key": "!!!\\|", "Value": "<><"}])
    assert err(ei)[0] == "ValidationException"
    assert _tags(ddb, arn) == {}


# =========================================================================== account-level

def test_describe_limits(ddb):
    # DescribeLimits reports account and per-table capacity maxima (defaults: 80,000 and 40,000).
    r = ddb.describe_limits()
    for k in ("AccountMaxReadCapacityUnits", "AccountMaxWriteCapacityUnits",
              "TableMaxReadCapacityUnits", "TableMaxWriteCapacityUnits"):
        assert isinstance(r[k], int) and r[k] > 0
    assert r["TableMaxReadCapacityUnits"] <= r["AccountMaxReadCapacityUnits"]
    assert r["TableMaxWriteCapacityUnits"] <= r["AccountMaxWriteCapacityUnits"]


def test_describe_endpoints(ddb, target):
    # DescribeEndpoints names the endpoint to use and for how long (real DynamoDB: 1440 minutes).
    if target.is_ddblocal:
        with pytest.raises(ClientError) as ei:
            ddb.describe_endpoints()
        assert err(ei) == ("UnknownOperationException", "An unknown operation was requested.")
        pytest.skip("DynamoDB Local 3.3.0 does not implement DescribeEndpoints")
    r = ddb.describe_endpoints()
    (ep,) = r["Endpoints"]
    assert isinstance(ep["Address"], str) and ep["Address"]
    assert ep["CachePeriodInMinutes"] == 1440
