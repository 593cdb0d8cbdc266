"""An empty gRPC server (raw bytes in, same bytes out) to measure the transport's ceiling.

Run as ``python -m bench.echo [PKI_DIR]``: prints the port, serves until terminated; with a
credentials directory (``pki init``), over mutual TLS as the ledger's server does.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc


async def _unary(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    return request


async def _stream(
    requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[bytes, bytes]
) -> AsyncIterator[bytes]:
    async for request in requests:
        yield request


async def _serve(pki: Path | None) -> None:
    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        "bench.Echo",
        {
            "Unary": grpc.unary_unary_rpc_method_handler(_unary),
            "Stream": grpc.stream_stream_rpc_method_handler(_stream),
        },
    )
    server.add_generic_rpc_handlers((handler,))
    if pki is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        credentials = grpc.ssl_server_credentials(
            [((pki / "server.key").read_bytes(), (pki / "server.pem").read_bytes())],
            root_certificates=(pki / "ca.pem").read_bytes(),
            require_client_auth=True,
        )
        port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    print(port, flush=True)
    await server.wait_for_termination()


def start_echo_server(pki: Path | None = None) -> tuple[subprocess.Popen[str], str]:
    """Start the echo server in a child process (mTLS with ``pki``); return it and its address."""
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.echo", *([str(pki)] if pki else [])],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    port = int(process.stdout.readline())
    return process, f"127.0.0.1:{port}"


if __name__ == "__main__":
    asyncio.run(_serve(Path(sys.argv[1]) if len(sys.argv) > 1 else None))
