"""Files the loop writes and reads: JSON lines, and writes a crash cannot leave half done.

JSON lines are the exchange format of every offline step (`refinery generate`, `train`, `export`,
`mine`, the refinement job's data sets). Markers and state files are replaced atomically: a
temporary file in the same directory, fsync, `os.replace`, so a reader sees the old file or the
new one, never half of one.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

TMP_PREFIX = ".tmp-"


def read_jsonl(path: Path | str) -> list[dict]:
    """Rows of a JSONL file; blank lines skipped; a bad line names its line number."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not JSON: {e}") from e
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{n}: expected a JSON object")
            rows.append(row)
    return rows


def write_jsonl(path: Path | str, rows: Iterable[dict]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path | str, text: str) -> None:
    """Replace `path` with `text`: temp file in the same directory, fsync, os.replace."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{os.getpid()}-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_path(path.parent)


def write_json_atomic(path: Path | str, data: Any) -> None:
    write_atomic(path, json.dumps(data, indent=2, sort_keys=True))
