# Raw HTTP/1.1 checks of one floor (benches/floor/check.sh): refusals, pipelining, reconnects.
# Usage: check.py FLOOR_PORT BACKEND_PORT BACKEND_PID_FILE
# Exits 1 when a check fails.
import os, re, signal, socket, ssl, subprocess, sys, time

port, backend_port, pid_file = int(sys.argv[1]), sys.argv[2], sys.argv[3]
here = os.path.dirname(os.path.abspath(__file__))
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
ctx.set_alpn_protocols(["http/1.1"])
failed = 0

def check(name, ok, got):
    global failed
    print(f"  {'ok  ' if ok else 'FAIL'} {name}: {got}")
    failed += not ok

def conn():
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="localhost")
    s.settimeout(3)
    return s

def recv_all(s):
    data = b""
    try:
        while True:
            d = s.recv(65536)
            if not d: break
            data += d
    except socket.timeout: data += b"<timeout>"
    except (ssl.SSLError, ConnectionError) as e: data += b"<%s>" % str(e).encode()
    return data

def answer(s):
    """One whole answer (Content-Length framed) from s: 'status line | body'."""
    d = b""
    while b"\r\n\r\n" not in d:
        x = s.recv(65536)
        if not x: return "<closed>"
        d += x
    head, body = d.split(b"\r\n\r\n", 1)
    n = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
    while len(body) < n: body += s.recv(65536)
    return (head.split(b"\r\n")[0] + b" | " + body).decode()

refusals = [
    ("HTTP/1.0", b"GET / HTTP/1.0\r\nHost: a\r\n\r\n", 505),
    ("no Host", b"GET / HTTP/1.1\r\n\r\n", 400),
    ("two Hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    ("bare LF", b"GET / HTTP/1.1\nHost: a\n\n", 400),
    ("Content-Length and chunked", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("two Content-Lengths", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", 400),
    ("signed Content-Length", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\nabc", 400),
    ("Transfer-Encoding gzip", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
    ("Transfer-Encoding gzip, chunked", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
    ("bad chunk size", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
    ("chunk size overflow", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n", 400),
    ("absolute-form target", b"GET http://evil/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("CONNECT", b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", 405),
    ("obs-fold", b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n 2\r\n\r\n", 400),
    ("Expect other than 100-continue", b"GET / HTTP/1.1\r\nHost: a\r\nExpect: magic\r\n\r\n", 417),
    ("Connection naming Content-Length", b"POST / HTTP/1.1\r\nHost: a\r\nConnection: content-length\r\nContent-Length: 3\r\n\r\nabc", 400),
    ("40 KiB header", b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"a" * 40000 + b"\r\n\r\n", 431),
    ("NUL in a value", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", 400),
]
for name, req, want in refusals:
    s = conn(); s.sendall(req); d = recv_all(s); s.close()
    line = d.split(b"\r\n")[0].decode(errors="replace")
    check(name, line.startswith(f"HTTP/1.1 {want} ") and b"connection: close" in d.lower(), line)

# Pipelining: four requests in one write (a Content-Length body, a chunked body, a close).
s = conn()
s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
          b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
          b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
          b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
d = recv_all(s)
check("4 pipelined requests, the last with Connection: close",
      d.count(b"HTTP/1.1 200") == 4 and b"\r\n\r\nhello" in d and b"\r\n\r\nabc" in d
      and d.lower().count(b"connection: close") == 1 and d.endswith(b'{"ok":true}'),
      f"{d.count(b'HTTP/1.1 200')} answers, {len(d)} bytes")

# The backend closes the kept-alive connection: a GET is sent again on a new one, a POST is not.
def restart_backend():
    os.kill(int(open(pid_file).read()), signal.SIGTERM); time.sleep(0.3)
    p = subprocess.Popen([sys.executable, os.path.join(here, "backend.py"), backend_port])
    open(pid_file, "w").write(str(p.pid)); time.sleep(0.5)
s = conn()
s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"); got = answer(s)
check("GET", got == 'HTTP/1.1 200 OK | {"ok":true}', got)
restart_backend()
s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"); got = answer(s)
check("GET after the backend closed its connection: sent again", got == 'HTTP/1.1 200 OK | {"ok":true}', got)
restart_backend()
s.sendall(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi"); got = answer(s)
check("POST after the backend closed its connection: 502, not sent again", got == "HTTP/1.1 502 Bad Gateway | ", got)
sys.exit(1 if failed else 0)
