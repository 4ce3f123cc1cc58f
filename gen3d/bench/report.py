"""The benchmark JSON layout and its printed table (docs/CONVENTIONS.md: benchmarks)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from gen3d.io import atomic_write_bytes, environment


_STARTED = time.perf_counter()


def progress(message: str) -> None:
    """One line on stderr with the seconds since the benchmark started: long benchmarks show
    where they are without touching the table on stdout."""
    print(f"[{time.perf_counter() - _STARTED:7.1f} s] {message}", file=sys.stderr, flush=True)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def format_table(rows: list[dict]) -> str:
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    cells = [[_fmt(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


def write_report(name: str, rows: list[dict], json_path: Path | None) -> dict:
    report = {"bench": name, "env": environment(), "rows": rows}
    if json_path is not None:
        atomic_write_bytes(Path(json_path), json.dumps(report, indent=2).encode())
    print(format_table(rows))
    return report
