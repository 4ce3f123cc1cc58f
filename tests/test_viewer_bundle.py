"""The viewer bundle the server ships (gen3d/server/static/, built by scripts/build_viewer.sh, not
committed) was built from the current viewer sources: its SOURCES.sha256 equals their hash, computed
here independently of the build script (viewer/build.mjs, `sourceHash`)."""

import hashlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VIEWER = ROOT / "viewer"
STATIC = ROOT / "gen3d" / "server" / "static"


def source_hash(viewer: Path) -> str:
    """sha256 over '<path>\\n<sha256 of its bytes>\\n' for every source, sorted by path."""
    names = ["package.json", "package-lock.json", "build.mjs"]
    names += [p.relative_to(viewer).as_posix() for p in (viewer / "src").rglob("*") if p.is_file()]
    lines = "".join(f"{name}\n{hashlib.sha256((viewer / name).read_bytes()).hexdigest()}\n" for name in sorted(names))
    return hashlib.sha256(lines.encode()).hexdigest()


def test_shipped_bundle_was_built_from_the_current_sources():
    stamp = STATIC / "SOURCES.sha256"
    assert stamp.is_file(), "the viewer is not built: run scripts/build_viewer.sh (needs npm)"
    assert stamp.read_text().strip() == source_hash(VIEWER), "the viewer bundle is stale: run scripts/build_viewer.sh"
