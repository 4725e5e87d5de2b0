#!/usr/bin/env python3
"""Writes the seed corpora of the service and service_h2 fuzz targets (fuzz/corpus/service*/).

Secrets are the made-up ones of fuzz/fuzz_targets/common/service.rs. Run from anywhere:
    python3 fuzz/gen_service_seeds.py
Existing files with the same names are overwritten; other files are left alone.
"""
import hmac, hashlib, json, os, struct
here = os.path.dirname(os.path.abspath(__file__))
root = os.path.join(here, "corpus")
HMAC_SECRET = b"fuzz-hmac-secret-not-a-real-one"
STRIPE_SECRET = b"whsec_fuzzstripesecretnotarealone"

def req(method, target, headers=(), body=b"", version="HTTP/1.1"):
    h = f"{method} {target} {version}\r\n".encode()
    for k, v in headers:
        h += k.encode() + b": " + (v if isinstance(v, bytes) else v.encode()) + b"\r\n"
    return h + b"\r\n" + body

def cl(body, ct=None, extra=()):
    hs = [("Host", "shop.example")]
    if ct: hs.append(("Content-Type", ct))
    hs.append(("Content-Length", str(len(body))))
    return hs + list(extra)

H = [("Host", "shop.example")]
order = json.dumps({"product_id": "prod_tea_01", "quantity": 2, "email": "a@example.com"}).encode()
co_body = json.dumps({"order_id": "ord_0123456789abcdef",
    "card": {"number": "4111111111111111", "exp": "12/29", "cvc": "123"}}).encode()
hook = json.dumps({"id": "evt_1", "type": "payment_intent.succeeded", "amount": 1999}).encode()
hsig = "sha256=" + hmac.new(HMAC_SECRET, hook, hashlib.sha256).hexdigest()
ts = "1795000000"
ssig = hmac.new(STRIPE_SECRET, ts.encode() + b"." + hook, hashlib.sha256).hexdigest()
stripe_hdr = f"t={ts},v1={ssig}"
prov = [("X-Forwarded-For", "192.0.2.10")]
office = [("X-Forwarded-For", "10.1.2.3")]

s = {}
s["get-root"] = req("GET", "/", H)
s["get-unrouted-keepalive-3"] = req("GET", "/a", H) + req("GET", "/b?x=1", H) + req("GET", "/c", H + [("Connection", "close")])
s["search-valid"] = req("GET", "/api/search?page=2&sort=price", H)
s["search-invalid-page"] = req("GET", "/api/search?page=0&sort=name", H)
s["search-wrong-method"] = req("DELETE", "/api/search", H)
s["orders-valid"] = req("POST", "/api/orders", cl(order, "application/json", [("Idempotency-Key", "k-1")]), order)
s["orders-missing-idempotency"] = req("POST", "/api/orders", cl(order, "application/json"), order)
s["orders-wrong-type"] = req("POST", "/api/orders", cl(order, "text/plain", [("Idempotency-Key", "k-2")]), order)
s["orders-bad-json"] = req("POST", "/api/orders", cl(b'{"quantity": 1e999,', "application/json", [("Idempotency-Key", "k-3")]), b'{"quantity": 1e999,')
s["orders-too-large"] = req("POST", "/api/orders", cl(b"[" + b"1," * 5000 + b"1]", "application/json", [("Idempotency-Key", "k-4")]), b"[" + b"1," * 5000 + b"1]")
s["checkout-valid"] = req("POST", "/api/checkout", cl(co_body, "application/json; charset=utf-8"), co_body)
s["checkout-other-host"] = req("POST", "/api/checkout", [("Host", "evil.example")] + cl(co_body, "application/json")[1:], co_body)
s["login-form"] = req("POST", "/login", cl(b"username=alice&password=x", "application/x-www-form-urlencoded"), b"username=alice&password=x")
s["login-form-too-long"] = req("POST", "/login", cl(b"username=" + b"a" * 100, "application/x-www-form-urlencoded"), b"username=" + b"a" * 100)
s["admin-from-office"] = req("GET", "/admin/users", H + office)
s["admin-from-peer"] = req("GET", "/admin/users", H)
s["admin-traversal"] = req("GET", "/api/../admin/users", H)
s["admin-encoded-traversal"] = req("GET", "/api/%2e%2e/admin//users", H)
s["closed"] = req("GET", "/closed/x", H + office)
s["denied-client"] = req("GET", "/", H + [("X-Forwarded-For", "198.51.100.66, 203.0.113.9")])
s["limited-4x"] = b"".join(req("GET", "/limited", H + [("X-Api-Key", "key-a")]) for _ in range(4))
s["limited-head"] = req("HEAD", "/limited", H)
s["hmac-valid"] = req("POST", "/hooks/hmac", cl(hook, "application/json", prov + [("X-Hub-Signature-256", hsig)]), hook)
s["hmac-valid-replayed"] = s["hmac-valid"] * 2
s["hmac-forged"] = req("POST", "/hooks/hmac", cl(hook, "application/json", prov + [("X-Hub-Signature-256", "sha256=" + "0" * 64)]), hook)
s["hmac-wrong-network"] = req("POST", "/hooks/hmac", cl(hook, "application/json", [("X-Hub-Signature-256", hsig)]), hook)
s["hmac-verified-header-injection"] = req("POST", "/hooks/hmac", cl(hook, "application/json", prov + [("X-Payguard-Verified", "hmac"), ("Connection", "x-hub-signature-256")]), hook)
s["stripe-valid"] = req("POST", "/hooks/stripe", cl(hook, "application/json", [("Stripe-Signature", stripe_hdr)]), hook)
s["stripe-valid-replayed"] = s["stripe-valid"] * 2
s["stripe-chunked-valid"] = req("POST", "/hooks/stripe", H + [("Content-Type", "application/json"), ("Stripe-Signature", stripe_hdr), ("Transfer-Encoding", "chunked")],
    b"%x\r\n" % 10 + hook[:10] + b"\r\n" + b"%x\r\n" % (len(hook) - 10) + hook[10:] + b"\r\n0\r\n\r\n")
