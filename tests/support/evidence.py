"""Helpers for evidence packages in tests."""
from __future__ import annotations

import io
import zipfile
from typing import Callable


def rezip(data: bytes, change: Callable[[dict[str, bytes]], object]) -> bytes:
    """The ZIP ``data`` with ``change(files)`` applied to its name -> bytes mapping (a tampering)."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        files = {info.filename: archive.read(info) for info in archive.infolist()}
    change(files)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return out.getvalue()
