#!/usr/bin/env python3
"""Writes the fuzz seed corpora (tests/fuzz/seeds/<target>/) from the repository's test tables.

Run from the repository root after changing a test table or a target's input format:
    python3 tests/fuzz/seeds/generate.py
The seeds are committed (small); `make fuzz` reads them and keeps what libFuzzer finds in a
scratch directory under the target dir, so the repository never grows by itself.
The input formats are those of tests/fuzz/src/lib.rs (`Cursor`) and each target's doc comment.
"""
import glob
import hashlib
import json
import os
import re
import struct

ROOT = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(ROOT, "../../.."))
FILTERS = ["trace-id", "rate-limit", "jwt-auth", "ab-routing", "metric-tag"]
INTERESTING = ["x-request-id", "x-user-id", "x-correlation-id", "x-original-id", "traceparent",
               "tracestate", "b3", "x-b3-traceid", "x-b3-spanid", "x-b3-sampled", "x-b3-flags",
               "authorization", "cookie", "x-forwarded-for", "x-real-ip", "x-api-key", "x-variant",
               "x-ab-variant", "x-ab-override", "x-tenant", "content-type", "user-agent",
               "grpc-status", ":status"]
NOW = 1_767_225_600


def chunk(data):
    data = data.encode() if isinstance(data, str) else data
    if len(data) < 255:
        return bytes([len(data)]) + data
    return bytes([255]) + struct.pack("<H", min(len(data), 65535)) + data[:65535]


def name(n):
    if n in INTERESTING:
        return bytes([INTERESTING.index(n)])
    return bytes([200]) + chunk(bytes(("abcdefghijklmnopqrstuvwxyz0123456789-_:".index(c)) for c in n))


def headers(pairs):
    return bytes([len(pairs)]) + b"".join(name(n) + chunk(v) for n, v in pairs)


def stream(path, pairs, status=200, response=(), step=0):
    return (struct.pack("<h", step) + bytes([1]) + chunk(path) + headers(pairs)
            + struct.pack("<H", status - 100) + headers(list(response)))


def write(target, data):
    out = os.path.join(ROOT, target)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, hashlib.sha1(data).hexdigest()[:16]), "wb") as f:
        f.write(data)


def read(path):
    with open(os.path.join(REPO, path), "rb") as f:
        return f.read()


def token(path):
    return read(path).decode().strip()


# --- config: every config in the test tables and fixtures --------------------------------------
configs = {f: [] for f in FILTERS}
for path in sorted(glob.glob(os.path.join(REPO, "tests/fixtures/trace-id/config/*/*.json"))):
    configs["trace-id"].append(open(path, "rb").read())
for f in FILTERS[1:]:
    configs[f].append(read(f"tests/fixtures/{f}/bench.json"))
smoke = read("tests/integration/tests/filters/fuzz_smoke.rs").decode()
for block in re.findall(r'r#"(\{.*?\})"#', smoke, re.S):
    for f in FILTERS:
        if ('"tags"' in block and f == "metric-tag") or ('"rules"' in block and f == "rate-limit") \
                or ('"requestId"' in block or '"traceContext"' in block) and f == "trace-id":
            configs[f].append(block.encode())
for f, items in configs.items():
    for item in items:
        write("config", bytes([FILTERS.index(f)]) + item)

# --- requests: ordinary, edge and hostile requests per filter ----------------------------------
es256 = token("tests/fixtures/jwt-auth/bench-es256.token")
rs256 = token("tests/fixtures/jwt-auth/bench-rs256.token")
expired = token("tests/fixtures/jwt-auth/demo-expired-es256.token")
tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
streams = [
    stream("/", []),
    stream("/api/v1/orders/12345?expand=items", [("x-request-id", "123e4567-e89b-12d3-a456-426614174000"),
                                                 ("traceparent", tp), ("tracestate", "rojo=00f067aa0ba902b7")]),
    stream("/secure/x", [("authorization", "Bearer " + es256)]),
    stream("/secure/x", [("authorization", "Bearer " + rs256), ("authorization", "Bearer " + expired)]),
    stream("/ab/?variant=b", [("x-user-id", "user-1"), ("cookie", "a=1; ab_checkout=b.1767225600.AAAAAAAAAAAAAAAAAAAAAA")]),
    stream("/", [("x-forwarded-for", "10.0.0.1, 2001:db8::1, unknown"), ("x-api-key", "k" * 300)], 429,
           [("content-type", "application/grpc")]),
    stream("/%00?x=\xff", [("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"),
                          ("x-b3-traceid", "bad"), ("x-b3-flags", "1")], 503, step=-30000),
]
for f in range(len(FILTERS)):
    for i, s in enumerate(streams):
        write("requests", bytes([f, i % 4]) + (chunk("203.0.113.9:1") if i % 4 == 3 else b"") + s + s)

