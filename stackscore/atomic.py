"""One way to write a small file in place: beside it, then renamed.

A crash, a full disk or a concurrent reader sees the old file or the whole new one, never half of
it. The temporary name is unique per process and thread, so two writers never share one (the last
rename wins); callers whose directory admits only known names (a run's parts) pass ``tmp``.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path


def atomic_write(path: Path, data: bytes | memoryview | str, tmp: Path | None = None) -> Path:
    """Write ``data`` (text is UTF-8) to ``path`` by rename; the temporary file never outlives the call."""
    path = Path(path)
    tmp = tmp or path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
