"""What crnn writes for people and programs: where it may write (one rule for every output
file), and how machine-readable output looks (strict JSON, escaped TSV fields).

Every file a command writes (`export --out`, `eval --json/--junit/--markdown/--html`) passes
`check_output_path` first, so no writer can replace its own input, a device or a folder.
"""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path
from typing import Any, Iterable

from .errors import CrnnError


class OutputPathError(CrnnError):
    """An output path that would destroy an input or is not a place for a regular file."""


_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"))


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def check_output_path(out: str | Path, inputs: Iterable[str | Path | None] = (), option: str = "",
                      replace: bool = True) -> Path:
    """The file to write for `out`, or OutputPathError (nothing has been written yet).

    Refused: an empty path; anything that exists and is not a regular file (a folder, a device
    such as /dev/full or /dev/null, a pipe); a file that is one of `inputs`, compared by device
    and inode, so a relative or absolute spelling, a hard link or a symlink of the input is
    caught too; with `replace` False, any file that exists (the command's --force allows it).
    A symlink to a regular file is written through: the path returned is its target, which is
    then replaced atomically while the link stays a link.
    """
    give = f"give {option} another file" if option else "give another output file"
    if str(out) == "":
        raise OutputPathError(f"empty output path; {give}")
    path = Path(out)
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    try:
        info = target.stat()
    except FileNotFoundError:
        return target
    except OSError as exc:
        raise OutputPathError(f"{out}: cannot write there: {exc.strerror or exc}; {give}") from None
    if not stat.S_ISREG(info.st_mode):
        raise OutputPathError(f"{out}: is {_kind(info.st_mode)}, not a regular file; {give}")
    for item in inputs:
        if item is None or str(item) == "":
            continue
        try:
            other = os.stat(item)
        except (OSError, ValueError):  # a missing input cannot be overwritten
            continue
        if (other.st_dev, other.st_ino) == (info.st_dev, info.st_ino):
            raise OutputPathError(f"{out}: is the input {item}, refusing to overwrite it; {give}")
    if not replace:
        raise OutputPathError(f"{out}: already exists; {give}, or add --force to replace it")
    return target


def check_distinct_outputs(outputs: dict[str, Path | None]) -> None:
    """Two options naming one file: the second write would silently replace the first."""
    seen: dict[str, str] = {}
    for option, path in outputs.items():
        if path is None:
            continue
        key = os.path.realpath(path)
        if key in seen:
            raise OutputPathError(f"{path}: given to both {seen[key]} and {option}; give each its own file")
        seen[key] = option


def finite(value: Any) -> Any:
    """`value` with every non-finite float (NaN, ±Infinity) replaced by None, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def dumps(value: Any, indent: int | None = None) -> str:
    """Strict JSON (RFC 8259): non-finite numbers become null, never NaN or Infinity.

    Text stays as it is (UTF-8 on the way out), except where a string holds a lone surrogate: a
    file name's bytes that are not UTF-8, which Python keeps as U+DC80-U+DCFF. Those cannot be
    written as UTF-8, and written as raw bytes they would make the output invalid, so then the
    whole text is escaped as ASCII (\\udcff): valid JSON that a reader decodes to the same string.
    """
    text = json.dumps(finite(value), ensure_ascii=False, indent=indent, allow_nan=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(finite(value), ensure_ascii=True, indent=indent, allow_nan=False)
    return text


_TSV_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def tsv_field(text: str) -> str:
    r"""A field that cannot split a TSV record: backslash, TAB, LF and CR as \\, \t, \n, \r."""
    return text.translate(_TSV_ESCAPES)
