"""On-disk cache of preprocessed cases, so that later epochs and later runs read no raw files.

Key of a case = SHA-256 over: the cache format version, the case's file list with (path, size, mtime) of every file
(``.mhd`` + ``.raw`` included; or the file contents with ``content_hash=True``), its mask rules, and the
preprocessor's settings and fitted statistics (:meth:`Preprocessor.to_dict`). Any change gives a new key; stale
entries are simply never read again (``clear()`` removes everything).

Each entry is three files in ``root/v1/ab/``: ``KEY.image.npy`` (float32 ``(C, *spatial)``), ``KEY.label.npy``
(integer ``(*spatial)``, absent for unlabelled cases) and ``KEY.json`` (record, case id, sources). Every file is
written to a temporary name and moved into place with ``os.replace``; the JSON goes last and marks the entry
complete, so a crash or two writers racing never leave a half-written entry that is read back.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agseg.data.cases import CaseRef
from agseg.data.io import data_files
from agseg.data.preprocess import Preprocessor, PreprocessRecord
from agseg.fileio import atomic_write

log = logging.getLogger(__name__)

CACHE_VERSION = 1
DEFAULT_CACHE_DIR = ".agseg_cache"


class PreprocessCache:
    """Preprocessed arrays on disk, keyed by source files + preprocessing settings.

    Args:
        root: Cache folder (created on first write), e.g. ``.agseg_cache`` or ``runs/x/cache``.
        content_hash: Key on file contents (SHA-1) instead of size + mtime: survives copies and ``touch``, costs a
            full read of every raw file once per process.
        mmap: Open cached arrays memory-mapped (3D patch training reads only the patch).

    Example:
        >>> cache = PreprocessCache(".agseg_cache")
        >>> image, label, record = cache.get_or_create(case_ref, preprocessor)
    """

    def __init__(self, root: str | Path = DEFAULT_CACHE_DIR, *, content_hash: bool = False, mmap: bool = False) -> None:
        self.root = Path(root)
        self.content_hash = content_hash
        self.mmap = mmap
        self.hits = 0
        self.misses = 0
        self._digests: dict[tuple[str, int, int], str] = {}

    def __repr__(self) -> str:
        return f"PreprocessCache({str(self.root)!r}, hits={self.hits}, misses={self.misses})"

    def __getstate__(self) -> dict[str, Any]:  # picklable for DataLoader workers
        return {**self.__dict__, "_digests": {}}

    # ---- keys
    def _file_sig(self, path: Path) -> list[Any]:
        try:
            st = path.stat()
        except OSError:
            return [str(path), None]
        if not self.content_hash:
            return [str(path.resolve()), st.st_size, st.st_mtime_ns]
        k = (str(path.resolve()), st.st_size, st.st_mtime_ns)
        if k not in self._digests:
            h = hashlib.sha1()
            with open(path, "rb") as f:
                while chunk := f.read(1 << 22):
                    h.update(chunk)
            self._digests[k] = h.hexdigest()
        return [path.name, st.st_size, self._digests[k]]

    def _sources(self, ref: CaseRef) -> dict[str, Any]:
        return {
            "images": [[self._file_sig(f) for f in data_files(p)] for p in ref.image_paths],
            "masks": [[self._file_sig(f) for f in data_files(p)] for p in ref.mask_paths],
            "mask_spec": ref.mask_spec.to_dict(),
            "drop_alpha": ref.drop_alpha,
        }

    def key(self, ref: CaseRef, preprocessor: Preprocessor) -> str:
        """Cache key of ``ref`` preprocessed by ``preprocessor`` (stats only; no file is read)."""
        blob = {"v": CACHE_VERSION, "case": self._sources(ref), "pre": preprocessor.to_dict()}
        return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()

    def stats_key(self, refs: Sequence[CaseRef], extra: dict[str, Any] | None = None) -> str:
        """Key for global intensity statistics of ``refs`` (see :meth:`Preprocessor.fit`); ``extra``: what else
        they depend on (the working grid's settings)."""
        blob: dict[str, Any] = {"v": CACHE_VERSION, "stats": [self._sources(r)["images"] for r in refs]}
        if extra is not None:
            blob["extra"] = extra
        return "stats-" + hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()

    def _paths(self, key: str) -> tuple[Path, Path, Path]:
        d = self.root / f"v{CACHE_VERSION}" / key[-2:]
        return d / f"{key}.image.npy", d / f"{key}.label.npy", d / f"{key}.json"

    # ---- entries
    def load(self, key: str) -> tuple[np.ndarray, np.ndarray | None, PreprocessRecord] | None:
        """The cached ``(image, label, record)`` for ``key``, or ``None``."""
        ip, lp, jp = self._paths(key)
        try:
            meta = json.loads(jp.read_text(encoding="utf-8"))
            mode = "r" if self.mmap else None
            image = np.load(ip, mmap_mode=mode)
            label = np.load(lp, mmap_mode=mode) if meta.get("has_label") else None
        except (OSError, ValueError, json.JSONDecodeError):
            return None
        return image, label, PreprocessRecord.from_dict(meta["record"])

    def save(
        self,
        key: str,
        image: np.ndarray,
        label: np.ndarray | None,
        record: PreprocessRecord,
        *,
        case_id: str = "",
        sources: Any = None,
    ) -> None:
        """Store an entry (atomically)."""
        ip, lp, jp = self._paths(key)
        ip.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(ip, lambda f: np.save(f, np.ascontiguousarray(image, dtype=np.float32)))
        if label is not None:
            atomic_write(lp, lambda f: np.save(f, np.ascontiguousarray(label)))
        meta = {"case_id": case_id, "has_label": label is not None, "record": record.to_dict(), "sources": sources}
        atomic_write(jp, lambda f: f.write(json.dumps(meta).encode()))

    def get_or_create(
        self, ref: CaseRef, preprocessor: Preprocessor
    ) -> tuple[np.ndarray, np.ndarray | None, PreprocessRecord]:
        """Cached ``(image, label, record)`` of ``ref``; on a miss, load, preprocess, store and return it.

        Raises:
            DataError: On a miss, when the case's files are bad.
        """
        key = self.key(ref, preprocessor)
        hit = self.load(key)
        if hit is not None:
            self.hits += 1
            return hit
        self.misses += 1
        out = preprocessor.apply_case(ref.load())
        self.save(key, out.image, out.label, out.record, case_id=ref.case_id, sources=self._sources(ref))
        return out.image, out.label, out.record

    def load_json(self, key: str) -> Any | None:
        """A small JSON object stored with :meth:`save_json` (``None`` if absent)."""
        p = self._paths(key)[2]
        try:
            return json.loads(p.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None

    def save_json(self, key: str, obj: Any) -> None:
        p = self._paths(key)[2]
        p.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(p, lambda f: f.write(json.dumps(obj).encode()))

    def size_bytes(self) -> int:
        """Bytes used on disk."""
        return sum(f.stat().st_size for f in self.root.rglob("*") if f.is_file()) if self.root.exists() else 0

    def clear(self) -> None:
        """Delete every entry."""
        shutil.rmtree(self.root / f"v{CACHE_VERSION}", ignore_errors=True)
