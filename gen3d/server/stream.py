"""Server-sent progress: tail a run's events.jsonl and watch a status until it is final.

One generator serves both `/api/runs/{id}/stream` (status from the manifest) and `/api/jobs/{id}/stream`
(status from the queue, the run folder appearing once the job starts). Each events.jsonl line is sent as
an SSE `progress` event whose `id` is its line number, so a reconnecting EventSource (Last-Event-ID)
resumes where it stopped instead of replaying the run.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from starlette.requests import Request

POLL_S = 0.25
KEEPALIVE_S = 15.0


def sse(event: str, data: dict, event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data)}\n\n"


class EventTail:
    """Reads the complete lines appended to events.jsonl since the last call."""

    def __init__(self, since: int):
        self.offset = 0
        self.line = 0
        self.since = since

    def read(self, folder: Path | None) -> list[tuple[int, dict]]:
        path = folder / "events.jsonl" if folder is not None else None
        if path is None or not path.is_file():
            return []
        with path.open("rb") as fh:
            fh.seek(self.offset)
            chunk = fh.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self.offset += len(complete)
        out = []
        for raw in complete.decode("utf-8", errors="replace").splitlines():
            if self.line >= self.since:
                try:
                    event = json.loads(raw)
                except json.JSONDecodeError:
                    event = None  # a malformed line keeps its number but is not sent
                if isinstance(event, dict):
                    out.append((self.line, event))
            self.line += 1
        return out


async def progress_stream(
    request: Request,
    folder: Callable[[], Path | None],
    status: Callable[[], dict | None],
    final: frozenset[str],
    since: int = 0,
) -> AsyncIterator[str]:
    """Yields `progress` events, a `status` event whenever the status changes, and `end` once it is final.

    `status()` returns a dict with at least "status" (None: the job or run vanished, which also ends it).
    A stream also ends, without `end`, once the server is stopping (`app.state.closing` set): an open
    viewer tab must not hold a stopping server (the browser reconnects to the next one by itself).
    """
    closing = getattr(request.app.state, "closing", None)
    tail = EventTail(since)
    last_status, last_sent = None, time.monotonic()
    while True:
        current = status()
        for line, event in tail.read(folder()):
            yield sse("progress", event, line)
            last_sent = time.monotonic()
        if current != last_status:
            last_status = current
            yield sse("status", current or {"status": None})
            last_sent = time.monotonic()
        if current is None or current.get("status") in final:
            for line, event in tail.read(folder()):  # lines written just before the final status
                yield sse("progress", event, line)
            yield sse("end", {"status": current.get("status") if current else None})
            return
        if await request.is_disconnected() or (closing is not None and closing.is_set()):
            return
        if time.monotonic() - last_sent > KEEPALIVE_S:
            yield ": keep-alive\n\n"
            last_sent = time.monotonic()
        await asyncio.sleep(POLL_S)
