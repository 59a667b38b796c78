"""Sending stored JSONL files, optionally cut midway (the ``truncate_results`` fault)."""

from __future__ import annotations

import math
from pathlib import Path

from aiohttp import web

_CHUNK = 1 << 16


async def send_file(
    request: web.Request,
    path: Path,
    *,
    cut_fraction: float | None = None,
    content_type: str = "application/octet-stream",
) -> web.StreamResponse:
    """Stream ``path`` from disk; with ``cut_fraction`` stop after that share and drop the socket.

    A cut response announces the full ``Content-Length`` and then closes the connection, so
    a correct client notices the short body (httpx2 raises ``RemoteProtocolError``) instead of
    silently taking half a file for the whole.
    """
    if cut_fraction is None:
        return web.FileResponse(path, headers={"Content-Type": content_type})
    size = path.stat().st_size
    cut_at = min(size - 1, max(0, math.floor(size * cut_fraction))) if size else 0
    response = web.StreamResponse(headers={"Content-Type": content_type})
    response.content_length = size
    await response.prepare(request)
    sent = 0
    with path.open("rb") as fh:
        while sent < cut_at:
            chunk = fh.read(min(_CHUNK, cut_at - sent))
            if not chunk:
                break
            await response.write(chunk)
            sent += len(chunk)
    if request.transport is not None:
        request.transport.close()
    return response