s["stripe-stale"] = req("POST", "/hooks/stripe", cl(hook, "application/json", [("Stripe-Signature", "t=1,v1=" + hmac.new(STRIPE_SECRET, b"1." + hook, hashlib.sha256).hexdigest())]), hook)
s["stripe-missing"] = req("POST", "/hooks/stripe", cl(hook, "application/json"), hook)
s["monitor-would-block"] = req("POST", "/monitor/x", cl(b"<xml/>", "text/xml"), b"<xml/>")
s["backend-status-500"] = req("GET", "/status/500", H)
s["backend-status-404"] = req("GET", "/status/404", H)
# Smuggling and malformed framing (the cases nginx refuses).
s["smuggle-cl-te"] = req("POST", "/", H + [("Content-Length", "6"), ("Transfer-Encoding", "chunked")], b"0\r\n\r\nGET /admin/users HTTP/1.1\r\nHost: shop.example\r\n\r\n")
s["smuggle-te-cl"] = req("POST", "/", H + [("Transfer-Encoding", "chunked"), ("Content-Length", "4")], b"5c\r\nGPOST / HTTP/1.1\r\nContent-Length: 15\r\n\r\nx=1\r\n0\r\n\r\n")
s["smuggle-te-obfuscated"] = req("POST", "/", H + [("Transfer-Encoding", "xchunked"), ("Content-Length", "3")], b"abc")
s["smuggle-te-chunked-identity"] = req("POST", "/", H + [("Transfer-Encoding", "chunked, identity")], b"3\r\nabc\r\n0\r\n\r\n")
s["smuggle-te-twice"] = req("POST", "/", H + [("Transfer-Encoding", "chunked"), ("Transfer-Encoding", "identity")], b"3\r\nabc\r\n0\r\n\r\n")
s["smuggle-cl-twice"] = req("POST", "/", H + [("Content-Length", "3"), ("Content-Length", "40")], b"abc")
s["smuggle-cl-comma"] = req("POST", "/", H + [("Content-Length", "3, 3")], b"abc")
s["smuggle-cl-plus"] = req("POST", "/", H + [("Content-Length", "+3")], b"abc")
s["smuggle-space-before-colon"] = b"POST / HTTP/1.1\r\nHost: shop.example\r\nContent-Length : 3\r\n\r\nabc"
s["smuggle-obs-fold"] = b"GET / HTTP/1.1\r\nHost: shop.example\r\nX-A: a\r\n b\r\n\r\n"
s["smuggle-bare-lf"] = b"GET / HTTP/1.1\nHost: shop.example\n\nGET /admin/x HTTP/1.1\nHost: shop.example\n\n"
s["smuggle-bare-cr"] = b"GET / HTTP/1.1\rHost: shop.example\r\n\r\n"
s["smuggle-chunk-size-overflow"] = req("POST", "/", H + [("Transfer-Encoding", "chunked")], b"ffffffffffffffffff1\r\nabc\r\n0\r\n\r\n")
s["smuggle-chunk-ext-lf"] = req("POST", "/", H + [("Transfer-Encoding", "chunked")], b"3;x=\"a\nb\"\r\nabc\r\n0\r\n\r\n")
s["smuggle-nul-header"] = b"GET / HTTP/1.1\r\nHost: shop.example\r\nX-A: a\x00b\r\n\r\n"
s["absolute-form"] = req("GET", "http://evil.example/admin/users", [("Host", "shop.example")])
s["connect"] = req("CONNECT", "shop.example:443", H)
s["options-star"] = req("OPTIONS", "*", H)
s["no-host-http11"] = b"GET / HTTP/1.1\r\n\r\n"
s["two-hosts"] = req("GET", "/", [("Host", "a.example"), ("Host", "shop.example")])
s["http10"] = req("GET", "/api/search?page=1", H, version="HTTP/1.0")
s["h2-preface-on-h1"] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
s["header-too-large"] = req("GET", "/", H + [("X-Big", "a" * 20000)])
s["uri-too-long"] = req("GET", "/" + "a" * 17000, H)
s["expect-continue"] = req("POST", "/api/orders", cl(order, "application/json", [("Idempotency-Key", "k-5"), ("Expect", "100-continue")]), order)
s["upgrade-h2c"] = req("GET", "/", H + [("Connection", "Upgrade, HTTP2-Settings"), ("Upgrade", "h2c"), ("HTTP2-Settings", "AAMAAABkAAQAAP__")])
s["body-cut-short"] = req("POST", "/api/orders", cl(b"x" * 100, "application/json", [("Idempotency-Key", "k-6")]), b"x" * 10)
s["lowercase-method"] = req("get", "/", H)
s["request-id-spoof"] = req("GET", "/closed/x", H + [("X-Request-Id", "a\"b"), ("X-Request-Id", "c")])
d = os.path.join(root, "service"); os.makedirs(d, exist_ok=True)
for k, v in s.items():
    open(os.path.join(d, k), "wb").write(v)

