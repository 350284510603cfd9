"""Documents from text files and folders, each with an id: what `train` reads and a user's own
held-out corpus is split from.

A path is a `.txt` file (one document), a `.jsonl` file (one document per line, from
`text_field`), a `.json` file (a list of strings or of objects with that field), each optionally
gzip-compressed (`.jsonl.gz`), or a folder of such files (sorted; subfolders included). A UTF-8
byte-order mark is accepted. Every failure is a one-line `UserError` naming `key` and the file.

Records are dicts `{"text", "id", "source"}`: `id` is the object's `id` field when it has one,
else the file's path (relative to the folder) with `:line` / `[item]`; `source` is the object's
`source` field when it has one, else the file's path — so the role split (spear_mm.io.roles)
spreads every file of a folder over the three roles. Stdlib only.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from spear_mm.errors import UserError

TEXT_SUFFIXES = (".txt", ".jsonl", ".json")  # each also accepted with a .gz suffix


def suffix(path: Path) -> str:
    """`.jsonl` for `x.jsonl` and for `x.jsonl.gz`."""
    return Path(path.stem).suffix if path.suffix == ".gz" else path.suffix


def _open_text(path: Path):
    # utf-8-sig: a byte-order mark (Windows editors write one) is not part of the first document.
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8-sig")
    return open(path, encoding="utf-8-sig")


def _record(row: object, path: Path, name: str, key: str, text_field: str, where: str) -> dict:
    if isinstance(row, str):
        return {"text": row, "id": f"{name}{where}", "source": name}
    if not isinstance(row, dict) or not isinstance(row.get(text_field), str):
        pos = where.strip(":[]")
        pos = f"line {pos}" if where.startswith(":") else f"item {pos}"
        raise UserError(
            f"{key}: {path} {pos} has no string field {text_field!r}; "
            "set data.text_field to the field that holds the text"
        )
    rid, source = row.get("id"), row.get("source")
    return {
        "text": row[text_field],
        "id": f"{name}{where}" if rid is None else str(rid),
        "source": name if source is None else str(source),
    }


def _read_jsonl(path: Path, name: str, key: str, text_field: str) -> list[dict]:
    rows = []
    with _open_text(path) as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(
                    f"{key}: {path} line {lineno} is not JSON ({exc.msg}); "
                    "write one JSON object per line"
                ) from None
            rows.append(_record(row, path, name, key, text_field, f":{lineno}"))
    return rows


def _read_file(path: Path, name: str, key: str, text_field: str) -> list[dict]:
    kind = suffix(path)
    if kind == ".txt":
        with _open_text(path) as fh:
            return [{"text": fh.read(), "id": name, "source": name}]
    if kind == ".jsonl":
        return _read_jsonl(path, name, key, text_field)
    if kind == ".json":
        with _open_text(path) as fh:
            rows = json.load(fh)
        if not isinstance(rows, list):
            raise UserError(f"{key}: {path} must hold a JSON list of documents")
        return [_record(r, path, name, key, text_field, f"[{i}]") for i, r in enumerate(rows)]
    raise UserError(
        f"{key}: unsupported file type {path.suffix!r} ({path}); "
        "use .txt, .jsonl, .json (optionally .gz) or a folder of them"
    )


def _read_raw(path: Path, key: str, text_field: str) -> list[dict]:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and suffix(p) in TEXT_SUFFIXES)
        if not files:
            raise UserError(f"{key}: folder {path} holds no .txt/.jsonl/.json(.gz) files")
        return [
            rec
            for f in files
            for rec in _read_file(f, f.relative_to(path).as_posix(), key, text_field)
        ]
    return _read_file(path, path.name, key, text_field)


def read_records(path: Path, key: str, text_field: str = "text") -> list[dict]:
    """Records of a file or folder (see module doc), in file order."""
    try:
        return _read_raw(path, key, text_field)
    except UnicodeDecodeError as exc:
        raise UserError(
            f"{key}: {path} is not UTF-8 text (byte {exc.start}: {exc.reason}); convert it to UTF-8"
        ) from None
    except json.JSONDecodeError as exc:
        raise UserError(
            f"{key}: {path} is not valid JSON (line {exc.lineno}: {exc.msg}); "
            "write a JSON list of documents"
        ) from None
    except EOFError:
        raise UserError(f"{key}: {path} is a truncated gzip file; re-create it") from None
    except OSError as exc:
        raise UserError(f"{key}: cannot read {path} ({exc.strerror or exc})") from None
