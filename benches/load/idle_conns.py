#!/usr/bin/env python3
"""Holds N idle keep-alive TLS connections to a proxy, for benches/load/idle.sh.

Each connection does a full TLS handshake (no resumption), sends one HTTP/1.1 GET and reads its
answer whole, then stays open and idle. Prints "open N" once all are, then waits for a line on
stdin, closes every connection and prints "closed M",
M being how many the proxy had not closed by then. A connection that fails is counted and
reported ("failed N"), never retried: the caller decides what a failure means.

    idle_conns.py PORT N [CONCURRENT]
"""
import asyncio
import ssl
import sys

HOST = "127.0.0.1"
REQUEST = b"GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: payguard-bench\r\n\r\n"


async def one(port, ctx, gate, held, failures):
    async with gate:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(HOST, port, ssl=ctx, server_hostname="localhost"), 30
            )
            writer.write(REQUEST)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
            status = head.split(b" ", 2)[1]
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            if length:
                await asyncio.wait_for(reader.readexactly(length), 30)
            if status != b"200":
                failures.append(f"status {status.decode(errors='replace')}")
            held.append((reader, writer))
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError, IndexError) as e:
            failures.append(type(e).__name__)


async def main():
    port, n = int(sys.argv[1]), int(sys.argv[2])
    concurrent = int(sys.argv[3]) if len(sys.argv) > 3 else 64
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    # Every connection a full handshake: no session tickets kept or offered.
    ctx.options |= ssl.OP_NO_TICKET
    gate = asyncio.Semaphore(concurrent)
    held, failures = [], []
    await asyncio.gather(*(one(port, ctx, gate, held, failures) for _ in range(n)))
    if failures:
        kinds = sorted(set(failures))
        print(f"failed {len(failures)} ({', '.join(kinds[:5])})", flush=True)
    print(f"open {len(held)}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    # Still open? A proxy that closed idle connections meanwhile shows here.
    alive = sum(1 for r, _ in held if not r.at_eof())
    for _, w in held:
        w.close()
    print(f"closed {alive}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
