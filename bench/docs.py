"""What every benchmark shares: its section of docs/benchmarks.md and the machine's CPU.

Torch-free, so that the upload and status benchmarks load no science code.
"""

from __future__ import annotations

import os
import platform
import tempfile
from pathlib import Path

__all__ = ["cpu_model", "markers", "replace_section", "write_atomically"]


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def replace_section(text: str, name: str, body: str, heading: str) -> str:
    """Put ``body`` between the markers of section ``name``, replacing what was there.

    A document without those markers gets the section appended, under ``heading``.
    """
    begin, end = markers(name)
    block = f"{begin}\n{body.strip()}\n{end}"
    start = text.find(begin)
    stop = text.find(end, start + len(begin)) if start >= 0 else -1
    if start >= 0 and stop >= 0:
        return text[:start] + block + text[stop + len(end) :]
    return text.rstrip() + f"\n\n## {heading}\n\n" + block + "\n"


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, or what the platform module knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` in one step, so that a reader never sees half a page."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(
        "w", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False
    )
    try:
        with handle:
            handle.write(text)
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise
