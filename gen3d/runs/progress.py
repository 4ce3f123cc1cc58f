"""A terminal progress bar fed by run events, so any stage that emits events gets one for free."""

from __future__ import annotations

import sys
from typing import TextIO

from tqdm import tqdm

_SHOWN_FIELDS = ("loss", "psnr", "ssim")


class ProgressBar:
    """Listener for `RunFolder.event`: one bar per stage, advanced by events carrying step/total,
    with the latest loss/PSNR as postfix. Silent when the stream is not a terminal (CI logs, the
    viewer's worker), where events.jsonl and log.txt already say everything."""

    def __init__(self, stream: TextIO | None = None, enabled: bool | None = None):
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self._bar: tqdm | None = None
        self._stage: str | None = None

    def __call__(self, event: dict) -> None:
        if not self.enabled:
            return
        if event.get("message") in ("done", "interrupted"):
            self.close()
            return
        step, total = event.get("step"), event.get("total")
        if step is None or not total:
            return
        if self._bar is None or self._stage != event["stage"]:
            self.close()
            self._stage = event["stage"]
            self._bar = tqdm(total=total, desc=self._stage, file=self.stream, leave=True, dynamic_ncols=True)
        self._bar.n = step
        shown = {k: f"{event[k]:.4g}" for k in _SHOWN_FIELDS if isinstance(event.get(k), (int, float))}
        self._bar.set_postfix(shown, refresh=False)
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        self._bar, self._stage = None, None