# HTTP/2 (after the client preface): its own callback, so it is not a replay of the HTTP/1.1 one.
hook = json.dumps({"id": "evt_2", "type": "charge.refunded", "amount": 500}).encode()
hsig = "sha256=" + hmac.new(HMAC_SECRET, hook, hashlib.sha256).hexdigest()
ssig = hmac.new(STRIPE_SECRET, ts.encode() + b"." + hook, hashlib.sha256).hexdigest()
stripe_hdr = f"t={ts},v1={ssig}"
def frame(typ, flags, sid, payload):
    return struct.pack(">I", len(payload))[1:] + bytes([typ, flags]) + struct.pack(">I", sid) + payload
def lit(name, value):
    name = name.encode(); value = value.encode() if isinstance(value, str) else value
    assert len(name) < 127 and len(value) < 127
    return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value
def hdrs(method, path, extra=(), authority="shop.example"):
    b = lit(":method", method) + b"\x86" + lit(":path", path) + lit(":authority", authority)
    for k, v in extra: b += lit(k, v)
    return b
SETTINGS = frame(4, 0, 0, b"")
SETTINGS_ACK = frame(4, 1, 0, b"")
def h2req(sid, method, path, extra=(), body=None):
    out = frame(1, 0x4 | (0x1 if body is None else 0), sid, hdrs(method, path, extra))
    if body is not None:
        out += frame(0, 0x1, sid, body)
    return out
