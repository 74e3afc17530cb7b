"""A TLS terminator for the Kafka-over-TLS tests: TLS on one loopback port, plain TCP behind.

Tansu 0.6.0 cannot serve TLS (its ``--cert`` and ``--key`` options exclude each other), so
the tests start it advertising this terminator's port, and every client connection, the
bootstrap one and those to the advertised broker, goes through TLS here. The terminator
requires a client certificate signed by the test CA, as a Kafka listener with
``ssl.client.auth=required`` does, so the worker's own certificate is exercised too.

Usage: ``python tls_terminator.py LISTEN_PORT UPSTREAM_PORT CERT KEY CA``. It prints
``accepted <client CN>`` for every client whose handshake succeeded.
"""

from __future__ import annotations

import asyncio
import ssl
import sys

_CHUNK = 65536


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()


def _common_name(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peercert") or {}
    names = dict(pair[0] for pair in peer.get("subject", ()))
    return str(names.get("commonName", "?"))


async def _serve(listen: int, upstream: int, context: ssl.SSLContext) -> None:
    async def handle(client: asyncio.StreamReader, to_client: asyncio.StreamWriter) -> None:
        print(f"accepted {_common_name(to_client)}", flush=True)
        try:
            broker, to_broker = await asyncio.open_connection("127.0.0.1", upstream)
        except OSError:
            to_client.close()
            return
        await asyncio.gather(_pipe(client, to_broker), _pipe(broker, to_client))

    server = await asyncio.start_server(handle, "127.0.0.1", listen, ssl=context)
    async with server:
        await server.serve_forever()


def main() -> None:
    listen, upstream, cert, key, ca = sys.argv[1:]
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=ca)
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_cert_chain(cert, key)
    asyncio.run(_serve(int(listen), int(upstream), context))


if __name__ == "__main__":
    main()
