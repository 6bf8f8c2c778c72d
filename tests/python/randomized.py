#!/usr/bin/env python3
"""Randomized differential tester: random DynamoDB workloads, sent to two endpoints, compared.

A seed (random.Random(seed)) fully determines a sequence of logical operations: 1-2 random tables
(hash or hash+range keys of type S/N/B, sometimes LSIs/GSIs with KEYS_ONLY/INCLUDE/ALL projections,
PAY_PER_REQUEST or PROVISIONED), then 40-80 random PutItem / GetItem / UpdateItem / DeleteItem /
Query / Scan / BatchWriteItem / BatchGetItem requests over small key pools (so items collide, get
overwritten and queries return several items), about 10% of them deliberately invalid, and the
DeleteTable of every table. Each operation is sent to the expected endpoint (DynamoDB Local) and to
the actual endpoint (onggi); the responses are normalised with difflib_ddb.normalize and compared.
Queries and Scans are followed through LastEvaluatedKey to the end. Orders that legitimately differ
between servers are compared order-free (see build_view): Scan items as a multiset over all pages
(and all segments), BatchGetItem responses sorted, ties between equal index keys in index Queries
sorted. Base-table Query pages are compared page by page, exactly.

    python randomized.py --expected URL --actual URL                     # one random seed
    python randomized.py --expected URL --actual URL --count 50 --ops 120
    python randomized.py --seed 1234 --expected URL --actual URL         # replay one sequence
    python randomized.py --seed 1234 ... --minimize                       # shrink a failing one
    python randomized.py --seed 1234 ... --dump-sequence /tmp/x.json      # save as sequences/*.json
    python randomized.py --seed 1234 --print                              # generated ops, no server
    python randomized.py ... --ops-subset single                          # only Put/Get/Update/Delete

Tables are named rnd_<seed>_<n>; they are deleted on both endpoints before and after each sequence
(also when it fails). Two rules read the expected endpoint besides the compared requests: writes that
report capacity on tables with a composite GSI read their items before and after (GetItem), and an
UpdateItem failing differently on the two sides is probed action by action in a scratch table
rnd_<seed>_probe (see RULES, PAIR_RULES and the rules next to them: each deliberate difference is
listed there with its reason). A dumped sequence renames them diff_rnd_<seed>_<n> (the sequence-file rule)
and, unless --dump-reads is given, keeps only the writes, the table operations and the failing
operation: Scan and BatchGetItem results come in hash order, which a sequence file compares exactly.
"""

from __future__ import annotations

import argparse
import base64
import copy
import decimal
import difflib
import json
import os
import random
import re
import sys
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Callable

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import difflib_ddb as dd  # noqa: E402

MAX_PAGES = 100  # pagination safety net per Query/Scan (and per parallel-scan segment)
MAX_DEPTH = 4    # nesting of generated maps/lists

WRITE_OPS = ("PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem")
ITEM_OPS = ("PutItem", "GetItem", "UpdateItem", "DeleteItem", "Query", "Scan", "BatchWriteItem", "BatchGetItem")
OP_WEIGHTS = {"PutItem": 22, "UpdateItem": 16, "DeleteItem": 6, "GetItem": 12, "Query": 18, "Scan": 9,
              "BatchWriteItem": 7, "BatchGetItem": 7}
SUBSETS = {
    "all": ITEM_OPS,
    # what onggi supports today (table operations are always generated)
    "single": ("PutItem", "GetItem", "UpdateItem", "DeleteItem"),
}

# --------------------------------------------------------------------------- value pools

# Non-key attributes and the type items usually give them (85% of the time), so that conditions,
# updates and filters mostly meet the type they expect. Names not matching PLAIN_RE always go
# through #placeholders ("Status" is a reserved word, "x y" and "ünï" are not valid plain names).
ATTRS = [("a1", "N"), ("a2", "N"), ("cnt", "N"), ("b1", "S"), ("b2", "S"), ("bin", "B"), ("ss", "SS"),
         ("ns", "NS"), ("bs", "BS"), ("m", "M"), ("l", "L"), ("flag", "BOOL"), ("nul", "NULL"),
         ("Status", "S"), ("x y", "N"), ("ünï", "S")]
ATTR_TYPE = dict(ATTRS)
NUMERIC_ATTRS = [n for n, t in ATTRS if t == "N"]
SET_ATTRS = [n for n, t in ATTRS if t in ("SS", "NS", "BS")]
MAP_KEYS = ["k1", "k2", "k3", "Name", "x y"]
INDEX_ATTRS = ["g1", "g2", "g3", "g4"]
KEY_NAMES = [("pk", "sk"), ("id", "ts"), ("Name", "Date"), ("h1", "r1"), ("part", "sort")]
RESERVED_PLAIN = ["Status", "Name", "Date", "Size", "Count"]  # reserved words, used bare only to be refused
PLAIN_RE = re.compile(r"[a-z][0-9]")
TYPES = ["S", "N", "B", "SS", "NS", "BS", "M", "L", "NULL", "BOOL"]
SCALARS = ["S", "N", "B", "NULL", "BOOL"]
TYPE_NAMES = ["S", "N", "B", "SS", "NS", "BS", "M", "L", "NULL", "BOOL"]

S_POOL = ["a", "A", "ab", "abc", "b", "B", "a b", "z", "0", "10", "9", "é", "e\u0301", "ünïcödé", "日本語",
          "😀", "\uff61", "\uffff", "\u00a0", "tab\there", "line\nbreak", 'quo"te', "back\\slash", "Ω≈ç√",
          "a" * 40, "null", "true", "abcdef", "abd"]
S_CHARS = "abcxyzABC019 _-.é日😀\u00a0"
N_POOL = ["0", "1", "-1", "2", "10", "-10", "1.5", "-1.5", "0.1", "0.001", "3.14159", "100", "1000000", "42",
          "-0.5", "7", "1E-130", "-1E-130", "9.9999999999999999999999999999999999999E+125",
          "-9.9999999999999999999999999999999999999E+125", "12345678901234567890123456789012345678",
          "-12345678901234567890123456789012345678", "0.12345678901234567890123456789012345678", "1E+125",
          "123.456", "99999999999999999999"]
# Other spellings of numbers (the same value as a canonical one, or non-canonical forms).
N_FORMS = ["-0", "-0.0", "0.0", "1.0", "1.50", "1e2", "1E0", "01", "+7", ".5", "5.", "1000E-3", "0.00100"]
B_POOL = [b"\x00", b"\x00\x00", b"\x01", b"\x7f", b"\x80", b"\xfe\xff", b"\xff", b"\xff\xff", b"abc", b"a",
          b"ab", bytes(range(16))]
BAD_NUMBERS = ["1E+126", "-1E+126", "1E-131", "123456789012345678901234567890123456789", "abc", "", "1..2",
               "NaN", "Infinity", "0x10"]

_DEC = decimal.Context(prec=200)


def b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def av_sort_key(av: dict) -> Any:
    """Order of a key value: UTF-8 bytes for S, value for N, unsigned bytes for B."""
    (t, v), = av.items()
    if t == "S":
        return v.encode("utf-8")
    if t == "N":
        return Decimal(v)
    return base64.b64decode(v)


def key_identity(av: dict) -> Any:
    """What makes two key values the same key (1 and 1.0 are one number)."""
    (t, v), = av.items()
    return (t, Decimal(v)) if t == "N" else (t, v)


def canon_num(s: str) -> str:
    """A number the way DynamoDB Local prints stored numbers: value, no trailing zeros, no exponent."""
    try:
        d = Decimal(s)
    except decimal.InvalidOperation:
        return s
    if d.is_zero():
        return "0"
    return format(d.normalize(_DEC), "f")


def canon_json(v: Any) -> str:
    return json.dumps(v, sort_keys=True, ensure_ascii=False)


# --------------------------------------------------------------------------- model

@dataclass
class KeyAttr:
    name: str
    type: str


@dataclass
class Index:
    name: str
    kind: str  # "GSI" or "LSI"
    hash: KeyAttr
    range: KeyAttr | None
    projection: str  # KEYS_ONLY | INCLUDE | ALL
    include: list[str] = field(default_factory=list)


@dataclass
class Table:
    name: str
    hash: KeyAttr
    range: KeyAttr | None
    indexes: list[Index]
    billing: str
    types: dict[str, str]                 # every key attribute (table and indexes) -> S/N/B
    pools: dict[str, list[dict]]          # key attribute -> small pool of values

    def base_keys(self) -> list[KeyAttr]:
        return [self.hash] + ([self.range] if self.range else [])

    def index_only_attrs(self) -> list[str]:
        base = {k.name for k in self.base_keys()}
        return [n for n in self.types if n not in base]

    def lsi_attrs(self) -> list[str]:
        return [i.range.name for i in self.indexes if i.kind == "LSI" and i.range]

    def key_attr(self, name: str) -> KeyAttr:
        return KeyAttr(name, self.types[name])


@dataclass
class LOp:
    """One logical operation: a request, and how its responses are gathered and compared.

    mode: single | query (base table: pages compared exactly) | query_index (pages concatenated, ties
    between equal index keys sorted) | scan (items as a multiset over all pages) | pscan (parallel
    scan: request has TotalSegments, every segment followed to the end) | batch_get | batch_write.
    """
    op: str
    request: dict
    mode: str = "single"
    info: dict = field(default_factory=dict)
    invalid: str | None = None

    def to_json(self) -> dict:
        out = {"op": self.op, "mode": self.mode, "request": self.request}
        if self.info:
            out["info"] = self.info
        if self.invalid:
            out["invalid"] = self.invalid
        return out


