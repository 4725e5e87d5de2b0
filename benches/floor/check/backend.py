# Test backend for benches/floor/check.sh: Content-Length, chunked (with a trailer) and
# close-delimited answers, a request echo for POST, the request headers as JSON. Threaded, HTTP/1.1
# keep-alive. Usage: backend.py PORT
import http.server, socketserver, sys, json
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def body(self):
        te = self.headers.get("Transfer-Encoding", "")
        if "chunked" in te.lower():
            data = b""
            while True:
                line = self.rfile.readline()
                size = int(line.split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b""): pass
                    break
                data += self.rfile.read(size); self.rfile.readline()
            return data
        n = int(self.headers.get("Content-Length", "0") or 0)
        return self.rfile.read(n)
    def reply(self, data, ctype="application/octet-stream"):
        self.send_response(200); self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data))); self.end_headers(); self.wfile.write(data)
    def do_GET(self):
        if self.path.startswith("/chunked"):
            self.send_response(200); self.send_header("Transfer-Encoding", "chunked"); self.end_headers()
            for i in range(5):
                c = (b"chunk %d " % i) * (1 + 3000 * i)
                self.wfile.write(b"%x\r\n%s\r\n" % (len(c), c))
            self.wfile.write(b"0\r\nX-Trailer: t\r\n\r\n"); return
        if self.path.startswith("/close"):
            self.send_response(200); self.send_header("Connection", "close"); self.end_headers()
            self.wfile.write(b"until close " * 1000); self.close_connection = True; return
        if self.path.startswith("/headers"):
            self.reply(json.dumps({k.lower(): v for k, v in self.headers.items()}, sort_keys=True).encode() + b"\n", "application/json"); return
        if self.path.startswith("/big"):
            self.reply(bytes(range(256)) * 4096); return
        self.reply(b'{"ok":true}', "application/json")
    def do_HEAD(self):
        self.send_response(200); self.send_header("Content-Length", "11"); self.end_headers()
    def do_POST(self):
        self.reply(self.body())
class S(socketserver.ThreadingMixIn, http.server.HTTPServer): daemon_threads = True
S(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
