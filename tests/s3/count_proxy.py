"""A TCP proxy in front of the S3 server that counts the bytes each way, so
a test can see what the hub reads back from S3 (the hub's own read counters
in /proc do not see socket reads). Usage:

    python count_proxy.py LISTEN_PORT TARGET_HOST:PORT STATS_FILE

STATS_FILE holds {"to_s3": n, "from_s3": n}, rewritten every 50 ms.
"""

import asyncio
import json
import os
import sys

COUNTS = {"to_s3": 0, "from_s3": 0}


async def pipe(reader, writer, key):
    try:
        while data := await reader.read(1 << 16):
            COUNTS[key] += len(data)
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


async def serve(target_host, target_port, client_r, client_w):
    try:
        up_r, up_w = await asyncio.open_connection(target_host, target_port)
    except OSError:
        client_w.close()
        return
    await asyncio.gather(pipe(client_r, up_w, "to_s3"), pipe(up_r, client_w, "from_s3"))


async def report(path):
    while True:
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(COUNTS, f)
        os.replace(tmp, path)
        await asyncio.sleep(0.05)


async def main():
    port, target, stats = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    host, tport = target.rsplit(":", 1)
    server = await asyncio.start_server(lambda r, w: serve(host, int(tport), r, w), "127.0.0.1", port)
    asyncio.create_task(report(stats))
    async with server:
        await server.serve_forever()


asyncio.run(main())