t = {}
t["get-root"] = SETTINGS + h2req(1, "GET", "/")
t["settings-ack-get"] = SETTINGS + SETTINGS_ACK + h2req(1, "GET", "/api/search?page=3")
t["three-streams"] = SETTINGS + h2req(1, "GET", "/a") + h2req(3, "GET", "/admin/x") + h2req(5, "GET", "/closed/y")
t["orders-valid"] = SETTINGS + h2req(1, "POST", "/api/orders", [("content-type", "application/json"), ("idempotency-key", "k"), ("content-length", str(len(order)))], order)
t["orders-content-length-mismatch"] = SETTINGS + h2req(1, "POST", "/api/orders", [("content-type", "application/json"), ("idempotency-key", "k"), ("content-length", "3")], order)
t["hmac-valid"] = SETTINGS + h2req(1, "POST", "/hooks/hmac", [("content-type", "application/json"), ("x-forwarded-for", "192.0.2.10"), ("x-hub-signature-256", hsig)], hook)
t["hmac-valid-twice"] = SETTINGS + h2req(1, "POST", "/hooks/hmac", [("content-type", "application/json"), ("x-forwarded-for", "192.0.2.10"), ("x-hub-signature-256", hsig)], hook) + h2req(3, "POST", "/hooks/hmac", [("content-type", "application/json"), ("x-forwarded-for", "192.0.2.10"), ("x-hub-signature-256", hsig)], hook)
t["stripe-split-data"] = SETTINGS + frame(1, 0x4, 1, hdrs("POST", "/hooks/stripe", [("content-type", "application/json")]) + lit("stripe-signature", stripe_hdr)) \
    + frame(0, 0, 1, hook[:7]) + frame(0, 0x1, 1, hook[7:])
t["rst-stream"] = SETTINGS + frame(1, 0x4, 1, hdrs("POST", "/api/orders")) + frame(3, 0, 1, struct.pack(">I", 8))
t["rst-flood"] = SETTINGS + b"".join(frame(1, 0x5, i, hdrs("GET", "/")) + frame(3, 0, i, struct.pack(">I", 8)) for i in range(1, 60, 2))
t["continuation"] = SETTINGS + frame(1, 0x1, 1, hdrs("GET", "/")[:10]) + frame(9, 0x4, 1, hdrs("GET", "/")[10:])
t["uppercase-header"] = SETTINGS + frame(1, 0x5, 1, hdrs("GET", "/") + lit("X-Upper", "a"))
t["connection-header"] = SETTINGS + frame(1, 0x5, 1, hdrs("GET", "/", [("connection", "keep-alive"), ("transfer-encoding", "chunked")]))
t["missing-path"] = SETTINGS + frame(1, 0x5, 1, lit(":method", "GET") + b"\x86" + lit(":authority", "shop.example"))
t["window-ping-goaway"] = SETTINGS + frame(8, 0, 0, struct.pack(">I", 1000)) + frame(6, 0, 0, b"12345678") + h2req(1, "GET", "/") + frame(7, 0, 0, struct.pack(">II", 1, 0))
t["padded-priority"] = SETTINGS + frame(1, 0x5 | 0x8 | 0x20, 1, bytes([4]) + struct.pack(">I", 0) + bytes([16]) + hdrs("GET", "/") + b"\0" * 4)
t["data-on-closed-stream"] = SETTINGS + h2req(1, "GET", "/") + frame(0, 0x1, 1, b"late")
t["even-stream-id"] = SETTINGS + h2req(2, "GET", "/")
t["hpack-indexed-get"] = SETTINGS + frame(1, 0x5, 1, b"\x82\x86\x84" + lit(":authority", "shop.example"))
t["monitor-post"] = SETTINGS + h2req(1, "POST", "/monitor/a", [("content-type", "text/plain")], b"hello")
# Past max_h2_control_frames (1,000 per 10 s): the connection is closed before the request.
t["ping-flood"] = SETTINGS + b"".join(frame(6, 0, 0, struct.pack(">Q", i)) for i in range(1001)) + h2req(1, "GET", "/")
t["settings-flood-acks-free"] = SETTINGS + SETTINGS_ACK * 1200 + b"".join(frame(4, 0, 0, struct.pack(">HI", 4, 65535)) for _ in range(999)) + h2req(1, "GET", "/")
d = os.path.join(root, "service_h2"); os.makedirs(d, exist_ok=True)
for k, v in t.items():
    open(os.path.join(d, k), "wb").write(v)
print(f"service: {len(s)} seeds, service_h2: {len(t)} seeds")
