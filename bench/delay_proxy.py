#!/usr/bin/env python3
"""A TCP relay on loopback that holds every byte DELAY_MS milliseconds each way: a round trip for benches
on a kernel without netem (this VM's has none).

usage: delay_proxy.py LISTEN_PORT TARGET_PORT DELAY_MS

Listens on 127.0.0.1:LISTEN_PORT; each connection is relayed to 127.0.0.1:TARGET_PORT, every byte
written on after DELAY_MS (one way). Each side's own TCP sees loopback's round trip; what rides on top
(yamux's window updates, request and answer) sees 2 x DELAY_MS more. At most LIMIT bytes (64 MiB) wait
in each direction of a connection before the relay stops reading it. Python: it carried about 1,000 MB/s
here (iperf3 through it, as `bench/transfer.sh DELAY_MS=N` measures), so a bench through it compares builds
at the same ceiling. Ends on SIGTERM or SIGINT.
"""
import asyncio
import sys

LIMIT = 64 * 1024 * 1024
READ = 1024 * 1024


async def pump(reader, writer, delay):
    loop = asyncio.get_running_loop()
    queue = asyncio.Queue()
    held = 0
    room = asyncio.Event()
    room.set()

    async def receive():
        nonlocal held
        while True:
            await room.wait()
            data = await reader.read(READ)
            await queue.put((loop.time() + delay, data))
            if not data:
                return
            held += len(data)
            if held > LIMIT:
                room.clear()

    async def send():
        nonlocal held
        while True:
            due, data = await queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()
            held -= len(data)
            if held <= LIMIT:
                room.set()

    try:
        await asyncio.gather(receive(), send())
    except (ConnectionError, OSError):
        pass


async def relay(client_r, client_w, target, delay):
    try:
        server_r, server_w = await asyncio.open_connection('127.0.0.1', target)
    except OSError:
        client_w.close()
        return
    await asyncio.gather(pump(client_r, server_w, delay), pump(server_r, client_w, delay))
    for w in (client_w, server_w):
        w.close()


async def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    listen, target, delay = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]) / 1000.0
    server = await asyncio.start_server(lambda r, w: relay(r, w, target, delay), '127.0.0.1', listen)
    async with server:
        await server.serve_forever()


if __name__ == '__main__':
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