class Expr:
    """ExpressionAttributeNames/Values of one request: placeholders are created as they are used."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.names: dict[str, str] = {}
        self.values: dict[str, dict] = {}

    def name(self, n: str) -> str:
        if PLAIN_RE.fullmatch(n) and self.rng.random() < 0.5:
            return n
        for ph, x in self.names.items():
            if x == n and self.rng.random() < 0.85:
                return ph
        ph = f"#n{len(self.names)}"
        self.names[ph] = n
        return ph

    def path(self, toks: list) -> str:
        out = ""
        for t in toks:
            if isinstance(t, int):
                out += f"[{t}]"
            else:
                out += ("." if out else "") + self.name(t)
        return out

    def value(self, v: dict) -> str:
        ph = f":v{len(self.values)}"
        self.values[ph] = v
        return ph

    def attach(self, req: dict) -> dict:
        if self.names:
            req["ExpressionAttributeNames"] = dict(self.names)
        if self.values:
            req["ExpressionAttributeValues"] = dict(self.values)
        return req


# --------------------------------------------------------------------------- generator

def resolve_subset(subset: str) -> tuple[str, ...]:
    if subset in SUBSETS:
        return SUBSETS[subset]
    ops = tuple(s.strip() for s in subset.split(",") if s.strip())
    bad = [o for o in ops if o not in ITEM_OPS]
    if bad or not ops:
        raise ValueError(f"--ops-subset: {subset!r}: use all, single, or a comma list of {', '.join(ITEM_OPS)}")
    return ops


class Generator:
    def __init__(self, seed: int, ops: int | None = None, subset: str = "all", invalid_rate: float = 0.1):
        self.seed = seed
        self.rng = random.Random(seed)
        self.allowed = resolve_subset(subset)
        self.invalid_rate = invalid_rate
        self.n_ops = ops if ops else self.rng.randint(40, 80)
        self.tables: list[Table] = []
        self.table_names: list[str] = []  # every name a CreateTable uses (cleaned up on both sides)
        self.missing_table = f"rnd_{seed}_missing"

    # ---------------------------------------------------------------- helpers

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def wchoice(self, pairs: list[tuple[Any, float]]) -> Any:
        return self.rng.choices([p[0] for p in pairs], [p[1] for p in pairs])[0]

    def new_name(self) -> str:
        n = f"rnd_{self.seed}_{len(self.table_names)}"
        self.table_names.append(n)
        return n

    # ---------------------------------------------------------------- values

    def rand_str(self, allow_empty: bool = True) -> str:
        if self.chance(0.6):
            s = self.rng.choice(S_POOL)
        else:
            s = "".join(self.rng.choice(S_CHARS) for _ in range(self.rng.randint(1, 10)))
        if allow_empty and self.chance(0.06):
            return ""
        return s

    def rand_num(self) -> str:
        r = self.rng.random()
        if r < 0.45:
            return self.rng.choice(N_POOL)
        if r < 0.6:
            return self.rng.choice(N_FORMS)
        if r < 0.8:
            return str(self.rng.randint(-1000, 1000))
        if r < 0.92:
            return f"{self.rng.randint(-10**6, 10**6)}.{self.rng.randint(0, 10**6):06d}"
        return f"{self.rng.randint(1, 999)}E{self.rng.randint(-40, 40)}"

    def rand_bytes(self, allow_empty: bool = True) -> bytes:
        if self.chance(0.6):
            b = self.rng.choice(B_POOL)
        else:
            b = bytes(self.rng.randrange(256) for _ in range(self.rng.randint(1, 12)))
        if allow_empty and self.chance(0.06):
            return b""
        return b

    def distinct(self, make: Callable[[], Any], ident: Callable[[Any], Any], n: int) -> list:
        out, seen = [], []
        for _ in range(n * 4):
            v = make()
            k = ident(v)
            if k not in seen:
                seen.append(k)
                out.append(v)
            if len(out) == n:
                break
        return out

    def value(self, t: str | None = None, depth: int = 0) -> dict:
        if t is None:
            t = self.rng.choice(TYPES if depth < MAX_DEPTH else SCALARS)
        if depth >= MAX_DEPTH and t in ("M", "L"):
            t = self.rng.choice(SCALARS)
        if t == "S":
            return {"S": self.rand_str()}
        if t == "N":
            return {"N": self.rand_num()}
        if t == "B":
            return {"B": b64(self.rand_bytes())}
        if t == "SS":
            return {"SS": self.distinct(lambda: self.rand_str(allow_empty=self.chance(0.1)), lambda s: s,
                                        self.rng.randint(1, 4))}
        if t == "NS":
            return {"NS": self.distinct(self.rand_num, lambda s: Decimal(s), self.rng.randint(1, 4))}
        if t == "BS":
            return {"BS": [b64(b) for b in self.distinct(lambda: self.rand_bytes(allow_empty=False), lambda b: b,
                                                         self.rng.randint(1, 3))]}
        if t == "M":
            keys = self.rng.sample(MAP_KEYS, self.rng.randint(0, 4))
            return {"M": {k: self.value(None, depth + 1) for k in keys}}
        if t == "L":
            return {"L": [self.value(None, depth + 1) for _ in range(self.rng.randint(0, 4))]}
        if t == "NULL":
            return {"NULL": True}
        return {"BOOL": self.chance(0.5)}

    def scalar_of(self, t: str | None) -> dict:
        """A value usable with ordering comparators: of type t when t is S/N/B."""
        if t not in ("S", "N", "B"):
            t = self.rng.choice(["S", "N", "B"])
        return self.value(t)

    def key_value(self, t: str) -> dict:
        if t == "S":
            return {"S": self.rand_str(allow_empty=False)}
        if t == "N":
            return {"N": canon_num(self.rng.choice(N_POOL) if self.chance(0.6) else str(self.rng.randint(-50, 50)))}
        return {"B": b64(self.rand_bytes(allow_empty=False))}

    def alias(self, av: dict) -> dict:
        """Sometimes another spelling of the same number (1 -> 1.0, 1E0, ...)."""
        if "N" not in av or not self.chance(0.15):
            return av
        s = av["N"]
        if len(s.replace("-", "").replace(".", "")) > 20:
            return av
        forms = [s + ("0" if "." in s else ".0"), s + "E0", format(Decimal(s), "E")]
        return {"N": self.rng.choice(forms)}

    def pool_value(self, t: Table, attr: str) -> dict:
        return self.alias(copy.deepcopy(self.rng.choice(t.pools[attr])))

    # ---------------------------------------------------------------- tables

    def gen_table(self) -> Table:
        name = self.new_name()
        hk, rk = self.rng.choice(KEY_NAMES)
        kt = [("S", 5), ("N", 3), ("B", 2)]
        h = KeyAttr(hk, self.wchoice(kt))
        r = KeyAttr(rk, self.wchoice(kt)) if self.chance(0.65) else None
        types = {h.name: h.type}
        if r:
            types[r.name] = r.type
        gtypes = {g: self.wchoice(kt) for g in INDEX_ATTRS}
        indexes: list[Index] = []

        def projection() -> tuple[str, list[str]]:
            p = self.rng.choice(["KEYS_ONLY", "INCLUDE", "ALL"])
            inc = [n for n, _ in self.rng.sample(ATTRS, self.rng.randint(1, 3))] if p == "INCLUDE" else []
            return p, inc

        if r and self.chance(0.35):
            for i, g in enumerate(self.rng.sample(INDEX_ATTRS, self.rng.randint(1, 2))):
                types.setdefault(g, gtypes[g])
                p, inc = projection()
                indexes.append(Index(f"lsi_{i}", "LSI", h, KeyAttr(g, types[g]), p, inc))
        if self.chance(0.5):
            cands = INDEX_ATTRS + [h.name] + ([r.name] if r else [])
            for i in range(self.rng.randint(1, 2)):
                gh = self.rng.choice(cands)
                types.setdefault(gh, gtypes.get(gh, "S"))
                gr = None
                if self.chance(0.6):
                    gr = self.rng.choice([c for c in cands if c != gh])
                    types.setdefault(gr, gtypes.get(gr, "S"))
                p, inc = projection()
                indexes.append(Index(f"gsi_{i}", "GSI", KeyAttr(gh, types[gh]),
                                     KeyAttr(gr, types[gr]) if gr else None, p, inc))
        billing = "PAY_PER_REQUEST" if self.chance(0.6) else "PROVISIONED"
        pools = {}
        for a, ty in types.items():
            n = self.rng.randint(3, 9) if (r and a == r.name) else self.rng.randint(2, 5)
            pools[a] = self.distinct(lambda: self.key_value(ty), key_identity, n)
        return Table(name, h, r, indexes, billing, types, pools)

    def throughput(self) -> dict:
        return {"ReadCapacityUnits": self.rng.randint(1, 20), "WriteCapacityUnits": self.rng.randint(1, 20)}

    def create_request(self, t: Table) -> dict:
        req: dict[str, Any] = {
            "TableName": t.name,
            "KeySchema": [{"AttributeName": t.hash.name, "KeyType": "HASH"}]
            + ([{"AttributeName": t.range.name, "KeyType": "RANGE"}] if t.range else []),
            "AttributeDefinitions": [{"AttributeName": n, "AttributeType": ty} for n, ty in t.types.items()],
        }
        for kind, member in (("LSI", "LocalSecondaryIndexes"), ("GSI", "GlobalSecondaryIndexes")):
            lst = []
            for ix in t.indexes:
                if ix.kind != kind:
                    continue
                d: dict[str, Any] = {
                    "IndexName": ix.name,
                    "KeySchema": [{"AttributeName": ix.hash.name, "KeyType": "HASH"}]
                    + ([{"AttributeName": ix.range.name, "KeyType": "RANGE"}] if ix.range else []),
                    "Projection": {"ProjectionType": ix.projection},
                }
                if ix.include:
                    d["Projection"]["NonKeyAttributes"] = list(ix.include)
                if kind == "GSI" and t.billing == "PROVISIONED":
                    d["ProvisionedThroughput"] = self.throughput()
                lst.append(d)
            if lst:
                req[member] = lst
        if t.billing == "PROVISIONED":
            req["ProvisionedThroughput"] = self.throughput()
            if self.chance(0.3):
                req["BillingMode"] = "PROVISIONED"
        else:
            req["BillingMode"] = "PAY_PER_REQUEST"
        return req

    def invalid_create_table(self) -> LOp:
        t = self.gen_table()
        req = self.create_request(t)
        kinds = ["missing_def", "unused_def", "bad_type", "keys_only_include"]
        if not t.range:
            kinds.append("lsi_hash_only")
        if t.indexes:
            kinds.append("dup_index")
        kind = self.rng.choice(kinds)
        if kind == "missing_def":
            req["AttributeDefinitions"] = req["AttributeDefinitions"][1:]
        elif kind == "unused_def":
            req["AttributeDefinitions"].append({"AttributeName": "unused", "AttributeType": "S"})
        elif kind == "bad_type":
            req["AttributeDefinitions"][0]["AttributeType"] = self.rng.choice(["BOOL", "SS", "M"])
        elif kind == "keys_only_include":
            req.setdefault("GlobalSecondaryIndexes", []).append({
                "IndexName": "gsi_bad", "KeySchema": [{"AttributeName": t.hash.name, "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "KEYS_ONLY", "NonKeyAttributes": ["a1"]}})
            if t.billing == "PROVISIONED":
                req["GlobalSecondaryIndexes"][-1]["ProvisionedThroughput"] = self.throughput()
        elif kind == "lsi_hash_only":
            req["AttributeDefinitions"].append({"AttributeName": "g9", "AttributeType": "S"})
            req["LocalSecondaryIndexes"] = [{
                "IndexName": "lsi_bad", "KeySchema": [{"AttributeName": t.hash.name, "KeyType": "HASH"},
                                                      {"AttributeName": "g9", "KeyType": "RANGE"}],
                "Projection": {"ProjectionType": "ALL"}}]
        elif kind == "dup_index":
            member = "GlobalSecondaryIndexes" if "GlobalSecondaryIndexes" in req else "LocalSecondaryIndexes"
            req[member].append(copy.deepcopy(req[member][0]))
        return LOp("CreateTable", req, invalid=f"CreateTable {kind}")

    # ---------------------------------------------------------------- sequence

    def sequence(self) -> list[LOp]:
        ops: list[LOp] = []
        for _ in range(1 if self.chance(0.65) else 2):
            t = self.gen_table()
            self.tables.append(t)
            ops.append(LOp("CreateTable", self.create_request(t)))
            if self.chance(0.3):
                ops.append(LOp("DescribeTable", {"TableName": t.name}))
        if self.chance(0.15):
            ops.append(self.invalid_create_table())
        weights = [OP_WEIGHTS[o] for o in self.allowed]
        for i in range(self.n_ops):
            if i < self.n_ops // 4 and any(o in self.allowed for o in ("PutItem", "BatchWriteItem")):
                op = self.rng.choice([o for o in ("PutItem", "PutItem", "BatchWriteItem") if o in self.allowed])
            else:
                op = self.rng.choices(self.allowed, weights)[0]
            t = self.rng.choice(self.tables)
            invalid = self.chance(self.invalid_rate)
            ops.append(getattr(self, "gen_" + op)(t, invalid))
        for t in self.tables:
            ops.append(LOp("DeleteTable", {"TableName": t.name}))
        return ops

    # ---------------------------------------------------------------- keys and items

    def key(self, t: Table) -> dict:
        return {k.name: self.pool_value(t, k.name) for k in t.base_keys()}

    def gen_item(self, t: Table) -> dict:
        item = self.key(t)
        for a in t.index_only_attrs():
            if self.chance(0.7):
                item[a] = self.pool_value(t, a)
        for name, ty in self.rng.sample(ATTRS, self.rng.randint(0, 5)):
            item[name] = self.value(ty if self.chance(0.85) else None)
        return item

    def wrong_type_value(self, ty: str) -> dict:
        """A value of another type than ty, and not empty (one error per invalid request)."""
        other = self.rng.choice([x for x in ("S", "N", "B", "SS", "BOOL", "NULL", "M") if x != ty])
        if other == "S":
            return {"S": self.rand_str(allow_empty=False)}
        if other == "B":
            return {"B": b64(self.rand_bytes(allow_empty=False))}
        return self.value(other)

    def mutate_key(self, key: dict, t: Table, allow_extra: bool = True) -> str:
        kinds = ["type", "missing", "empty"] + (["extra"] if allow_extra else [])
        kind = self.rng.choice(kinds)
        k = self.rng.choice(t.base_keys())
        if kind == "type":
            key[k.name] = self.wrong_type_value(k.type)
        elif kind == "missing":
            del key[k.name]
        elif kind == "empty":
            if k.type == "N":
                key[k.name] = {"N": self.rng.choice(BAD_NUMBERS)}
                return f"key {k.name} bad number"
            key[k.name] = {k.type: ""}
        else:
            key["a1"] = {"N": "1"}
        return f"key {kind} ({k.name})"

    def mutate_item(self, item: dict, t: Table) -> str:
        kinds = ["key", "bad_number", "empty_set", "dup_set", "two_types", "empty_av", "too_deep"]
        if t.index_only_attrs():
            kinds += ["index_type", "index_type"]
        kind = self.rng.choice(kinds)
        if kind == "key":
            return self.mutate_key(item, t, allow_extra=False)
        if kind == "bad_number":
            item[self.rng.choice(NUMERIC_ATTRS)] = {"N": self.rng.choice(BAD_NUMBERS)}
        elif kind == "empty_set":
            item[self.rng.choice(SET_ATTRS)] = {self.rng.choice(["SS", "NS", "BS"]): []}
        elif kind == "dup_set":
            item["ss" if self.chance(0.5) else "ns"] = self.rng.choice(
                [{"SS": ["a", "b", "a"]}, {"NS": ["1", "2", "1"]}, {"NS": ["1", "1.0"]}, {"BS": ["AA==", "AA=="]}])
        elif kind == "two_types":
            item["b1"] = {"S": "a", "N": "1"}
        elif kind == "empty_av":
            item["b1"] = {}
        elif kind == "too_deep":
            v: dict = {"S": "leaf"}
            for _ in range(33):
                v = {"M": {"k1": v}} if self.chance(0.5) else {"L": [v]}
            item["m"] = v
        elif kind == "index_type":
            a = self.rng.choice(t.index_only_attrs())
            ty = t.types[a]
            item[a] = {ty: ""} if ty != "N" and self.chance(0.3) else self.wrong_type_value(ty)
            return f"item index key {a} wrong type/empty"
        return f"item {kind}"

    # ---------------------------------------------------------------- paths, conditions

    def rand_path(self, t: Table, allow_keys: bool = False, top_only: bool = False,
                  exclude: list[str] | None = None, only: list[str] | None = None,
                  nested: float = 0.35) -> tuple[list, str | None]:
        """A document path and the usual type of its attribute (None for nested paths). only: the
        top-level attributes allowed (an index's projected attributes)."""
        exclude = exclude or []
        names = [n for n, _ in ATTRS if n not in exclude]
        if allow_keys:
            names += [n for n in t.types if n not in exclude]
        if only is not None:
            names = [n for n in names if n in only]
            if not names:
                names = [n for n in only if n not in exclude] or list(only)
        r = self.rng.random()
        nest_ok = [n for n in ("m", "l") if n in names]
        if top_only or r >= nested or not nest_ok:
            n = self.rng.choice(names)
            return [n], (ATTR_TYPE.get(n) or t.types.get(n))
        if "m" in nest_ok and (self.chance(0.65) or "l" not in nest_ok):
            toks: list = ["m", self.rng.choice(MAP_KEYS)]
            if self.chance(0.3):
                toks.append(self.rng.choice(MAP_KEYS) if self.chance(0.7) else self.rng.randint(0, 2))
            return toks, None
        toks = ["l", self.rng.randint(0, 4)]
        if self.chance(0.3):
            toks.append(self.rng.choice(MAP_KEYS))
        return toks, None

    def condition(self, t: Table, b: Expr, allow_keys: bool = True, exclude: list[str] | None = None,
                  depth: int = 0, only: list[str] | None = None) -> str:
        rng = self.rng
        if depth < 2 and rng.random() < 0.25:
            kind = rng.choice(["AND", "OR", "NOT", "PAREN"])
            if kind == "NOT":
                return "NOT " + self.condition(t, b, allow_keys, exclude, depth + 1, only)
            left = self.condition(t, b, allow_keys, exclude, depth + 1, only)
            right = self.condition(t, b, allow_keys, exclude, depth + 1, only)
            if kind == "PAREN":  # parentheses around a compound (around an atom they are "redundant")
                return f"({left} {rng.choice(['AND', 'OR'])} {right})"
            return f"{left} {kind} {right}"
        toks, ty = self.rand_path(t, allow_keys=allow_keys, exclude=exclude, only=only)
        p = b.path(toks)
        like = ty if (ty and rng.random() < 0.8) else None
        atom = rng.choice(["cmp", "cmp", "cmp", "cmp_path", "between", "in", "exists", "not_exists", "type",
                           "begins", "contains", "size"])
        if atom == "cmp":
            op = rng.choice(["=", "<>", "<", "<=", ">", ">="])
            v = self.value(like) if op in ("=", "<>") else self.scalar_of(like)
            return f"{p} {op} {b.value(v)}" if rng.random() < 0.9 else f"{b.value(v)} {op} {p}"
        if atom == "cmp_path":
            # Two different paths: comparing a path with itself ("a >= a") is refused statically
            # ("The first operand must be distinct from the second operand"), a second error that
            # would compete with the deliberate one of an invalid step (DynamoDB Local and onggi
            # then disagree on which error wins).
            toks2 = toks
            for _ in range(4):
                toks2, _ = self.rand_path(t, allow_keys=allow_keys, exclude=exclude, only=only)
                if toks2 != toks:
                    break
            if toks2 != toks:
                return f"{p} {rng.choice(['=', '<>', '<', '>='])} {b.path(toks2)}"
            atom = "cmp"
        if atom == "cmp":
            op = rng.choice(["=", "<>", "<", "<=", ">", ">="])
            v = self.value(like) if op in ("=", "<>") else self.scalar_of(like)
            return f"{p} {op} {b.value(v)}" if rng.random() < 0.9 else f"{b.value(v)} {op} {p}"
        if atom == "between":
            t0 = like if like in ("S", "N", "B") else rng.choice(["S", "N", "B"])
            lo, hi = sorted([self.value(t0), self.value(t0)], key=av_sort_key)
            return f"{p} BETWEEN {b.value(lo)} AND {b.value(hi)}"
        if atom == "in":
            vals = [b.value(self.value(like) if rng.random() < 0.7 else self.value())
                    for _ in range(rng.randint(1, 4))]
            return f"{p} IN ({', '.join(vals)})"
        if atom == "exists":
            return f"attribute_exists({p})"
        if atom == "not_exists":
            return f"attribute_not_exists({p})"
        if atom == "type":
            tn = like if (like and rng.random() < 0.6) else rng.choice(TYPE_NAMES)
            return f"attribute_type({p}, {b.value({'S': tn})})"
        if atom == "begins":
            v = {"B": b64(self.rand_bytes()[:2])} if like == "B" else {"S": self.rand_str()[:2]}
            return f"begins_with({p}, {b.value(v)})"
        if atom == "contains":
            v = self.value(rng.choice(["S", "N", "B"]))
            return f"contains({p}, {b.value(v)})"
        op = rng.choice(["=", "<", "<=", ">", ">=", "<>"])
        return f"size({p}) {op} {b.value({'N': str(rng.randint(0, 6))})}"

    def projection(self, t: Table, b: Expr, include_keys: bool = True, only: list[str] | None = None) -> str:
        paths, tops = [], []
        for _ in range(self.rng.randint(1, 4)):
            toks, _ = self.rand_path(t, allow_keys=include_keys, exclude=tops, only=only)
            if toks[0] in tops:
                continue
            tops.append(toks[0])
            paths.append(b.path(toks))
        return ", ".join(paths)

    def projected(self, t: Table, ix: Index | None) -> list[str] | None:
        """Attributes an index read can use without being refused (None: all), most of the time;
        sometimes None anyway, so that the "does not project" validation is exercised too."""
        if ix is None or ix.projection == "ALL" or self.chance(0.1):
            return None
        keys = [k.name for k in t.base_keys()] + [ix.hash.name] + ([ix.range.name] if ix.range else [])
        return list(dict.fromkeys(keys + list(ix.include)))

    def return_capacity(self, req: dict) -> None:
        rcc = self.wchoice([(None, 5), ("NONE", 1), ("TOTAL", 2), ("INDEXES", 2)])
        if rcc:
            req["ReturnConsumedCapacity"] = rcc

    def write_options(self, req: dict, t: Table, has_cond: bool) -> None:
        self.return_capacity(req)
        if self.chance(0.15):
            req["ReturnItemCollectionMetrics"] = self.rng.choice(["SIZE", "NONE"])
        if has_cond and self.chance(0.25):
            req["ReturnValuesOnConditionCheckFailure"] = self.rng.choice(["ALL_OLD", "NONE"])

    def write_condition(self, t: Table, b: Expr) -> str:
        r = self.rng.random()
        if r < 0.15:
            return f"attribute_not_exists({b.name(t.hash.name)})"
        if r < 0.25:
            return f"attribute_exists({b.name(t.hash.name)})"
        return self.condition(t, b)

    # ---------------------------------------------------------------- invalid expressions

    def mutate_expr(self, req: dict, slots: list[str]) -> str:
        """Break the expressions of a request in one way (slots: members that may carry a condition
        or a projection; the first one is created when the request has none)."""
        rng = self.rng
        names = req.setdefault("ExpressionAttributeNames", {})
        values = req.setdefault("ExpressionAttributeValues", {})
        present = [s for s in slots if s in req] or slots[:1]
        slot = rng.choice(present)
        is_proj = slot == "ProjectionExpression"
        kind = rng.choice(["unused_value", "unused_name", "undefined_value", "undefined_name", "reserved",
                           "syntax", "bad_function", "bad_operand", "bad_type_name"])
        if is_proj and kind in ("undefined_value", "bad_function", "bad_operand", "bad_type_name"):
            kind = rng.choice(["undefined_name", "reserved", "syntax", "overlap"])
        if kind in ("bad_operand", "bad_type_name") and not slot.endswith("ConditionExpression") \
                and slot != "FilterExpression":
            kind = "bad_function"
        term = None
        if kind == "unused_value":
            values[":unused"] = {"S": "x"}
        elif kind == "unused_name":
            names["#unused"] = "a1"
        elif kind == "undefined_value":
            term = "a1 = :undefined"
        elif kind == "undefined_name":
            term = "#undefined" if is_proj else "attribute_exists(#undefined)"
        elif kind == "reserved":
            w = rng.choice(RESERVED_PLAIN)
            term = w if is_proj else f"attribute_exists({w})"
        elif kind == "overlap":
            # exactly one overlapping pair: the projection's own paths never overlap, and the added
            # pair uses an attribute the projection does not name yet
            tops = {names.get(x, x) for x in re.findall(r"(?:^|,)\s*([^.,\[\s]+)", req.get(slot) or "")}
            free = [x for x in ("a1", "a2", "b1", "b2", "cnt") if x not in tops]
            if "m" not in tops and (rng.random() < 0.5 or not free):
                term = "m, m.k1"
            else:
                x = rng.choice(free)
                term = f"{x}, {x}"
        elif kind == "bad_function":
            term = rng.choice(["attribute_exist(a1)", "size(a1)", "begins_with(a1)", "contains(a1, a2, b1)",
                               "if_not_exists(a1, a2)", "attribute_type(a1)"])
        elif kind == "bad_operand":
            names["#bo"] = "b1"
            values[":bo"] = rng.choice([{"N": "1"}, {"M": {}}, {"BOOL": True}])
            term = rng.choice(["begins_with(#bo, :bo)", "#bo < :bo AND #bo > :bo", "#bo BETWEEN :bo AND :bo"])
            if values[":bo"].get("N") is not None and term.startswith("#bo"):
                values[":bo"] = {"M": {}}
        elif kind == "bad_type_name":
            names["#bt"] = "b1"
            values[":bt"] = {"S": rng.choice(["XX", "s", "STRING", ""])}
            term = "attribute_type(#bt, :bt)"
        if kind == "syntax":
            e = req.get(slot) or ("a1" if is_proj else "attribute_exists(a1)")
            req[slot] = rng.choice([e + " AND", "(" + e, e + ")", e + ",", e.replace(" ", "  = ", 1)
                                    if " " in e else e + " ="])
        elif term is not None:
            e = req.get(slot)
            if is_proj:
                req[slot] = f"{e}, {term}" if e else term
            else:
                req[slot] = f"({e}) AND {term}" if e else term
        if not names:
            del req["ExpressionAttributeNames"]
        if not values:
            del req["ExpressionAttributeValues"]
        return f"expression {kind} in {slot}"

    def capacity_info(self, lop: LOp, tables: list[Table]) -> None:
        """For writes that may report index capacity: the key and composite GSI keys of their tables
        (rule gsi-partial-key-capacity needs the item before and after the write)."""
        if lop.request.get("ReturnConsumedCapacity") not in ("TOTAL", "INDEXES"):
            return
        out = {}
        for tt in tables:
            gsis = {ix.name: [ix.hash.name, ix.range.name] for ix in tt.indexes if ix.kind == "GSI" and ix.range}
            if gsis:
                out[tt.name] = {"key": [k.name for k in tt.base_keys()], "gsis": gsis}
        if out:
            lop.info["composite_gsis"] = out

    def index_info(self, lop: LOp, t: Table) -> None:
        """The key attributes of t's indexes (rule index-named-in-hash-order)."""
        lop.info["index_keys"] = {ix.name: [ix.hash.name] + ([ix.range.name] if ix.range else []) for ix in t.indexes}

    # ---------------------------------------------------------------- single-item ops

    def gen_PutItem(self, t: Table, invalid: bool) -> LOp:
        b = Expr(self.rng)
        req: dict[str, Any] = {"TableName": t.name, "Item": self.gen_item(t)}
        has_cond = self.chance(0.35)
        if has_cond:
            req["ConditionExpression"] = self.write_condition(t, b)
        rv = self.wchoice([(None, 3), ("NONE", 1), ("ALL_OLD", 3)])
        if rv:
            req["ReturnValues"] = rv
        self.write_options(req, t, has_cond)
        b.attach(req)
        lop = LOp("PutItem", req)
        self.capacity_info(lop, [t])
        if invalid:
            kind = self.rng.choice(["item", "item", "table", "expr", "return_values"])
            if kind == "item":
                lop.invalid = self.mutate_item(req["Item"], t)
                self.index_info(lop, t)
            elif kind == "table":
                req["TableName"] = self.missing_table
                lop.invalid = "missing table"
            elif kind == "expr":
                lop.invalid = self.mutate_expr(req, ["ConditionExpression"])
            else:
                req["ReturnValues"] = self.rng.choice(["ALL_NEW", "UPDATED_OLD", "UPDATED_NEW"])
                lop.invalid = "ReturnValues not allowed for PutItem"
        return lop

    def gen_GetItem(self, t: Table, invalid: bool) -> LOp:
        b = Expr(self.rng)
        req: dict[str, Any] = {"TableName": t.name, "Key": self.key(t)}
        if self.chance(0.3):
            req["ProjectionExpression"] = self.projection(t, b)
        cr = self.wchoice([(None, 2), (True, 1), (False, 1)])
        if cr is not None:
            req["ConsistentRead"] = cr
        self.return_capacity(req)
        b.attach(req)
        lop = LOp("GetItem", req)
        if invalid:
            kind = self.rng.choice(["key", "key", "table", "expr"])
            if kind == "key":
                lop.invalid = self.mutate_key(req["Key"], t)
            elif kind == "table":
                req["TableName"] = self.missing_table
                lop.invalid = "missing table"
            else:
                lop.invalid = self.mutate_expr(req, ["ProjectionExpression"])
        return lop

    def gen_DeleteItem(self, t: Table, invalid: bool) -> LOp:
        b = Expr(self.rng)
        req: dict[str, Any] = {"TableName": t.name, "Key": self.key(t)}
        has_cond = self.chance(0.35)
        if has_cond:
            req["ConditionExpression"] = self.write_condition(t, b)
        rv = self.wchoice([(None, 3), ("NONE", 1), ("ALL_OLD", 3)])
        if rv:
            req["ReturnValues"] = rv
        self.write_options(req, t, has_cond)
        b.attach(req)
        lop = LOp("DeleteItem", req)
        self.capacity_info(lop, [t])
        if invalid:
            kind = self.rng.choice(["key", "key", "table", "expr", "return_values"])
            if kind == "key":
                lop.invalid = self.mutate_key(req["Key"], t)
            elif kind == "table":
                req["TableName"] = self.missing_table
                lop.invalid = "missing table"
            elif kind == "expr":
                lop.invalid = self.mutate_expr(req, ["ConditionExpression"])
            else:
                req["ReturnValues"] = self.rng.choice(["ALL_NEW", "UPDATED_OLD", "UPDATED_NEW"])
                lop.invalid = "ReturnValues not allowed for DeleteItem"
        return lop

    def update_actions(self, t: Table, b: Expr) -> tuple[str, list[list]]:
        """A valid-looking UpdateExpression; each action on its own top-level attribute (no overlap)."""
        rng = self.rng
        used: list[str] = []
        clauses: dict[str, list[str]] = {"SET": [], "REMOVE": [], "ADD": [], "DELETE": []}
        paths: list[list] = []
        index_attrs = t.index_only_attrs()
        lsi = t.lsi_attrs()
        for _ in range(rng.randint(1, 4)):
            action = self.wchoice([("SET", 55), ("REMOVE", 18), ("ADD", 15), ("DELETE", 8), ("INDEX", 8)])
            if action == "INDEX":
                free = [a for a in index_attrs if a not in used]
                if not free:
                    continue
                a = rng.choice(free)
                used.append(a)
                paths.append([a])
                if rng.random() < 0.75:
                    # Always the index key's own type: UpdateItem giving an LSI key the wrong type is
                    # accepted by DynamoDB Local but refused by DynamoDB and onggi (index_keys/36).
                    clauses["SET"].append(f"{b.name(a)} = {b.value(self.pool_value(t, a))}")
                else:
                    clauses["REMOVE"].append(b.name(a))
                continue
            if action == "ADD":
                cands = [n for n in NUMERIC_ATTRS + SET_ATTRS if n not in used]
                if not cands:
                    continue
                a = rng.choice(cands)
                ty = ATTR_TYPE[a]
                v = {"N": self.rng.choice(["1", "-1", "2", "0.5", "10", "1E-130", "-3.25"])} if ty == "N" \
                    else self.value(ty)
                used.append(a)
                paths.append([a])
                clauses["ADD"].append(f"{b.name(a)} {b.value(v)}")
                continue
            if action == "DELETE":
                cands = [n for n in SET_ATTRS if n not in used]
                if not cands:
                    continue
                a = rng.choice(cands)
                used.append(a)
                paths.append([a])
                clauses["DELETE"].append(f"{b.name(a)} {b.value(self.value(ATTR_TYPE[a]))}")
                continue
            toks, ty = self.rand_path(t, exclude=used, nested=0.12)
            if toks[0] in used:
                continue
            used.append(toks[0])
            paths.append(toks)
            p = b.path(toks)
            if action == "REMOVE":
                clauses["REMOVE"].append(p)
                continue
            kind = rng.choice(["value", "value", "value", "path", "if_not_exists", "append", "arith"])
            # list_append on lists, arithmetic on numbers (nested paths: either), mostly
            if kind == "append" and ty not in (None, "L") and rng.random() < 0.9:
                kind = "value"
            if kind == "arith" and ty not in (None, "N") and rng.random() < 0.9:
                kind = "value"
            if kind == "path":
                toks2, _ = self.rand_path(t)
                rhs = b.path(toks2)
                if rng.random() < 0.5:
                    rhs = f"if_not_exists({rhs}, {b.value(self.value(ty))})"
            elif kind == "if_not_exists":
                rhs = f"if_not_exists({p}, {b.value(self.value(ty))})"
            elif kind == "append" or (ty == "L" and rng.random() < 0.5):
                lv = b.value({"L": [self.value(None, 2) for _ in range(rng.randint(0, 2))]})
                inner = p if rng.random() < 0.7 else f"if_not_exists({p}, {b.value({'L': []})})"
                rhs = f"list_append({inner}, {lv})" if rng.random() < 0.6 else f"list_append({lv}, {inner})"
            elif kind == "arith" or (ty == "N" and rng.random() < 0.4):
                n = b.value({"N": rng.choice(["1", "2", "-1", "0.5", "1.5", "100", "0.25", "1E-130",
                                              "9.9999999999999999999999999999999999999E+125"])})
                left = p if rng.random() < 0.4 else f"if_not_exists({p}, {b.value({'N': '0'})})"
                rhs = f"{left} {rng.choice(['+', '-'])} {n}" if rng.random() < 0.8 else f"{n} - {left}"
            else:
                rhs = b.value(self.value(ty if (ty and rng.random() < 0.85) else None))
            clauses["SET"].append(f"{p} = {rhs}")
        if not any(clauses.values()):
            a = rng.choice([n for n, _ in ATTRS])
            clauses["SET"].append(f"{b.name(a)} = {b.value(self.value(ATTR_TYPE[a]))}")
            paths.append([a])
        order = [k for k in clauses if clauses[k]]
        rng.shuffle(order)
        expr = " ".join(f"{k} {', '.join(clauses[k])}" for k in order)
        self.last_actions = [[k, a] for k in order for a in clauses[k]]
        return expr, paths

    def gen_UpdateItem(self, t: Table, invalid: bool) -> LOp:
        b = Expr(self.rng)
        req: dict[str, Any] = {"TableName": t.name, "Key": self.key(t)}
        expr, paths = self.update_actions(t, b)
        req["UpdateExpression"] = expr
        has_cond = self.chance(0.35)
        if has_cond:
            req["ConditionExpression"] = self.write_condition(t, b)
        rv = self.wchoice([(None, 3), ("NONE", 1), ("ALL_OLD", 2), ("ALL_NEW", 2), ("UPDATED_OLD", 2),
                           ("UPDATED_NEW", 2)])
        if rv:
            req["ReturnValues"] = rv
        self.write_options(req, t, has_cond)
        b.attach(req)
        lop = LOp("UpdateItem", req, info={"update_paths": paths, "update_actions": self.last_actions})
        self.capacity_info(lop, [t])
        if invalid:
            kinds = ["key", "table", "expr", "update_key", "overlap", "update_syntax", "add_type", "delete_type"]
            gsi_only = [a for a in t.index_only_attrs() if a not in t.lsi_attrs()]
            if gsi_only:
                kinds.append("gsi_type")
            kind = self.rng.choice(kinds)
            names = req.setdefault("ExpressionAttributeNames", {})
            values = req.setdefault("ExpressionAttributeValues", {})
            if kind == "key":
                lop.invalid = self.mutate_key(req["Key"], t)
            elif kind == "table":
                req["TableName"] = self.missing_table
                lop.invalid = "missing table"
            elif kind == "expr":
                lop.invalid = self.mutate_expr(req, ["ConditionExpression"])
            else:
                if kind == "update_key":
                    k = self.rng.choice(t.base_keys())
                    names["#key"], values[":key"] = k.name, self.key_value(k.type)
                    extra = "SET #key = :key" if "SET" not in expr else None
                    req["UpdateExpression"] = extra + " " + expr if extra else expr.replace("SET ", "SET #key = :key, ", 1)
                    # No condition: DynamoDB Local checks the condition before refusing a key update
                    # (a failing one answers ConditionalCheckFailedException), onggi refuses statically
                    # as DynamoDB does; the step is meant to carry this one error.
                    req.pop("ConditionExpression", None)
                    req.pop("ReturnValuesOnConditionCheckFailure", None)
                elif kind == "overlap":
                    names["#ov"], values[":ov"] = "a1", {"N": "1"}
                    req["UpdateExpression"] = self.rng.choice(["SET #ov = :ov REMOVE #ov", "SET #ov = :ov, #ov = :ov",
                                                               "ADD #ov :ov SET #ov = :ov"])
                elif kind == "update_syntax":
                    names["#sy"], values[":sy"] = "a1", {"N": "1"}
                    req["UpdateExpression"] = self.rng.choice(
                        ["SET #sy :sy", "ADD #sy", "SET #sy = :sy SET #sy = :sy", "REMOVE #sy = :sy", "SET #sy = ",
                         "DELETE #sy", "SET #sy = size(#sy)", "SET #sy = :sy + ", "SET #sy = list_append(:sy)",
                         "UPSERT #sy = :sy", "SET #sy = #sy + :sy + :sy + :sy AND :sy"])
                elif kind == "add_type":
                    names["#at"], values[":at"] = self.rng.choice(NUMERIC_ATTRS), self.value(self.rng.choice(["S", "M", "L", "BOOL"]))
                    req["UpdateExpression"] = "ADD #at :at"
                elif kind == "delete_type":
                    names["#dt"], values[":dt"] = self.rng.choice(SET_ATTRS), self.value(self.rng.choice(["S", "N", "L"]))
                    req["UpdateExpression"] = "DELETE #dt :dt"
                elif kind == "gsi_type":
                    a = self.rng.choice(gsi_only)
                    names["#gt"], values[":gt"] = a, self.wrong_type_value(t.types[a])
                    req["UpdateExpression"] = "SET #gt = :gt"
                lop.invalid = f"update {kind}"
                # placeholders of the original expression are now unused: keep only those referenced
                _drop_unused_placeholders(req)
            if not names:
                req.pop("ExpressionAttributeNames", None)
            if not values:
                req.pop("ExpressionAttributeValues", None)
        return lop

    # ---------------------------------------------------------------- Query / Scan

    def index_for_read(self, t: Table, p: float) -> Index | None:
        return self.rng.choice(t.indexes) if t.indexes and self.chance(p) else None

    def select_and_projection(self, req: dict, t: Table, b: Expr, ix: Index | None) -> None:
        sel = self.wchoice([(None, 11), ("COUNT", 3), ("ALL_ATTRIBUTES", 2), ("SPECIFIC_ATTRIBUTES", 2),
                            ("ALL_PROJECTED_ATTRIBUTES", 2 if ix else 0)])
        if sel == "ALL_ATTRIBUTES" and ix and ix.kind == "GSI" and ix.projection != "ALL":
            sel = None
        if sel in (None, "SPECIFIC_ATTRIBUTES") and (sel or self.chance(0.25)):
            req["ProjectionExpression"] = self.projection(t, b, only=self.projected(t, ix))
        if sel:
            req["Select"] = sel

    def bad_select(self, req: dict, t: Table, ix: Index | None) -> str:
        opts = ["specific_without_projection", "count_with_projection", "all_with_projection", "bogus"]
        if not ix:
            opts.append("projected_on_table")
        elif ix.kind == "GSI" and ix.projection != "ALL":
            opts.append("all_on_gsi")
        kind = self.rng.choice(opts)
        req.pop("Select", None)
        if kind == "specific_without_projection":
            req.pop("ProjectionExpression", None)
            req["Select"] = "SPECIFIC_ATTRIBUTES"
        elif kind in ("count_with_projection", "all_with_projection"):
            req["ProjectionExpression"] = "a1, b1"
            req["Select"] = "COUNT" if kind.startswith("count") else "ALL_ATTRIBUTES"
        elif kind == "bogus":
            req["Select"] = "EVERYTHING"
        elif kind == "projected_on_table":
            req.pop("ProjectionExpression", None)
            req["Select"] = "ALL_PROJECTED_ATTRIBUTES"
        else:
            req.pop("ProjectionExpression", None)
            req["Select"] = "ALL_ATTRIBUTES"
        _drop_unused_placeholders(req)
        return f"Select {kind}"

    def range_condition(self, t: Table, b: Expr, r: KeyAttr, allow_begins_on_n: bool = False) -> str:
        """A sort-key condition; its operator and values are left in self.last_range (for the rule
        query-lek-at-inclusive-bound)."""
        rng = self.rng
        pool = t.pools[r.name]
        pick = (lambda: self.alias(copy.deepcopy(rng.choice(pool)))) if rng.random() < 0.8 \
            else (lambda: self.key_value(r.type))
        ops = ["=", "<", "<=", ">", ">=", "BETWEEN", "begins_with"]
        op = rng.choice(ops)
        if op == "begins_with" and r.type == "N" and not allow_begins_on_n:
            op = rng.choice(ops[:-1])
        n = b.name(r.name)
        if op == "BETWEEN":
            lo, hi = sorted([pick(), pick()], key=av_sort_key)
            self.last_range = {"attr": r.name, "op": op, "values": [lo, hi]}
            return f"{n} BETWEEN {b.value(lo)} AND {b.value(hi)}"
        self.last_range = {"attr": r.name, "op": op}
        if op == "begins_with":
            v = pick()
            if "S" in v:
                v = {"S": v["S"][:rng.randint(1, max(1, len(v["S"])))]}
            elif "B" in v:
                raw = base64.b64decode(v["B"])
                v = {"B": b64(raw[:rng.randint(1, max(1, len(raw)))])}
            return f"begins_with({n}, {b.value(v)})"
        v = pick()
        self.last_range["values"] = [v]
        return f"{n} {op} {b.value(v)}"

    def gen_Query(self, t: Table, invalid: bool) -> LOp:
        rng = self.rng
        b = Expr(rng)
        ix = self.index_for_read(t, 0.45)
        h, r = (ix.hash, ix.range) if ix else (t.hash, t.range)
        req: dict[str, Any] = {"TableName": t.name}
        if ix:
            req["IndexName"] = ix.name
        parts = [f"{b.name(h.name)} = {b.value(self.pool_value(t, h.name))}"]
        range_cond = None
        if r and rng.random() < 0.55:
            parts.append(self.range_condition(t, b, r))
            range_cond = self.last_range
            if rng.random() < 0.15:
                parts.reverse()
        if rng.random() < 0.1:
            parts = [f"({x})" for x in parts]
        req["KeyConditionExpression"] = " AND ".join(parts)
        if rng.random() < 0.3:
            req["ScanIndexForward"] = rng.random() < 0.3
        if rng.random() < 0.4:
            req["Limit"] = rng.randint(1, 5)
        keys = list(t.types)
        only = self.projected(t, ix)
        if rng.random() < 0.3 and (only is None or any(n not in keys for n in only)):
            req["FilterExpression"] = self.condition(t, b, allow_keys=False, exclude=keys, only=only)
        self.select_and_projection(req, t, b, ix)
        if rng.random() < 0.2 and not (ix and ix.kind == "GSI"):
            req["ConsistentRead"] = rng.random() < 0.8
        self.return_capacity(req)
        b.attach(req)
        lop = LOp("Query", req, mode="query_index" if ix else "query",
                  info={"tie_attr": r.name if r else None, "lsi": ix.kind == "LSI"} if ix else {})
        if range_cond:
            lop.info["range_cond"] = range_cond
        if invalid:
            kinds = ["index_name", "select", "key_cond", "filter_key", "limit0", "esk", "table", "expr"]
            if t.indexes and any(i.kind == "GSI" for i in t.indexes):
                kinds.append("consistent_gsi")
            kind = rng.choice(kinds)
            lop.invalid = self.mutate_read(lop, t, ix, kind)
        return lop

    def mutate_read(self, lop: LOp, t: Table, ix: Index | None, kind: str) -> str:
        rng = self.rng
        req = lop.request
        names = req.setdefault("ExpressionAttributeNames", {})
        values = req.setdefault("ExpressionAttributeValues", {})
        out = kind
        if kind == "index_name":
            req["IndexName"] = rng.choice(["nope_idx", "gsi_9", "lsi_9"])
        elif kind == "consistent_gsi":
            g = rng.choice([i for i in t.indexes if i.kind == "GSI"])
            if lop.op == "Query" and req.get("IndexName") != g.name:
                # the key condition must fit the index: rebuild it on g's hash key
                names["#ch"], values[":ch"] = g.hash.name, self.pool_value(t, g.hash.name)
                req["KeyConditionExpression"] = "#ch = :ch"
                req.pop("FilterExpression", None)
                req.pop("Select", None)
                req.pop("ProjectionExpression", None)
                _drop_unused_placeholders(req)
                lop.mode = "query_index"
                lop.info = {"tie_attr": g.range.name if g.range else None}
            req["IndexName"] = g.name
            req["ConsistentRead"] = True
        elif kind == "select":
            out = self.bad_select(req, t, ix)
        elif kind == "key_cond":
            h, r = (ix.hash, ix.range) if ix else (t.hash, t.range)
            sub = rng.choice(["non_key", "no_hash", "hash_op", "between_reversed", "begins_on_n", "or", "two_range"]
                             if r else ["non_key", "no_hash", "hash_op", "or"])
            names["#kh"], values[":kh"] = h.name, self.pool_value(t, h.name)
            if sub == "non_key":
                names["#kx"], values[":kx"] = "b1", {"S": "a"}
                kc = "#kh = :kh AND #kx = :kx"
            elif sub == "no_hash":
                names["#kx"], values[":kx"] = (r.name, self.pool_value(t, r.name)) if r else ("b1", {"S": "a"})
                kc = "#kx = :kx"
            elif sub == "hash_op":
                kc = f"#kh {rng.choice(['<', '>=', '<>'])} :kh"
            elif sub == "or":
                kc = "#kh = :kh OR #kh = :kh"
            elif sub == "between_reversed":
                vals = sorted(self.distinct(lambda: copy.deepcopy(rng.choice(t.pools[r.name])), key_identity, 2),
                              key=av_sort_key)
                if len(vals) < 2:
                    vals = [self.key_value(r.type), self.key_value(r.type)]
                names["#kr"], values[":lo"], values[":hi"] = r.name, vals[-1], vals[0]
                kc = "#kh = :kh AND #kr BETWEEN :lo AND :hi"
            elif sub == "begins_on_n":
                names["#kr"], values[":kr"] = r.name, {"N": "1"} if r.type != "N" else self.pool_value(t, r.name)
                if r.type != "N":
                    values[":kr"] = {"N": "1"}
                kc = "#kh = :kh AND begins_with(#kr, :kr)"
            else:
                names["#kr"], values[":kr"] = r.name, self.pool_value(t, r.name)
                kc = "#kh = :kh AND #kr > :kr AND #kr < :kr"
            req["KeyConditionExpression"] = kc
            _drop_unused_placeholders(req)
            out = f"KeyCondition {sub}"
        elif kind == "filter_key":
            k = rng.choice(list(t.types))
            names["#fk"], values[":fk"] = k, self.pool_value(t, k)
            req["FilterExpression"] = "#fk = :fk"
            _drop_unused_placeholders(req)
        elif kind == "limit0":
            req["Limit"] = rng.choice([0, -1])
        elif kind == "esk":
            esk = {t.hash.name: self.pool_value(t, t.hash.name)}
            sub = rng.choice(["missing_attr", "extra_attr", "wrong_type"])
            if sub == "extra_attr":
                esk = self.key(t)
                esk["b1"] = {"S": "x"}
            elif sub == "wrong_type":
                esk = self.key(t)
                esk[t.hash.name] = self.wrong_type_value(t.hash.type)
            elif not t.range and (not ix or (ix.hash.name == t.hash.name and not ix.range)):
                # {hash} alone would be the whole key (of the table, or of a GSI keyed by the table's
                # hash key only): name an attribute of no key instead, so the step stays invalid.
                esk = {"b1": {"S": "x"}}
            req["ExclusiveStartKey"] = esk
            out = f"ExclusiveStartKey {sub}"
        elif kind == "table":
            req["TableName"] = self.missing_table
        elif kind == "segment":
            sub = rng.choice(["no_total", "no_segment", "segment_too_big", "total0", "total_huge", "negative"])
            req.pop("TotalSegments", None)
            if sub == "no_total":
                req["Segment"] = 0
            elif sub == "no_segment":
                req["TotalSegments"] = 2
            elif sub == "segment_too_big":
                req["TotalSegments"], req["Segment"] = 2, 2
            elif sub == "total0":
                req["TotalSegments"], req["Segment"] = 0, 0
            elif sub == "total_huge":
                req["TotalSegments"], req["Segment"] = 1000001, 0
            else:
                req["TotalSegments"], req["Segment"] = 2, -1
            lop.mode = "scan"
            out = f"Segment {sub}"
        if not names:
            req.pop("ExpressionAttributeNames", None)
        if not values:
            req.pop("ExpressionAttributeValues", None)
        if kind == "expr":
            slots = ["FilterExpression", "ProjectionExpression"]
            if lop.op == "Query":
                slots.append("KeyConditionExpression")
            out = self.mutate_expr(req, slots)
        return out

    def gen_Scan(self, t: Table, invalid: bool) -> LOp:
        rng = self.rng
        b = Expr(rng)
        ix = self.index_for_read(t, 0.2)
        req: dict[str, Any] = {"TableName": t.name}
        if ix:
            req["IndexName"] = ix.name
        if rng.random() < 0.35:
            req["Limit"] = rng.randint(1, 6)
        if rng.random() < 0.4:
            req["FilterExpression"] = self.condition(t, b, allow_keys=True, only=self.projected(t, ix))
        self.select_and_projection(req, t, b, ix)
        if rng.random() < 0.15 and not (ix and ix.kind == "GSI"):
            req["ConsistentRead"] = True
        mode = "scan"
        if rng.random() < 0.2:
            req["TotalSegments"] = rng.randint(2, 4)
            mode = "pscan"
        self.return_capacity(req)
        b.attach(req)
        lop = LOp("Scan", req, mode=mode, info={"lsi": True} if ix and ix.kind == "LSI" else {})
        if invalid:
            kinds = ["index_name", "select", "segment", "segment", "limit0", "esk", "table", "expr"]
            if any(i.kind == "GSI" for i in t.indexes):
                kinds.append("consistent_gsi")
            lop.invalid = self.mutate_read(lop, t, ix, rng.choice(kinds))
        return lop

    # ---------------------------------------------------------------- batches

    def unique_keys(self, t: Table, n: int) -> list[dict]:
        """n keys with distinct hash values (outside the pools), for over-sized batches."""
        out = []
        for i in range(n):
            k = self.key(t)
            ty = t.hash.type
            k[t.hash.name] = {"S": f"many{i}"} if ty == "S" else {"N": str(5000 + i)} if ty == "N" \
                else {"B": b64(b"many" + i.to_bytes(2, "big"))}
            out.append(k)
        return out

    def distinct_keys(self, t: Table, n: int) -> list[dict]:
        return self.distinct(lambda: self.key(t), lambda k: tuple(key_identity(k[a.name]) for a in t.base_keys()), n)

    def gen_BatchWriteItem(self, t: Table, invalid: bool) -> LOp:
        rng = self.rng
        tables = [t] + ([x for x in self.tables if x is not t][:1] if rng.random() < 0.3 else [])
        items: dict[str, list] = {}
        for tt in tables:
            reqs = []
            for k in self.distinct_keys(tt, rng.randint(1, 6)):
                if rng.random() < 0.7:
                    item = self.gen_item(tt)
                    item.update(k)
                    reqs.append({"PutRequest": {"Item": item}})
                else:
                    reqs.append({"DeleteRequest": {"Key": k}})
            items[tt.name] = reqs
        req: dict[str, Any] = {"RequestItems": items}
        self.return_capacity(req)
        if rng.random() < 0.15:
            req["ReturnItemCollectionMetrics"] = "SIZE"
        lop = LOp("BatchWriteItem", req, mode="batch_write")
        self.capacity_info(lop, tables)
        if invalid:
            kind = rng.choice(["dup", "empty", "too_many", "table", "key", "item", "both", "no_tables"])
            lst = items[t.name]
            if kind == "dup":
                lst.append(copy.deepcopy(lst[0]))
            elif kind == "empty":
                items[t.name] = []
            elif kind == "too_many":
                keys = self.unique_keys(t, 26)
                items[t.name] = [{"DeleteRequest": {"Key": k}} if i % 2 else {"PutRequest": {"Item": k}}
                                 for i, k in enumerate(keys)]
            elif kind == "table":
                items[self.missing_table] = items.pop(t.name)
            elif kind == "key":
                dk = self.key(t)
                kind += " " + self.mutate_key(dk, t)
                lst.append({"DeleteRequest": {"Key": dk}})
            elif kind == "item":
                item = self.gen_item(t)
                kind += " " + self.mutate_item(item, t)
                self.index_info(lop, t)
                lst.append({"PutRequest": {"Item": item}})
            elif kind == "both":
                lst[0] = {"PutRequest": {"Item": self.gen_item(t)}, "DeleteRequest": {"Key": self.key(t)}}
            else:
                req["RequestItems"] = {}
            lop.invalid = f"BatchWriteItem {kind}"
        return lop

    def gen_BatchGetItem(self, t: Table, invalid: bool) -> LOp:
        rng = self.rng
        tables = [t] + ([x for x in self.tables if x is not t][:1] if rng.random() < 0.3 else [])
        items: dict[str, dict] = {}
        for tt in tables:
            ka: dict[str, Any] = {"Keys": self.distinct_keys(tt, rng.randint(1, 6))}
            if rng.random() < 0.3:
                b = Expr(rng)
                ka["ProjectionExpression"] = self.projection(tt, b)
                if b.values:
                    b.values.clear()
                b.attach(ka)
            if rng.random() < 0.4:
                ka["ConsistentRead"] = rng.random() < 0.5
            items[tt.name] = ka
        req: dict[str, Any] = {"RequestItems": items}
        self.return_capacity(req)
        lop = LOp("BatchGetItem", req, mode="batch_get")
        if invalid:
            kind = rng.choice(["dup", "empty", "too_many", "table", "key", "projection", "no_tables"])
            ka = items[t.name]
            if kind == "dup":
                ka["Keys"].append(copy.deepcopy(ka["Keys"][0]))
            elif kind == "empty":
                ka["Keys"] = []
            elif kind == "too_many":
                ka["Keys"] = self.unique_keys(t, 101)
            elif kind == "table":
                items[self.missing_table] = items.pop(t.name)
            elif kind == "key":
                k = self.key(t)
                kind += " " + self.mutate_key(k, t)
                ka["Keys"].append(k)
            elif kind == "projection":
                ka["ProjectionExpression"] = rng.choice(["a1,", "a1 a2", "#undefined", "a1, a1", "Status"])
                ka.pop("ExpressionAttributeNames", None)
            else:
                req["RequestItems"] = {}
            lop.invalid = f"BatchGetItem {kind}"
        return lop


_PH_RE = re.compile(r"[#:][A-Za-z0-9_]+")


def _drop_unused_placeholders(req: dict) -> None:
    """Remove names/values no expression of req references any more (after a mutation replaced one)."""
    text = " ".join(str(req.get(k, "")) for k in ("UpdateExpression", "ConditionExpression", "FilterExpression",
                                                   "KeyConditionExpression", "ProjectionExpression"))
    used = set(_PH_RE.findall(text))
    for member in ("ExpressionAttributeNames", "ExpressionAttributeValues"):
        if member in req:
            kept = {k: v for k, v in req[member].items() if k in used}
            if kept:
                req[member] = kept
            else:
                del req[member]


def generate(seed: int, ops: int | None = None, subset: str = "all") -> tuple[list[LOp], list[str]]:
    g = Generator(seed, ops, subset)
    lops = g.sequence()
    return lops, list(g.table_names)


# --------------------------------------------------------------------------- execution

@dataclass
class Page:
    request: dict
    response: dd.Response


def execute(endpoint: str, lop: LOp) -> list[Page]:
    """Send a logical operation; Queries and Scans are followed through LastEvaluatedKey to the end
    (each segment of a parallel scan too)."""
    if lop.mode in ("query", "query_index", "scan", "pscan"):
        segments = [None]
        if lop.mode == "pscan":
            segments = list(range(lop.request["TotalSegments"]))
        pages: list[Page] = []
        for seg in segments:
            req = dict(lop.request)
            if seg is not None:
                req["Segment"] = seg
            for _ in range(MAX_PAGES):
                r = dd.send(endpoint, lop.op, req)
                pages.append(Page(req, r))
                body = r.json
                if r.status != 200 or not isinstance(body, dict) or "LastEvaluatedKey" not in body:
                    break
                req = dict(req, ExclusiveStartKey=body["LastEvaluatedKey"])
        return pages
    return [Page(lop.request, dd.send(endpoint, lop.op, lop.request))]


def cleanup(endpoint: str, names: list[str]) -> None:
    dd.cleanup_tables(endpoint, set(names))


# --------------------------------------------------------------------------- normalisation rules

@dataclass
class Rule:
    name: str
    reason: str
    apply: Callable[[LOp, dict], dict]  # (operation, normalised response) -> normalised response
    fired: int = 0


def _rule_delete_capacity(lop: LOp, v: dict) -> dict:
    if lop.op == "DeleteItem" and lop.request.get("ReturnConsumedCapacity", "NONE") == "NONE" \
            and "ConsumedCapacity" in v.get("body", {}):
        v = copy.deepcopy(v)
        del v["body"]["ConsumedCapacity"]
        if not v["body"]:
            del v["body"]
    return v


def _rule_updated_nested(lop: LOp, v: dict) -> dict:
    paths = lop.info.get("update_paths") or []
    if lop.op != "UpdateItem" or lop.request.get("ReturnValues") not in ("UPDATED_OLD", "UPDATED_NEW") \
            or not any(len(p) > 1 for p in paths) or "Attributes" not in v.get("body", {}):
        return v
    v = copy.deepcopy(v)
    projected = project(v["body"]["Attributes"], paths)
    if projected:
        v["body"]["Attributes"] = projected
    else:
        del v["body"]["Attributes"]
        if not v["body"]:
            del v["body"]
    return v


def _rule_index_order(lop: LOp, v: dict) -> dict:
    body = v.get("body")
    if lop.op not in ("CreateTable", "DescribeTable", "DeleteTable", "UpdateTable") or not isinstance(body, dict):
        return v
    v = copy.deepcopy(v)
    for member in ("Table", "TableDescription"):
        desc = v["body"].get(member)
        if isinstance(desc, dict):
            for k in ("LocalSecondaryIndexes", "GlobalSecondaryIndexes"):
                if isinstance(desc.get(k), list):
                    desc[k] = sorted(desc[k], key=lambda ix: str(ix.get("IndexName")) if isinstance(ix, dict) else "")
    return v


def _mask_units(cc: Any, indexes_too: bool) -> Any:
    """ConsumedCapacity (object or list) with the table's CapacityUnits (and the total) masked."""
    if isinstance(cc, list):
        return [_mask_units(c, indexes_too) for c in cc]
    if not isinstance(cc, dict):
        return cc
    out = dict(cc)
    for k in ("CapacityUnits", "ReadCapacityUnits", "WriteCapacityUnits"):
        if k in out:
            out[k] = "<masked>"
    if isinstance(out.get("Table"), dict):
        out["Table"] = _mask_units(out["Table"], indexes_too)
    if indexes_too:
        for k in ("GlobalSecondaryIndexes", "LocalSecondaryIndexes"):
            if isinstance(out.get(k), dict):
                out[k] = {n: _mask_units(c, True) for n, c in out[k].items()}
    return out


def _rule_lsi_fetch_capacity(lop: LOp, v: dict) -> dict:
    body = v.get("body")
    if not lop.info.get("lsi") or not isinstance(body, dict) or not isinstance(body.get("ConsumedCapacity"), dict):
        return v
    return dict(v, body=dict(body, ConsumedCapacity=_mask_units(body["ConsumedCapacity"], False)))


def _rule_batch_capacity(lop: LOp, v: dict) -> dict:
    body = v.get("body")
    if not isinstance(body, dict) or "ConsumedCapacity" not in body:
        return v
    if lop.op == "BatchGetItem":
        indexes_too = True
    elif lop.op == "BatchWriteItem" and any(
            isinstance(w, dict) and "DeleteRequest" in w
            for ws in (lop.request.get("RequestItems") or {}).values() if isinstance(ws, list) for w in ws):
        indexes_too = False
    else:
        return v
    return dict(v, body=dict(body, ConsumedCapacity=_mask_units(body["ConsumedCapacity"], indexes_too)))


_LIST_IN_MESSAGE = re.compile(r"(does not project(?: one or more filter attributes:)? )\[([^\]]*)\]")


def _rule_message_list_order(lop: LOp, v: dict) -> dict:
    m = v.get("message")
    if isinstance(m, str) and _LIST_IN_MESSAGE.search(m):
        m2 = _LIST_IN_MESSAGE.sub(lambda x: x.group(1) + "[" + ", ".join(sorted(x.group(2).split(", "))) + "]", m)
        if m2 != m:
            v = dict(v, message=m2)
    return v


_OVERLAP = "Two document paths overlap with each other; must remove or rewrite one of these paths;"


def _rule_overlap_message(lop: LOp, v: dict) -> dict:
    m = v.get("message")
    if lop.op == "UpdateItem" and isinstance(m, str) and _OVERLAP in m:
        v = dict(v, message=m[:m.index(_OVERLAP) + len(_OVERLAP)] + " <paths>")
    return v


# Known, deliberate differences between DynamoDB Local and onggi (who follows real DynamoDB), applied
# symmetrically to both sides (so that two DynamoDB Locals still agree) before comparing. Keep short;
# each rule says why. (deliberate_differences.json names steps of fixed sequences: it cannot name
# random steps, hence this list.)
RULES = [
    Rule("delete-unrequested-capacity",
         "DynamoDB Local's DeleteItem of a missing item returns ConsumedCapacity although none was "
         "requested (tests/python/README.md); DynamoDB returns it only when asked.",
         _rule_delete_capacity),
    Rule("overlap-message-paths",
         "Overlapping update paths across clauses: DynamoDB Local's message names the wrong second path "
         "(tests/python/README.md); only the message up to the paths is compared.",
         _rule_overlap_message),
    Rule("index-order",
         "Table descriptions list secondary indexes in an order that carries no meaning: DynamoDB Local "
         "uses a Java hash order independent of the declared one (onggi keeps the declared order). "
         "Compared sorted by IndexName.",
         _rule_index_order),
    Rule("batch-capacity",
         "Capacity of batches: DynamoDB Local charges nothing for BatchGetItem keys it does not find and "
         "2.0 for a BatchWriteItem delete of a missing item (tests/python/README.md); onggi charges per "
         "item as DynamoDB documents. Units masked in BatchGetItem, and in BatchWriteItem with a "
         "DeleteRequest (index units still compared there).",
         _rule_batch_capacity),
    Rule("lsi-fetch-capacity",
         "Reads on a local index: onggi charges the table for exactly the base items it fetches (its "
         "choice: \"LSI reads that fetch base items charge the fetches to the table\"); DynamoDB Local "
         "charges fetches for a ProjectionExpression of projected attributes "
         "and none for a Scan with Select ALL_ATTRIBUTES. Table units masked, index units compared.",
         _rule_lsi_fetch_capacity),
    Rule("message-list-order",
         "\"... does not project [a, b]\" lists a set of attribute names: DynamoDB Local prints it in Java "
         "hash order. Compared sorted.",
         _rule_message_list_order),
]

# Error messages known to differ on purpose: (op regex, expected message regex, actual message regex,
# reason). When DynamoDB Local answers the first and onggi the second (same status and type), the pair
# counts as equal. Only for messages documented as DynamoDB Local departures that onggi does not copy.
MESSAGE_PAIRS = [
    ("Query|Scan", r"Type mismatch for attribute to update",
     r"The provided starting key is invalid: The provided key element does not match the schema",
     "ExclusiveStartKey value of the wrong type: DynamoDB Local reuses an UpdateItem message "
     "(tests/python/README.md, query_validation/66); onggi answers DynamoDB's."),
    ("Scan", r"1 validation error detected: Value '-1' at 'segment' failed to satisfy constraint: "
             r"Member must have value less than or equal to \d+",
     r"1 validation error detected: Value '-1' at 'segment' failed to satisfy constraint: "
     r"Member must have value greater than or equal to 0",
     "Scan Segment -1: DynamoDB Local's constraint text is wrong (tests/python/README.md, "
     "query_validation/84); onggi answers DynamoDB's."),
    ("Scan", r"1 validation error detected: Value '0' at 'segment' failed to satisfy constraint: "
             r"Member must have value less than or equal to -1",
     r"1 validation error detected: Value '0' at 'totalSegments' failed to satisfy constraint: "
     r"Member must have value greater than or equal to 1",
     "Scan TotalSegments 0: DynamoDB Local names segment and a bound of -1 (tests/python/README.md, "
     "query_validation/85); onggi answers DynamoDB's."),
]
MESSAGE_RULE = Rule("known-messages", "error messages documented to differ on purpose (MESSAGE_PAIRS)",
                    lambda lop, v: v)


def reconcile_messages(lop: LOp, e: Any, a: Any) -> Any:
    if not (isinstance(e, dict) and isinstance(a, dict)) or e.get("status") != a.get("status") \
            or e.get("__type") != a.get("__type"):
        return e
    em, am = e.get("message"), a.get("message")
    if not (isinstance(em, str) and isinstance(am, str)) or em == am:
        return e
    for op_re, exp_re, act_re, _reason in MESSAGE_PAIRS:
        if re.fullmatch(op_re, lop.op) and re.fullmatch(exp_re, em) and re.fullmatch(act_re, am):
            MESSAGE_RULE.fired += 1
            return dict(e, message=am)
    return e
# Not a rule on one response but on the pair (reconcile_numbers): DynamoDB Local returns some numbers
# non-canonically: arithmetic results keep BigDecimal scale (1.5 + 0.5 -> "2.0"; tests/python/README.md),
# and numbers nested in maps and lists keep the client's spelling ("01", "1E0", "8.74E-15"; top-level
# ones are canonical). DynamoDB stores numbers, not spellings: onggi returns the canonical form.
NUMBER_RULE = Rule("canonical-numbers", "DynamoDB Local returns arithmetic results with BigDecimal scale "
                   "and nested numbers as spelled; DynamoDB (and onggi) return canonical numbers.",
                   lambda lop, v: v)


# --------------------------------------------------------------------------- rules on pairs of answers
# Each accepts one known way in which DynamoDB Local's answer (expected) departs from onggi's
# (actual), and only when the actual answer is the other, documented one: an onggi departure in the
# other direction still counts, and two DynamoDB Locals never trigger them.

@dataclass
class PairRule:
    name: str
    reason: str
    apply: Callable[..., Any]  # (operation, expected view, actual view, context) -> new expected view or None
    fired: int = 0


UNUSED_DEFINITION = ("The number of attributes in key schema must match the number of attributes defined in "
                     "attribute definitions.")


def _pair_unused_definition(lop: LOp, e: Any, a: Any, ctx: dict | None) -> Any:
    if lop.op == "CreateTable" and lop.invalid == "CreateTable unused_def" and e.get("status") == 200 \
            and a.get("status") == 400 and str(a.get("__type")).endswith("#ValidationException") \
            and a.get("message") == UNUSED_DEFINITION:
        return a
    return None


GSI_UNITS_PER_ITEM = 4  # bound of an item's GSI write charge in these workloads (items stay under 4 KB)


def _has_key(item: dict | None, attrs: list[str]) -> bool:
    return item is not None and all(x in item for x in attrs)


def _spurious_gsis(table_info: dict, states: list[tuple[Any, Any]]) -> dict[str, int]:
    """Composite GSI name -> number of written items that hold part of its key but are in it neither
    before nor after the write (those DynamoDB Local may charge)."""
    out = {}
    for g, attrs in table_info["gsis"].items():
        n = sum(1 for old, new in states
                if not _has_key(old, attrs) and not _has_key(new, attrs)
                and any(x in (item or {}) for item in (old, new) for x in attrs))
        if n:
            out[g] = n
    return out


def _units(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def _fix_gsi_capacity(ecc: dict, acc: dict, spurious: dict[str, int]) -> dict:
    ecc = copy.deepcopy(ecc)
    eg, ag = ecc.get("GlobalSecondaryIndexes"), acc.get("GlobalSecondaryIndexes") or {}
    if isinstance(eg, dict):
        extra = 0.0
        for g, n in spurious.items():
            if g not in eg or not isinstance(eg[g], dict):
                continue
            eu = _units(eg[g].get("CapacityUnits"))
            au = _units(ag[g].get("CapacityUnits")) if isinstance(ag.get(g), dict) else 0.0
            if eu is None or au is None or not (0 < eu - au <= n * GSI_UNITS_PER_ITEM) or eu - au != int(eu - au):
                continue
            extra += eu - au
            if g in ag:
                eg[g] = copy.deepcopy(ag[g])
            else:
                del eg[g]
        if not eg:
            del ecc["GlobalSecondaryIndexes"]
        if extra and _units(ecc.get("CapacityUnits")) is not None:
            ecc["CapacityUnits"] = ecc["CapacityUnits"] - extra
    elif "GlobalSecondaryIndexes" not in acc:  # TOTAL: only the sum
        eu, au = _units(ecc.get("CapacityUnits")), _units(acc.get("CapacityUnits"))
        if eu is not None and au is not None and 0 < eu - au <= sum(spurious.values()) * GSI_UNITS_PER_ITEM \
                and eu - au == int(eu - au):
            ecc["CapacityUnits"] = acc["CapacityUnits"]
    return ecc


def _pair_gsi_partial_key(lop: LOp, e: Any, a: Any, ctx: dict | None) -> Any:
    states = (ctx or {}).get("gsi_states")
    if not states or e.get("status") != 200 or a.get("status") != 200:
        return None
    ecc, acc = (e.get("body") or {}).get("ConsumedCapacity"), (a.get("body") or {}).get("ConsumedCapacity")
    info = lop.info.get("composite_gsis") or {}

    def fix(ec: Any, ac: Any) -> Any:
        if not (isinstance(ec, dict) and isinstance(ac, dict)) or ec == ac:
            return ec
        name = ec.get("TableName")
        if name != ac.get("TableName") or name not in states or name not in info:
            return ec
        spurious = _spurious_gsis(info[name], states[name])
        return _fix_gsi_capacity(ec, ac, spurious) if spurious else ec

    if isinstance(ecc, dict):
        new = fix(ecc, acc)
    elif isinstance(ecc, list) and isinstance(acc, list) and len(ecc) == len(acc):
        new = [fix(x, y) for x, y in zip(ecc, acc)]
    else:
        return None
    return dict(e, body=dict(e["body"], ConsumedCapacity=new)) if new != ecc else None


_INDEX_NAMED = re.compile(r"(.*IndexName: )([^,]+)(, IndexKey: )(.+)", re.S)


def _pair_index_named(lop: LOp, e: Any, a: Any, ctx: dict | None) -> Any:
    keys = lop.info.get("index_keys")
    if not keys or e.get("status") != a.get("status") or e.get("__type") != a.get("__type"):
        return None
    em, am = _INDEX_NAMED.fullmatch(str(e.get("message"))), _INDEX_NAMED.fullmatch(str(a.get("message")))
    if not (em and am) or (em[1], em[3], em[4]) != (am[1], am[3], am[4]) or em[2] == am[2]:
        return None
    if all(am[4] in keys.get(ix, []) for ix in (em[2], am[2])):
        return dict(e, message=a["message"])
    return None


def _pair_updated_nested(lop: LOp, e: Any, a: Any, ctx: dict | None) -> Any:
    if lop.op != "UpdateItem" or lop.request.get("ReturnValues") not in ("UPDATED_OLD", "UPDATED_NEW") \
            or e.get("status") != 200 or a.get("status") != 200:
        return None
    pe = reconcile_numbers(_rule_updated_nested(lop, e), a)
    if pe == a:
        return a
    pa = _rule_updated_nested(lop, a)
    return a if pa != a and reconcile_numbers(pe, pa) == pa else None


PAIR_RULES = [
    PairRule("updated-nested-paths",
             "UPDATED_OLD/UPDATED_NEW with nested update paths: DynamoDB returns only the paths written, inside "
             "their parents (list elements closed up: SET l[1] on [x, y] returns l: [new]); DynamoDB Local returns "
             "whole top-level attributes (deliberate_differences.json updates/8). Accepted when DynamoDB Local's "
             "Attributes projected onto the written paths equal onggi's (or both projected are equal).",
             _pair_updated_nested),
    PairRule("index-named-in-hash-order",
             "An item whose attribute is an empty key of several indexes: the message names one index "
             "(\"... IndexName: gsi_1, IndexKey: g2\"); DynamoDB Local checks the indexes in Java HashMap order "
             "(gsi_1 before gsi_0, ix_a before ix_b, whatever the declared order), onggi in declared order. "
             "Accepted when the messages differ only in the index named and both indexes have that key.",
             _pair_index_named),
    PairRule("unused-definition-accepted",
             "CreateTable with an attribute definition no key schema uses: DynamoDB Local accepts it when an "
             "LSI and a GSI share a key attribute (it counts that attribute twice); DynamoDB and onggi refuse "
             "it (\"The number of attributes in key schema must match ...\"). Only the generator's deliberate "
             "unused_def step has such a definition.",
             _pair_unused_definition),
    PairRule("gsi-partial-key-capacity",
             "A write of an item that holds part of a composite GSI key but is in that index neither before "
             "nor after (e.g. old item has only the GSI hash key, new one only its range key): DynamoDB Local "
             "charges the GSI a write, onggi charges nothing as nothing is written to the index. Only that "
             "GSI's units (and the total) may be higher on DynamoDB Local's side, by at most "
             f"{GSI_UNITS_PER_ITEM} per such item; the items before and after are read from DynamoDB Local.",
             _pair_gsi_partial_key),
]


def reconcile_pairs(lop: LOp, e: Any, a: Any, ctx: dict | None) -> Any:
    for rule in PAIR_RULES:
        if e == a or not (isinstance(e, dict) and isinstance(a, dict)):
            break
        w = rule.apply(lop, e, a, ctx)
        if w is not None and w != e:
            rule.fired += 1
            e = w
    return e


def _lek_at_inclusive_bound(lop: LOp, exp: list[Page], act: list[Page]) -> list[Page] | None:
    """act without its last (empty) page and the LastEvaluatedKey that led to it, when that key is the
    inclusive end bound of the sort-key condition and DynamoDB Local (exp) stopped there."""
    rc = lop.info.get("range_cond")
    if lop.op != "Query" or lop.invalid or not rc or "Limit" not in lop.request or len(act) != len(exp) + 1 \
            or len(act) < 2:
        return None
    forward = lop.request.get("ScanIndexForward", True) is not False
    if not (rc["op"] == "BETWEEN" or (rc["op"] == "<=" and forward) or (rc["op"] == ">=" and not forward)):
        return None
    bound = rc["values"][-1] if forward else rc["values"][0]
    if any(p.response.status != 200 for p in exp + act):
        return None
    last, extra, exp_last = act[-2].response.json, act[-1].response.json, exp[-1].response.json
    if not all(isinstance(x, dict) for x in (last, extra, exp_last)) or "LastEvaluatedKey" in exp_last \
            or "LastEvaluatedKey" in extra or extra.get("Count") != 0 or extra.get("Items"):
        return None
    lek = last.get("LastEvaluatedKey")
    if not isinstance(lek, dict) or not isinstance(lek.get(rc["attr"]), dict):
        return None
    try:
        if key_identity(lek[rc["attr"]]) != key_identity(bound):
            return None
    except (ValueError, decimal.InvalidOperation):
        return None
    body = {k: v for k, v in last.items() if k != "LastEvaluatedKey"}
    fixed = Page(act[-2].request, dd.Response(act[-2].response.status, act[-2].response.headers, json.dumps(body)))
    return act[:-2] + [fixed]


LEK_RULE = Rule("query-lek-at-inclusive-bound",
                "Query with Limit whose page ends exactly on the inclusive end bound of the sort-key condition "
                "(<= forward, >= backward, BETWEEN's end in the read direction): DynamoDB Local knows nothing "
                "can follow and omits LastEvaluatedKey (not for =, <, > or begins_with); onggi returns it and then "
                "an empty page, which DynamoDB documents as allowed (\"If LastEvaluatedKey is not empty, it does "
                "not necessarily mean that there is more data\"). That key and the empty page are dropped from "
                "onggi's pages.",
                lambda lop, v: v)


UPDATE_PRECEDENCE_RULE = Rule(
    "update-error-precedence",
    "UpdateItem whose actions fail in several ways on the item (a SET operand reading a missing attribute, a "
    "target path that cannot be written, an operand of the wrong type): DynamoDB Local reports the error of "
    "the action whose target attribute comes first in reverse Java HashMap order of the names (SET z = c, "
    "y = s + :n reports z's error, SET y = c, z = s + :n z's too; b/q/y rank y > b > q), which neither "
    "DynamoDB documents nor onggi copies (onggi reports the first in textual order). Accepted when each "
    "side's error is the error one of the actions gives alone (probed one action at a time on a copy of the "
    "item in a scratch table on DynamoDB Local).",
    lambda lop, v: v)


def apply_rules(lop: LOp, v: dict) -> dict:
    for rule in RULES:
        w = rule.apply(lop, v)
        if w != v:
            rule.fired += 1
        v = w
    return v


def project(attrs: dict, paths: list[list]) -> dict:
    """ProjectionExpression semantics on an item: the values at paths, inside their parents (list
    elements kept in index order)."""
    tree: dict = {}

    def get(av: Any, toks: list) -> Any:
        for t in toks:
            if isinstance(t, int):
                if not isinstance(av, dict) or "L" not in av or t >= len(av["L"]):
                    return None
                av = av["L"][t]
            else:
                if not isinstance(av, dict) or "M" not in av or t not in av["M"]:
                    return None
                av = av["M"][t]
        return av

    for p in paths:
        if p[0] not in attrs:
            continue
        v = get(attrs[p[0]], p[1:])
        if v is None:
            continue
        node = tree
        full = [p[0]] + list(p[1:])
        for i, t in enumerate(full):
            last = i == len(full) - 1
            if last:
                node[t] = ("leaf", v)
            else:
                kind = "L" if isinstance(full[i + 1], int) else "M"
                cur = node.get(t)
                if not (isinstance(cur, tuple) and cur[0] == kind):
                    if isinstance(cur, tuple) and cur[0] == "leaf":
                        break  # a parent is already projected whole
                    cur = (kind, {})
                    node[t] = cur
                node = cur[1]

    def build(n: Any) -> Any:
        kind, content = n
        if kind == "leaf":
            return content
        if kind == "M":
            return {"M": {k: build(c) for k, c in content.items()}}
        return {"L": [build(content[i]) for i in sorted(content)]}

    return {k: build(n) for k, n in tree.items()}


def _canon_numbers(v: Any) -> Any:
    if isinstance(v, dict):
        if len(v) == 1 and isinstance(v.get("N"), str):
            return {"N": canon_num(v["N"])}
        if len(v) == 1 and isinstance(v.get("NS"), list):
            return {"NS": sorted(canon_num(x) for x in v["NS"])}
        return {k: _canon_numbers(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_canon_numbers(x) for x in v]
    return v


def item_order_key(item: Any) -> str:
    return canon_json(_canon_numbers(item))


def reconcile_numbers(e: Any, a: Any) -> Any:
    """Expected (DynamoDB Local) numbers that are not in canonical form ("2.0" from arithmetic, "01" or
    "1E0" nested in a map or list) replaced by actual's spelling where actual has the canonical
    spelling of the same number. Numbers actual spells non-canonically are still differences."""
    if isinstance(e, dict) and isinstance(a, dict):
        if len(e) == 1 and len(a) == 1 and isinstance(e.get("N"), str) and isinstance(a.get("N"), str):
            if e["N"] != a["N"] and not _is_canonical(e["N"]) and canon_num(e["N"]) == a["N"]:
                NUMBER_RULE.fired += 1
                return dict(a)
            return e
        if len(e) == 1 and len(a) == 1 and isinstance(e.get("NS"), list) and isinstance(a.get("NS"), list):
            if e["NS"] != a["NS"] and len(e["NS"]) == len(a["NS"]) \
                    and all(x in a["NS"] or not _is_canonical(x) for x in e["NS"]) \
                    and all(_is_canonical(y) for y in a["NS"]) \
                    and sorted(canon_num(x) for x in e["NS"]) == sorted(a["NS"]):
                NUMBER_RULE.fired += 1
                return {"NS": sorted(a["NS"])}
            return e
        return {k: (reconcile_numbers(x, a[k]) if k in a else x) for k, x in e.items()}
    if isinstance(e, list) and isinstance(a, list) and len(e) == len(a):
        return [reconcile_numbers(x, y) for x, y in zip(e, a)]
    return e


def _is_canonical(s: str) -> bool:
    try:
        return canon_num(s) == s
    except Exception:  # noqa: BLE001
        return True


# --------------------------------------------------------------------------- views

def _tie_sorted(items: list, attr: str | None) -> list:
    """Items of an index query in returned order, except that runs of equal index sort key (the whole
    result when the index has none, or when the projection dropped the key) are sorted: DynamoDB
    leaves the order of equal index keys unspecified."""
    if attr is None or any(not isinstance(it, dict) or attr not in it for it in items):
        return sorted(items, key=item_order_key)
    out, run, cur = [], [], None
    for it in items:
        k = item_order_key(it[attr])
        if run and k != cur:
            out += sorted(run, key=item_order_key)
            run = []
        cur = k
        run.append(it)
    return out + sorted(run, key=item_order_key)


def _sorted_capacity(body: dict) -> dict:
    cc = body.get("ConsumedCapacity")
    if isinstance(cc, list):
        body["ConsumedCapacity"] = sorted(cc, key=lambda c: (str(c.get("TableName")) if isinstance(c, dict) else "",
                                                             canon_json(c)))
    return body


def build_view(lop: LOp, pages: list[Page]) -> Any:
    """What is compared for one logical operation."""
    norm = [apply_rules(lop, dd.normalize(p.response, lop.op)) for p in pages]
    if lop.mode == "query":
        # base-table Query: order is defined, pages must match one by one
        return norm[0] if len(norm) == 1 else {"pages": norm}
    if lop.mode in ("query_index", "scan", "pscan"):
        errors = [(i, v) for i, v in enumerate(norm) if v["status"] != 200]
        if errors:
            i, v = errors[0]
            return v if i == 0 else {"error_after_pages": i, **v}
        bodies = [v.get("body", {}) for v in norm]
        out: dict[str, Any] = {"status": 200}
        if any("Items" in b for b in bodies):
            items = [it for b in bodies for it in b.get("Items", [])]
            if lop.mode == "query_index":
                out["Items"] = _tie_sorted(items, lop.info.get("tie_attr"))
            else:
                out["Items"] = sorted(items, key=item_order_key)
        out["Count"] = sum(b.get("Count", 0) for b in bodies)
        out["ScannedCount"] = sum(b.get("ScannedCount", 0) for b in bodies)
        if lop.mode != "pscan":
            # pages depend only on the number of items scanned and Limit, not on their order
            out["pages"] = len(bodies)
            out["LastEvaluatedKey_on_pages"] = [i for i, b in enumerate(bodies) if "LastEvaluatedKey" in b]
        if len(bodies) == 1:
            # capacity is rounded per page, and which items share a page depends on the order:
            # compared only for single-page results
            for k in ("ConsumedCapacity",):
                if k in bodies[0]:
                    out[k] = bodies[0][k]
        extra = sorted({k for b in bodies for k in b} - {"Items", "Count", "ScannedCount", "LastEvaluatedKey",
                                                          "ConsumedCapacity"})
        if extra:
            out["other_members"] = extra
        return out
    v = norm[0]
    body = v.get("body")
    if isinstance(body, dict):
        body = copy.deepcopy(body)
        if lop.mode == "batch_get" and isinstance(body.get("Responses"), dict):
            body["Responses"] = {t: sorted(items, key=item_order_key) if isinstance(items, list) else items
                                 for t, items in body["Responses"].items()}
        if lop.mode == "batch_write" and isinstance(body.get("ItemCollectionMetrics"), dict):
            body["ItemCollectionMetrics"] = {t: sorted(m, key=canon_json) if isinstance(m, list) else m
                                             for t, m in body["ItemCollectionMetrics"].items()}
        if lop.mode in ("batch_get", "batch_write"):
            _sorted_capacity(body)
        v = dict(v, body=body)
    return v


def compare_op(lop: LOp, exp: list[Page], act: list[Page], ctx: dict | None = None) -> tuple[Any, Any]:
    """The views compared for one operation (expected's adjusted by the pair rules). ctx: what run_ops
    read besides the answers (items before and after a write, for gsi-partial-key-capacity)."""
    fixed = _lek_at_inclusive_bound(lop, exp, act)
    if fixed is not None:
        LEK_RULE.fired += 1
        act = fixed
    ev, av = build_view(lop, exp), build_view(lop, act)
    ev = reconcile_messages(lop, reconcile_numbers(ev, av), av)
    return reconcile_pairs(lop, ev, av, ctx), av


def all_rules() -> list[Any]:
    return RULES + [NUMBER_RULE, MESSAGE_RULE, LEK_RULE, UPDATE_PRECEDENCE_RULE] + PAIR_RULES


def _fired() -> list[int]:
    return [r.fired for r in all_rules()]


def rules_fired_since(before: list[int]) -> list[str]:
    return [r.name for r, n in zip(all_rules(), before) if r.fired != n]


# --------------------------------------------------------------------------- running sequences

@dataclass
class OpDiff:
    seed: int
    index: int
    lop: LOp
    expected: Any
    actual: Any
    exp_pages: list[Page]
    act_pages: list[Page]

    def render(self, limit: int = 400) -> str:
        inv = f", invalid: {self.lop.invalid}" if self.lop.invalid else ""
        head = (f"--- seed {self.seed} op {self.index}: {self.lop.op} ({self.lop.mode}{inv}) "
                f"{dd._short(self.lop.request, 600)}")
        if len(self.exp_pages) > 1 or len(self.act_pages) > 1:
            head += f"\n    pages: expected {len(self.exp_pages)}, actual {len(self.act_pages)}"
        diff = difflib.unified_diff(_pretty(self.expected, limit), _pretty(self.actual, limit),
                                    "expected", "actual", lineterm="", n=3)
        return head + "\n" + "\n".join("    " + line for line in diff)


def _pretty(v: Any, limit: int) -> list[str]:
    return [dd._short(line, limit) for line in json.dumps(v, indent=2, sort_keys=True, ensure_ascii=False).splitlines()]


@dataclass
class SeqResult:
    seed: int
    ops: int = 0          # logical operations compared
    requests: int = 0     # requests sent to each side (pages included)
    invalid: int = 0      # of which deliberately invalid
    diffs: list[OpDiff] = field(default_factory=list)
    trace: list[tuple[LOp, list[Page], list[Page]]] = field(default_factory=list)
    rules: dict[int, list[str]] = field(default_factory=dict)  # op index -> deliberate rules applied
    seconds: float = 0.0


def _gsi_write_keys(lop: LOp) -> dict[str, list[dict]]:
    """Keys of the items a valid write touches in tables with a composite GSI (when it asked for capacity)."""
    info = lop.info.get("composite_gsis")
    if not info or lop.invalid:
        return {}
    out: dict[str, list[dict]] = {}
    if lop.op == "BatchWriteItem":
        for name, writes in (lop.request.get("RequestItems") or {}).items():
            if name in info:
                srcs = [(w.get("PutRequest") or {}).get("Item") or (w.get("DeleteRequest") or {}).get("Key") or {}
                        for w in writes]
                out[name] = [{k: src[k] for k in info[name]["key"] if k in src} for src in srcs]
    elif lop.request.get("TableName") in info:
        name = lop.request["TableName"]
        src = lop.request.get("Item") or lop.request.get("Key") or {}
        out[name] = [{k: src[k] for k in info[name]["key"] if k in src}]
    return out


def _read_items(endpoint: str, keys: dict[str, list[dict]]) -> dict[str, list[Any]]:
    out = {}
    for name, ks in keys.items():
        items = []
        for k in ks:
            body = dd.send(endpoint, "GetItem", {"TableName": name, "Key": k, "ConsistentRead": True}).json
            items.append(body.get("Item") if isinstance(body, dict) else None)
        out[name] = items
    return out


PROBE_KEY = "probe_key"


class UpdateProbe:
    """Errors of an UpdateItem's actions one at a time, on a copy of the item in a scratch table of the
    expected endpoint (the sequence's tables are not touched)."""

    def __init__(self, endpoint: str, table: str):
        self.endpoint, self.table, self.ready = endpoint, table, False

    def _ensure_table(self) -> None:
        if self.ready:
            return
        dd.send(self.endpoint, "CreateTable", {
            "TableName": self.table, "KeySchema": [{"AttributeName": PROBE_KEY, "KeyType": "HASH"}],
            "AttributeDefinitions": [{"AttributeName": PROBE_KEY, "AttributeType": "S"}],
            "BillingMode": "PAY_PER_REQUEST"})
        for _ in range(100):
            body = dd.send(self.endpoint, "DescribeTable", {"TableName": self.table}).json or {}
            if (body.get("Table") or {}).get("TableStatus") == "ACTIVE":
                break
            time.sleep(0.1)
        self.ready = True

    def action_errors(self, lop: LOp) -> set[tuple[Any, Any]]:
        req = lop.request
        body = dd.send(self.endpoint, "GetItem", {"TableName": req["TableName"], "Key": req["Key"],
                                                  "ConsistentRead": True}).json or {}
        item = dict(body.get("Item") or req["Key"])  # the failed update left the item as it was
        item[PROBE_KEY] = {"S": "p"}
        self._ensure_table()
        out = set()
        for clause, action in lop.info["update_actions"]:
            dd.send(self.endpoint, "PutItem", {"TableName": self.table, "Item": item})
            one = {"TableName": self.table, "Key": {PROBE_KEY: {"S": "p"}}, "UpdateExpression": f"{clause} {action}"}
            for member in ("ExpressionAttributeNames", "ExpressionAttributeValues"):
                if member in req:
                    one[member] = req[member]
            _drop_unused_placeholders(one)
            v = dd.normalize(dd.send(self.endpoint, "UpdateItem", one), "UpdateItem")
            if v["status"] != 200:
                out.add((v.get("__type"), v.get("message")))
        return out


def _update_precedence_candidate(lop: LOp, ev: Any, av: Any) -> bool:
    return lop.op == "UpdateItem" and not lop.invalid and len(lop.info.get("update_actions") or []) > 1 \
        and isinstance(ev, dict) and isinstance(av, dict) and set(ev) == set(av) == {"status", "__type", "message"} \
        and ev["status"] == av["status"] == 400 and ev["__type"] == av["__type"] \
        and str(ev["__type"]).endswith("#ValidationException") and ev["message"] != av["message"]


def run_ops(expected: str, actual: str, seed: int, lops: list[LOp], names: list[str],
            keep_going: bool = False, keep_trace: bool = False) -> SeqResult:
    res = SeqResult(seed)
    t0 = time.monotonic()
    probe = UpdateProbe(expected, f"rnd_{seed}_probe")
    names = list(names) + [probe.table]
    for ep in (expected, actual):
        cleanup(ep, names)
    try:
        for i, lop in enumerate(lops):
            keys = _gsi_write_keys(lop)
            before_items = _read_items(expected, keys) if keys else {}
            e = execute(expected, lop)
            a = execute(actual, lop)
            ctx = None
            if keys:
                after_items = _read_items(expected, keys)
                ctx = {"gsi_states": {n: list(zip(before_items[n], after_items[n])) for n in keys}}
            res.ops += 1
            res.requests += len(e)
            res.invalid += bool(lop.invalid)
            if keep_trace:
                res.trace.append((lop, e, a))
            before = _fired()
            ev, av = compare_op(lop, e, a, ctx)
            if ev != av and _update_precedence_candidate(lop, ev, av):
                errors = probe.action_errors(lop)
                if (ev["__type"], ev["message"]) in errors and (av["__type"], av["message"]) in errors:
                    UPDATE_PRECEDENCE_RULE.fired += 1
                    ev = av
            if rules_fired_since(before):
                res.rules[i] = rules_fired_since(before)
            if ev != av:
                res.diffs.append(OpDiff(seed, i, lop, ev, av, e, a))
                if not keep_going:
                    break
    finally:
        for ep in (expected, actual):
            cleanup(ep, names)
        res.seconds = time.monotonic() - t0
    return res


def run_seed(expected: str, actual: str, seed: int, ops: int | None = None, subset: str = "all",
             keep_going: bool = False, keep_trace: bool = False) -> SeqResult:
    lops, names = generate(seed, ops, subset)
    return run_ops(expected, actual, seed, lops, names, keep_going, keep_trace)


def _signature(v: Any) -> Any:
    """The kind of a view, for minimization: the error (status, type, message), or "ok"."""
    if isinstance(v, dict) and v.get("status", 200) != 200:
        return (v.get("status"), v.get("__type"), v.get("message"))
    return "ok"


def minimize(expected: str, actual: str, seed: int, lops: list[LOp], names: list[str], target: int,
             log: Callable[[str], None] = print) -> list[LOp]:
    """Shrink lops[:target+1] to a short list whose last operation still differs the same way (same
    error or success on each side; ddmin-style chunk removal over the operations before it)."""
    def outcome(cand: list[LOp]) -> Any:
        r = run_ops(expected, actual, seed, cand, names, keep_going=True)
        d = [x for x in r.diffs if x.index == len(cand) - 1]
        return (_signature(d[0].expected), _signature(d[0].actual)) if d else None

    prefix, last = lops[:target], lops[target]
    want = outcome(prefix + [last])
    if want is None:
        log("minimize: the difference does not reproduce; not minimizing")
        return prefix + [last]
    n = 2
    while prefix:
        chunk = max(1, len(prefix) // n)
        removed = False
        for start in range(0, len(prefix), chunk):
            cand = prefix[:start] + prefix[start + chunk:]
            if outcome(cand + [last]) == want:
                prefix = cand
                removed = True
                n = max(n - 1, 2)
                break
        if not removed:
            if chunk == 1:
                break
            n = min(n * 2, len(prefix))
    log(f"minimize: {target + 1} operations -> {len(prefix) + 1}")
    return prefix + [last]


# --------------------------------------------------------------------------- dump as a sequence

def _rename(v: Any, names: list[str]) -> Any:
    ren = {n: "diff_" + n for n in names}
    ren[""] = ""

    def walk(x: Any, parent: str | None = None) -> Any:
        if isinstance(x, dict):
            out = {}
            for k, y in x.items():
                k2 = ren.get(k, k) if parent == "RequestItems" else k
                if k == "TableName" and isinstance(y, str):
                    out[k2] = ren.get(y, y)
                else:
                    out[k2] = walk(y, k)
            return out
        if isinstance(x, list):
            return [walk(y, parent) for y in x]
        return x

    return walk(v)


def sequence_doc(seed: int, subset: str, trace: list[tuple[LOp, list[Page], list[Page]]], names: list[str],
                 failing: int | None, reads: bool, rules: dict[int, list[str]] | None = None) -> dict:
    all_names = names + [f"rnd_{seed}_missing"]
    steps = []
    for i, (lop, pages, _) in enumerate(trace):
        unordered = lop.mode in ("scan", "pscan", "query_index", "batch_get")
        is_read = lop.op in ("GetItem", "Query", "Scan", "BatchGetItem", "DescribeTable")
        if i != failing and is_read and (not reads or unordered):
            continue
        for p in pages:
            step: list = [lop.op, _rename(p.request, all_names)]
            notes = []
            if unordered:
                notes.append("items in hash/tie order: may legitimately differ between servers")
            if lop.invalid:
                notes.append("invalid: " + lop.invalid)
            if rules and i in rules:
                notes.append("randomized.py compares this with deliberate rule(s): " + ", ".join(rules[i]))
            if i == failing:
                notes.append("the difference found by randomized.py")
            if notes:
                step.append({"note": "; ".join(notes)})
            steps.append(step)
    created = [lop.request["TableName"] for lop, _, _ in trace if lop.op == "CreateTable"]
    deleted = {lop.request["TableName"] for lop, _, _ in trace if lop.op == "DeleteTable"}
    for n in created:
        if n not in deleted:
            steps.append(["DeleteTable", {"TableName": "diff_" + n}])
    return {"name": f"randomized seed {seed}",
            "description": f"Generated by randomized.py --seed {seed} --ops-subset {subset}"
                           + (f" (the difference: operation {failing})" if failing is not None else ""),
            "steps": steps}


def write_sequence(doc: dict, path: str) -> None:
    with open(path, "w") as f:
        f.write("{\n")
        f.write(f'  "name": {json.dumps(doc["name"])},\n  "description": {json.dumps(doc["description"])},\n')
        f.write('  "steps": [\n')
        f.write(",\n".join("    " + json.dumps(s, ensure_ascii=False) for s in doc["steps"]))
        f.write("\n  ]\n}\n")


# --------------------------------------------------------------------------- CLI

def replay_hint(seed: int, ops: int | None, subset: str) -> str:
    s = f"python tests/python/randomized.py --seed {seed} --expected URL --actual URL"
    if ops:
        s += f" --ops {ops}"
    if subset != "all":
        s += f" --ops-subset {subset}"
    return s


def _main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--expected", help="reference endpoint (DynamoDB Local)")
    ap.add_argument("--actual", help="endpoint under test (onggi)")
    ap.add_argument("--seed", type=int, help="seed of the (first) sequence; default: random")
    ap.add_argument("--count", type=int, default=1, help="number of sequences (seeds seed, seed+1, ...)")
    ap.add_argument("--ops", type=int, help="operations per sequence (default: 40-80, chosen by the seed)")
    ap.add_argument("--ops-subset", default="all",
                    help="all (default), single (Put/Get/Update/Delete only) or a comma list of operations")
    ap.add_argument("--keep-going", action="store_true", help="continue a sequence after a difference")
    ap.add_argument("--minimize", action="store_true", help="shrink the first failing sequence")
    ap.add_argument("--dump-sequence", metavar="FILE",
                    help="write the first failing (or, with --seed, the run) sequence as a sequences/*.json file")
    ap.add_argument("--dump-reads", action="store_true", help="keep order-stable reads in the dumped sequence")
    ap.add_argument("--print", action="store_true", help="print the generated operations (no server needed)")
    ap.add_argument("--show", action="store_true", help="with --minimize: print requests and both raw responses")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)
    resolve_subset(a.ops_subset)
    base = a.seed if a.seed is not None else random.SystemRandom().randrange(1, 10**9)

    if a.print:
        for s in range(base, base + a.count):
            lops, _ = generate(s, a.ops, a.ops_subset)
            for i, lop in enumerate(lops):
                print(f"{s}/{i} " + json.dumps(lop.to_json(), ensure_ascii=False, sort_keys=True))
        return 0
    if not (a.expected and a.actual):
        ap.error("--expected and --actual are needed (or --print)")

    print(f"randomized: seeds {base}..{base + a.count - 1} ({a.count} sequences), ops-subset {a.ops_subset}",
          flush=True)
    total = SeqResult(base)
    failed: list[SeqResult] = []
    for s in range(base, base + a.count):
        want_trace = bool(a.dump_sequence) or a.minimize
        r = run_seed(a.expected, a.actual, s, a.ops, a.ops_subset, a.keep_going, keep_trace=want_trace)
        total.ops += r.ops
        total.requests += r.requests
        total.invalid += r.invalid
        status = "OK" if not r.diffs else f"{len(r.diffs)} DIFFERENCE(S)"
        if not a.quiet or r.diffs:
            print(f"seed {s}: {r.ops} ops ({r.invalid} invalid), {r.requests} requests, {r.seconds:.1f}s: {status}",
                  flush=True)
        for d in r.diffs:
            print(d.render(), flush=True)
        if r.diffs:
            print("  replay: " + replay_hint(s, a.ops, a.ops_subset), flush=True)
            failed.append(r)
        if r.diffs and (a.minimize or a.dump_sequence) and len(failed) == 1:
            lops, names = generate(s, a.ops, a.ops_subset)
            target = r.diffs[0].index
            if a.minimize:
                small = minimize(a.expected, a.actual, s, lops, names, target)
                rr = run_ops(a.expected, a.actual, s, small, names, keep_going=True, keep_trace=True)
                print(f"minimal sequence (seed {s}, {len(small)} operations):")
                for i, (lop, e, act) in enumerate(rr.trace):
                    mark = "!" if any(d.index == i for d in rr.diffs) else " "
                    for p in e:
                        print(f" {mark} {lop.op} {json.dumps(p.request, ensure_ascii=False)}")
                    if a.show or mark == "!":
                        for label, pp in (("expected", e), ("actual", act)):
                            for p in pp:
                                print(f"      {label}: {p.response.status} {p.response.text}")
                trace, failing, rules = rr.trace, len(small) - 1, rr.rules
            else:
                trace, failing, rules = r.trace, target, r.rules
            if a.dump_sequence:
                write_sequence(sequence_doc(s, a.ops_subset, trace, names, failing, a.dump_reads, rules),
                               a.dump_sequence)
                print(f"wrote {a.dump_sequence}")
        elif not r.diffs and a.dump_sequence and a.count == 1:
            _, names = generate(s, a.ops, a.ops_subset)
            write_sequence(sequence_doc(s, a.ops_subset, r.trace, names, None, a.dump_reads, r.rules), a.dump_sequence)
            print(f"wrote {a.dump_sequence}")
    fired = ", ".join(f"{r.name} x{r.fired}" for r in all_rules() if r.fired)
    print(f"randomized: {a.count} sequences, {total.ops} operations ({total.invalid} invalid), {total.requests} "
          f"requests compared; {len(failed)} sequences differ"
          + (f" (seeds {', '.join(str(r.seed) for r in failed)})" if failed else "")
          + (f"; deliberate rules applied: {fired}" if fired else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
