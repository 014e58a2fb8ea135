"""The history index: every saved picture's metadata in SQLite (standard library), beside the
outputs folder, so thousands of pictures can be searched, filtered, sorted and paged.

The PNGs stay the source of truth. `sync()` (at start, in the background) brings the index in
line with the files: new or changed files are read, removed ones dropped; `add()` is called as
each picture is saved. A killed server therefore loses nothing: what the index missed is read
from the files at the next start. A damaged index file is set aside and built again.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from studio.errors import InvalidRequest
from studio.outputs.metadata import JSON_KEY, PARAMETERS_KEY, parse_parameters

log = logging.getLogger(__name__)

FILE_NAME = ".history.sqlite"
SCHEMA_VERSION = 1
_DAY_RE = re.compile(r"\d{4}-\d{2}-\d{2}\Z")
SORTS = {"newest": "created DESC, path DESC", "oldest": "created ASC, path ASC",
         "seed": "seed ASC, created DESC", "prompt": "prompt COLLATE NOCASE ASC, created DESC"}
MAX_PAGE = 1000
COLUMNS = ("path", "mtime", "bytes", "created", "day", "tab", "prompt", "negative", "model", "sampler", "seed",
           "width", "height", "parameters")


@dataclass(frozen=True)
class Query:
    words: str = ""                 # every word must be in the prompt (or negative prompt, or model)
    model: str = ""
    sampler: str = ""
    tab: str = ""                   # txt2img, img2img, inpaint, hires, grid, upscale
    seed: int | None = None
    since: str = ""                 # YYYY-MM-DD, inclusive
    until: str = ""
    sort: str = "newest"
    page: int = 1
    page_size: int = 48


class HistoryIndex:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.path = self.root / FILE_NAME
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._building: threading.Thread | None = None

    # -- the database -----------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        """The index, checked when first opened (`PRAGMA quick_check` reads every page: damage past
        the first one is found too); a damaged file is set aside and a new one made."""
        if self._db is None:
            self.root.mkdir(parents=True, exist_ok=True)
            try:
                self._db = self._open()
                found = self._db.execute("PRAGMA quick_check").fetchone()[0]
                if found != "ok":
                    raise sqlite3.DatabaseError(found)
            except sqlite3.DatabaseError:
                self._set_aside()
                self._db = self._open()
        return self._db

    def _set_aside(self) -> None:
        log.warning("History index %s is damaged; building it again from the pictures", self.path)
        if self._db is not None:
            self._db.close()
            self._db = None
        for leftover in (self.path.with_name(self.path.name + "-wal"), self.path.with_name(self.path.name + "-shm")):
            leftover.unlink(missing_ok=True)
        self.path.replace(self.path.with_suffix(".damaged"))

    def _healing(self, work):
        """`work()`; when the index turns out damaged while in use, it is set aside, built again from
        the pictures, and `work()` runs once more."""
        try:
            return work()
        except sqlite3.DatabaseError:
            with self._lock:
                self._set_aside()
            self.sync()
            return work()

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version != SCHEMA_VERSION:
            db.execute("DROP TABLE IF EXISTS pictures")
            db.execute("CREATE TABLE pictures (path TEXT PRIMARY KEY, mtime REAL, bytes INTEGER, created TEXT, "
                       "day TEXT, tab TEXT, prompt TEXT, negative TEXT, model TEXT, sampler TEXT, seed INTEGER, "
                       "width INTEGER, height INTEGER, parameters TEXT)")
            for column in ("created", "model", "sampler", "seed", "tab"):
                db.execute(f"CREATE INDEX by_{column} ON pictures ({column})")
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        return db

    # -- keeping it in line with the files ----------------------------------------------------------
    def add(self, path: Path, parameters: str = "", data: dict | None = None) -> None:
        """Index one saved picture (its metadata as saved, so the file is not read again)."""
        row = _row(self.root, Path(path), parameters, data)
        with self._lock:
            self._connect().execute(f"INSERT OR REPLACE INTO pictures VALUES ({','.join('?' * len(COLUMNS))})", row)

    def sync(self) -> dict[str, int]:
        """Read what is new or changed on disk, drop what is gone; returns the counts."""
        on_disk = {rel: (stat.st_mtime, stat.st_size) for rel, stat in _pictures(self.root)}
        with self._lock:
            db = self._connect()
            known = {p: (m, b) for p, m, b in db.execute("SELECT path, mtime, bytes FROM pictures")}
        stale = [rel for rel in known if rel not in on_disk]
        fresh = [rel for rel, sig in on_disk.items() if known.get(rel) != sig]
        rows = []
        for rel in fresh:
            parameters, data = _read(self.root / rel)
            rows.append(_row(self.root, self.root / rel, parameters, data))
        with self._lock:
            db.execute("BEGIN")
            db.executemany("DELETE FROM pictures WHERE path = ?", [(rel,) for rel in stale])
            db.executemany(f"INSERT OR REPLACE INTO pictures VALUES ({','.join('?' * len(COLUMNS))})", rows)
            db.execute("COMMIT")
        return {"added": len(fresh), "removed": len(stale), "total": len(on_disk)}

    def sync_in_background(self) -> threading.Thread:
        def work():
            try:
                counts = self.sync()
                log.info("History index: %(total)d pictures (%(added)d read, %(removed)d gone)", counts)
            except Exception:  # noqa: BLE001 - the history is a convenience; generation goes on
                log.warning("Could not build the history index", exc_info=True)
        self._building = threading.Thread(target=work, name="history-index", daemon=True)
        self._building.start()
        return self._building

    # -- searching ---------------------------------------------------------------------------------
    def search(self, query: Query, space: str | None = None) -> tuple[int, list[dict[str, Any]]]:
        """(how many match, the page asked for) — newest first unless sorted otherwise; with
        `space` (a login's folder), that login's pictures only. The first search after start waits
        for the index to be brought in line with the files."""
        if self._building is not None:
            self._building.join(timeout=300)
        if query.sort not in SORTS:
            raise InvalidRequest(f"Sort must be one of {', '.join(SORTS)}, got {query.sort!r}.")
        where, args = _where(query, space)
        size = max(1, min(int(query.page_size), MAX_PAGE))
        offset = (max(1, int(query.page)) - 1) * size

        def page():
            with self._lock:
                db = self._connect()
                total = db.execute(f"SELECT COUNT(*) FROM pictures {where}", args).fetchone()[0]
                rows = db.execute(f"SELECT {', '.join(COLUMNS)} FROM pictures {where} ORDER BY {SORTS[query.sort]} "
                                  f"LIMIT ? OFFSET ?", [*args, size, offset]).fetchall()
            return total, rows

        total, rows = self._healing(page)
        return total, [dict(zip(COLUMNS, row)) | {"file": str(self.root / row[0])} for row in rows]

    def choices(self, column: str, space: str | None = None) -> list[str]:
        """The distinct models, samplers or tabs in the index (for the filters); with `space`, of
        that login's pictures."""
        if column not in ("model", "sampler", "tab"):
            raise ValueError(column)
        where, args = _where(Query(), space)

        def distinct():
            with self._lock:
                return self._connect().execute(
                    f"SELECT DISTINCT {column} FROM pictures {where or 'WHERE 1'} AND {column} != '' "
                    f"ORDER BY {column}", args).fetchall()
        return [value for (value,) in self._healing(distinct)]

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


def _like(text: str) -> str:
    """Text LIKE matches literally (a backslash escapes its wildcards)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _where(q: Query, space: str | None = None) -> tuple[str, list]:
    clauses, args = [], []
    if space is not None:                      # a login's own pictures: under root/<login>/
        clauses.append("path LIKE ? ESCAPE '\\'")
        args.append(_like(space) + "/%")
    for word in q.words.split()[:16]:
        clauses.append("(prompt LIKE ? ESCAPE '\\' OR negative LIKE ? ESCAPE '\\' OR model LIKE ? ESCAPE '\\')")
        pattern = "%" + _like(word) + "%"
        args += [pattern] * 3
    for column, value in (("model", q.model), ("sampler", q.sampler), ("tab", q.tab)):
        if value:
            clauses.append(f"{column} = ?")
            args.append(value)
    if q.seed is not None:
        clauses.append("seed = ?")
        args.append(int(q.seed))
    if q.since:
        clauses.append("day >= ?")
        args.append(q.since)
    if q.until:
        clauses.append("day <= ?")
        args.append(q.until)
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", args


# -- reading pictures ------------------------------------------------------------------------------

def _days(root: Path):
    """The day folders: root's own, and those of each login's space (root/<login>/<day>)."""
    for entry in root.iterdir():
        if not entry.is_dir() or entry.name.startswith("."):
            continue
        if _DAY_RE.match(entry.name):
            yield entry
        else:
            yield from (day for day in entry.iterdir() if day.is_dir() and _DAY_RE.match(day.name))


def _pictures(root: Path):
    """(path relative to root, stat) of every saved PNG (day folders, no hidden files)."""
    if not root.is_dir():
        return
    for day in _days(root):
        for entry in day.iterdir():
            if entry.suffix.lower() == ".png" and not entry.name.startswith("."):
                try:
                    yield entry.relative_to(root).as_posix(), entry.stat()
                except OSError:
                    continue


def _read(path: Path) -> tuple[str, dict | None]:
    """A picture's `parameters` text and studio JSON, read from its chunks only (no decoding)."""
    from PIL import Image
    try:
        with Image.open(path) as image:
            chunks = {k: v for k, v in image.info.items() if isinstance(v, str)}
    except Exception:  # noqa: BLE001 - an unreadable file is indexed with what its name says
        return "", None
    try:
        data = json.loads(chunks[JSON_KEY]) if JSON_KEY in chunks else None
    except ValueError:
        data = None
    return chunks.get(PARAMETERS_KEY, ""), data if isinstance(data, dict) else None


def _row(root: Path, path: Path, parameters: str, data: dict | None) -> tuple:
    data = data or {}
    prompt, negative, settings = parse_parameters(parameters) if parameters else ("", "", {})
    request = data.get("request") if isinstance(data.get("request"), dict) else {}
    stat = path.stat()
    rel = path.relative_to(root).as_posix()
    seed = data.get("seed", settings.get("Seed"))
    try:
        seed = int(seed) if seed is not None else None
    except (TypeError, ValueError):
        seed = None
    size = str(settings.get("Size", "x")).partition("x")
    model = data.get("model") if isinstance(data.get("model"), dict) else {}
    return (rel, stat.st_mtime, stat.st_size, datetime.fromtimestamp(stat.st_mtime).isoformat(timespec="seconds"),
            next((part for part in rel.split("/") if _DAY_RE.match(part)), ""), _tab(data, request), str(data.get("prompt", prompt) or prompt),
            str(data.get("negative_prompt", negative) or negative), str(model.get("name") or settings.get("Model", "")),
            str(request.get("scheduler") or settings.get("Sampler", "")), seed,
            _int(data.get("width", size[0])), _int(data.get("height", size[2])), parameters)


def _tab(data: dict, request: dict) -> str:
    if data.get("kind"):
        return {"X/Y/Z plot": "grid", "Prompt matrix": "grid"}.get(data["kind"], str(data["kind"]))
    recipe = {pair[0] for pair in (request.get("recipe") or []) if isinstance(pair, list) and pair}
    for key, tab in (("Hires upscale", "hires"), ("Outpaint pixels", "outpaint")):
        if key in recipe:
            return tab
    return str(data.get("mode", ""))


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