# --- jwt: fixture tokens at a fixed time, and minted HS256 tokens ------------------------------
for t in (es256, rs256, expired, "", "a.b.c", es256 + "x"):
    write("jwt", bytes([0]) + struct.pack("<Q", NOW) + t.encode())
for header, payload in [
    ({"alg": "HS256", "kid": "hs"}, {"iss": "https://issuer.example", "aud": "api", "sub": "user-1",
                                     "iat": NOW, "exp": NOW + 600, "org": {"tenant": {"id": 7}}, "scope": "a b"}),
    ({"alg": "HS256"}, {"iss": "https://issuer.example", "aud": ["x", "other"], "sub": "user-2",
                        "iat": NOW - 10, "exp": NOW + 10, "nbf": NOW + 5}),
    ({"alg": "HS256", "typ": "JWT"}, {"exp": NOW - 1000}),
    ({"alg": "HS384", "kid": "hs"}, {"sub": "x"}),
    ({"alg": "HS256", "crit": ["b64"]}, {}),
]:
    write("jwt", bytes([1]) + struct.pack("<Q", NOW) + chunk(json.dumps(header)) + json.dumps(payload).encode())

# --- trace_context: the conformance table's values ---------------------------------------------
cases = read("filters/trace-id/src/conformance_cases.rs").decode()
trace, parent = "12345678901234567890123456789012", "1234567890123456"
values = {v.replace("{TRACE}", trace).replace("{PARENT}", parent).replace("{}", "0" * 32)
          for v in re.findall(r'"([0-9a-fA-F]{2}-[^"]*)"', cases)}
states = re.findall(r'ts\("([^"]*)"\)', cases) or ["rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"]
def counts(shape):
    return [shape % 3, (shape >> 2) % 3, (shape >> 4) % 3, (shape >> 6) % 3, 1, shape % 3, (shape >> 1) % 3]
SHAPE = next(s for s in range(256) if counts(s)[:4] == [1, 1, 1, 1])
fields = [None, None, "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-d", "463ac35c9f6413ad48485a3953bb6124",
          "a2fb4a1d1a96d312", "1", "0"]
for v in sorted(values):
    for s in states[:2]:
        body = b""
        for field, count in zip([v, s] + fields[2:], counts(SHAPE)):
            body += b"".join(chunk(field) for _ in range(count))
        write("trace_context", bytes([SHAPE]) + body + b"123e4567-e89b-12d3-a456-426614174000")

# --- net: addresses from the unit tests, XFF chains --------------------------------------------
addresses = ["10.0.0.1", "10.0.0.1:8080", "[::1]:443", "::ffff:10.0.0.1", "fd00::1", "2001:db8::1%eth0",
             "1.2.3.04", "256.1.1.1", "[fe80::1]", "::", "1:2:3:4:5:6:7:8", "1::2::3"]
for i, a in enumerate(addresses):
    write("net", bytes([i % 4, 24, 48]) + chunk(["10.0.0.0/8", "fd00::/8", "0.0.0.0/0", "1.2.3.4/33"][i % 4])
          + chunk(", ".join(addresses[: i + 1])) + a.encode())

# --- cookie: signing and Cookie headers ---------------------------------------------------------
for mode, value in [(0, "b"), (3, "variant-a"), (1, "a=1; ab_checkout=b.1767225600.AAAAAAAAAAAAAAAAAAAAAA; c=3"),
                    (2, 'ab_checkout="q"'), (4, "ab_checkout=b.99999999999999999999.AAAAAAAAAAAAAAAAAAAAAA")]:
    write("cookie", bytes([mode]) + struct.pack("<Q", NOW) + struct.pack("<H", 60 * 24) + chunk("ab_checkout") + value.encode())

# --- bucket_table: empty, foreign and a few operations ------------------------------------------
for table in [b"", b"\x01", b"\x01\x03abc" + bytes(20), b"garbage"]:
    ops = b"".join(chunk(k) + bytes([1]) + struct.pack("<h", 100) + bytes([1]) for k in [b"4\x0a\x00\x00\x01", b"vuser", b"4\x0a\x00\x00\x01"])
    write("bucket_table", struct.pack("<HH", 10, 1) + struct.pack("<Q", 1_000_000_000) + bytes([4, 0]) + chunk(table)
          + struct.pack("<Q", NOW * 10**9) + ops)

# --- header_map: raw blocks and pairs -----------------------------------------------------------
def block(pairs):
    out = struct.pack("<I", len(pairs)) + b"".join(struct.pack("<II", len(k), len(v)) for k, v in pairs)
    return out + b"".join(k + b"\0" + v + b"\0" for k, v in pairs)
pairs = [(b":path", b"/"), (b"x-a", b"1"), (b"x-a", b"2"), (b"cookie", b"")]
write("header_map", bytes([0]) + block(pairs))
write("header_map", bytes([1]) + b"".join(chunk(k) + chunk(v) for k, v in pairs))
