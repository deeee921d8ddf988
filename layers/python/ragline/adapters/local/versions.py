"""Blue-green index versions for the embedded index: several SQLite index files behind one
alias, the local counterpart of OpenSearch index aliases.

Layout under ``RAGLINE_HOME``: ``index.db`` is the version named ``default`` (what a store
had before versions existed); new versions are ``indexes/<name>.db`` with a
``indexes/<name>.json`` manifest; ``indexes/alias.json`` names the live version and the one
before it. The alias file is replaced atomically (write a temp file, fsync, ``os.replace``),
so a reader sees the old alias or the new one, never a torn one; :class:`AliasedIndex` checks
the file's stat on every call and follows a switch made by another process (``ragline index
promote`` while ``ragline serve`` runs).
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from ...errors import InvalidInput, NotFound, RaglineError
from .index import LocalHybridIndex


class Conflict(RaglineError):
    """The operation does not fit the versions' current state (already live, no rollback
    target, name taken, documents changed since the build)."""

    http_status = 409
    code = "index_version_conflict"

DEFAULT = "default"
_NAME = re.compile(r"^[A-Za-z0-9][\w.-]{0,63}$")


def check_name(name: str) -> str:
    if not _NAME.match(name or "") or name in ("alias",):
        raise InvalidInput(f"invalid index version name {name!r}: letters, digits, '.', '_' or '-', at most 64")
    return name


class IndexVersions:
    def __init__(self, home: Path):
        self.home = Path(home)
        self.root = self.home / "indexes"
        self.alias_file = self.root / "alias.json"

    # ------------------------------------------------------------------ names and paths
    def path(self, name: str) -> Path:
        return self.home / "index.db" if name == DEFAULT else self.root / f"{check_name(name)}.db"

    def manifest_path(self, name: str) -> Path:
        return self.root / f"{check_name(name)}.json"

    def exists(self, name: str) -> bool:
        return self.path(name).exists()

    def names(self) -> list[str]:
        out = [DEFAULT] if (self.home / "index.db").exists() else []
        if self.root.exists():
            out += sorted(p.stem for p in self.root.glob("*.db"))
        return out

    def alias(self) -> dict[str, Any]:
        try:
            return json.loads(self.alias_file.read_text())
        except FileNotFoundError:
            return {"live": DEFAULT, "previous": None, "history": []}

    def live(self) -> str:
        return self.alias()["live"]

    def manifest(self, name: str) -> dict[str, Any] | None:
        try:
            return json.loads(self.manifest_path(name).read_text()) if name != DEFAULT else None
        except FileNotFoundError:
            return None

    def write_manifest(self, name: str, data: dict[str, Any]) -> None:
        self._atomic_write(self.manifest_path(name), data)

    def next_name(self) -> str:
        n = 1 + max([int(m.group(1)) for m in (re.match(r"^v(\d+)$", x) for x in self.names()) if m] or [0])
        return f"v{n:03d}"

    def describe(self) -> list[dict[str, Any]]:
        a = self.alias()
        rows = []
        for name in self.names():
            p = self.path(name)
            m = self.manifest(name) or {}
            rows.append({"name": name, "live": name == a["live"], "previous": name == a.get("previous"),
                         "bytes": p.stat().st_size, "built_at": m.get("built_at"), "chunks": m.get("chunks"),
                         "documents": m.get("documents"), "embedding_model": m.get("embedding_model"),
                         "chunker": m.get("chunker"), "source": m.get("source")})
        return rows

    # ------------------------------------------------------------------ alias switch
    def _atomic_write(self, path: Path, data: dict[str, Any]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        with tmp.open("w") as f:
            json.dump(data, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def switch(self, name: str) -> dict[str, Any]:
        """Point the alias at ``name`` (the previous live version is remembered for rollback)."""
        if not self.exists(name):
            raise NotFound(f"no index version {name}")
        a = self.alias()
        if a["live"] == name:
            raise Conflict(f"index version {name} is already live")
        new = {"live": name, "previous": a["live"], "switched_at": time.time(),
               "history": ([*a.get("history", []), {"from": a["live"], "to": name, "at": time.time()}])[-50:]}
        self._atomic_write(self.alias_file, new)
        return new

    def rollback(self) -> dict[str, Any]:
        prev = self.alias().get("previous")
        if not prev:
            raise Conflict("there is no previous index version to roll back to")
        return self.switch(prev)

    # ------------------------------------------------------------------ files
    def create(self, name: str | None = None) -> str:
        name = check_name(name or self.next_name())
        if name == DEFAULT or self.exists(name):
            raise Conflict(f"index version {name} already exists")
        self.root.mkdir(parents=True, exist_ok=True)
        return name

    def snapshot(self, name: str, dest: Path) -> Path:
        """A consistent copy of a version (SQLite's online backup: readers and writers keep going)."""
        src = self.path(name)
        if not src.exists():
            raise NotFound(f"no index version {name}")
        dest = Path(dest)
        if dest.exists():
            raise Conflict(f"{dest} already exists")
        dest.parent.mkdir(parents=True, exist_ok=True)
        _backup(src, dest)
        return dest

    def restore(self, src: Path, name: str | None = None) -> str:
        """A new (not live) version from a snapshot file."""
        src = Path(src)
        if not src.is_file():
            raise NotFound(f"no snapshot at {src}")
        name = self.create(name)
        _backup(src, self.path(name))
        self.write_manifest(name, {"name": name, "built_at": time.time(), "source": f"restored from {src}"})
        return name

    def delete(self, name: str) -> None:
        a = self.alias()
        if name in (a["live"], a.get("previous")) or name == DEFAULT:
            raise Conflict(f"index version {name} is live or the rollback target; not deleted")
        for suffix in (".db", ".db-wal", ".db-shm", ".json"):
            (self.root / f"{check_name(name)}{suffix}").unlink(missing_ok=True)


def _backup(src: Path, dest: Path) -> None:
    s, d = sqlite3.connect(src), sqlite3.connect(dest)
    try:
        s.backup(d)
    finally:
        d.close()
        s.close()


class AliasedIndex:
    """The :class:`~ragline.ports.SearchIndex` the local factory hands out: every call goes to
    the version the alias names at that moment."""

    def __init__(self, versions: IndexVersions, dimensions: int):
        self.versions = versions
        self.dim = dimensions
        self._lock = threading.Lock()
        self._open: dict[str, LocalHybridIndex] = {}
        self._stamp: tuple | None = None
        self._live = DEFAULT

    def _alias_stamp(self) -> tuple | None:
        try:
            st = os.stat(self.versions.alias_file)
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def at_version(self, name: str) -> LocalHybridIndex:
        with self._lock:
            idx = self._open.get(name)
            if idx is None:
                if name != DEFAULT and not self.versions.exists(name):
                    raise NotFound(f"no index version {name}")
                idx = LocalHybridIndex(self.versions.path(name), self.dim)
                self._open[name] = idx
            return idx

    @property
    def live_name(self) -> str:
        stamp = self._alias_stamp()
        if stamp != self._stamp:
            self._live = self.versions.live()
            self._stamp = stamp
        return self._live

    def current(self) -> LocalHybridIndex:
        return self.at_version(self.live_name)

    # the SearchIndex port, delegated
    def stage(self, chunks):
        return self.current().stage(chunks)

    def publish(self, tenant, doc_id, version):
        return self.current().publish(tenant, doc_id, version)

    def discard(self, tenant, doc_id, version):
        return self.current().discard(tenant, doc_id, version)

    def delete_document(self, tenant, doc_id):
        return self.current().delete_document(tenant, doc_id)

    def search(self, scope, request):
        return self.current().search(scope, request)

    def count(self, scope, doc_id=None):
        return self.current().count(scope, doc_id)

    def centroid(self, tenant):
        return self.current().centroid(tenant)

    def __getattr__(self, name: str) -> Any:  # live_chunk_ids, all_chunk_ids, ...
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.current(), name)

    def close(self) -> None:
        with self._lock:
            for idx in self._open.values():
                idx.close()
