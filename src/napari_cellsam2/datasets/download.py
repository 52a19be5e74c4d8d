"""Fetch a Zenodo record (the MOMA CTC archive) with progress, checksum, resume and a clear
offline error, then lay its CTC sequences out as ``train/val/test`` for training.

Only the standard library talks to the network, so the same code runs against Zenodo and against
a loopback server in the tests (``api_url`` is the only thing that changes).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import urllib.error
import urllib.request
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..ctc.sequence import SPLITS
from ..ctc.writer import atomic_folder, backup_path

MOMA_RECORD = "11237127"
ZENODO_API = "https://zenodo.org/api/records"
CHUNK = 1 << 20

Progress = Callable[[str, int, int], None]  # file name, bytes done, bytes total


class DownloadError(RuntimeError):
    """A download failed; the message says what to do about it."""


@dataclass(frozen=True)
class RemoteFile:
    name: str
    url: str
    size: int
    md5: str | None


def _open(url: str, headers: dict[str, str] | None = None, timeout: float = 30.0):
    request = urllib.request.Request(
        url, headers={"User-Agent": "napari-cellsam2", **(headers or {})}
    )
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise DownloadError(
            f"cannot reach {url} ({getattr(exc, 'reason', exc)}). This machine looks offline: "
            "download the record on a connected machine (the same command), copy the folder here "
            "and pass it to the training command as dataset.data_dir."
        ) from exc


def record_files(record: str = MOMA_RECORD, api_url: str = ZENODO_API) -> list[RemoteFile]:
    """The files of a Zenodo record, from its JSON API."""
    with _open(f"{api_url}/{record}") as response:
        meta = json.load(response)
    files = []
    for entry in meta.get("files", []):
        if Path(entry["key"]).name != entry["key"] or entry["key"] in ("", ".", ".."):
            raise DownloadError(f"record {record}: unsafe file name {entry['key']!r}")
        checksum = entry.get("checksum", "")
        files.append(
            RemoteFile(
                name=entry["key"],
                url=entry["links"]["self"],
                size=int(entry.get("size", 0)),
                md5=checksum.split(":", 1)[1] if checksum.startswith("md5:") else None,
            )
        )
    if not files:
        raise DownloadError(f"record {record} at {api_url} lists no files")
    return files


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def download_file(remote: RemoteFile, folder: Path, progress: Progress | None = None) -> Path:
    """Download into ``folder``, resuming a ``.part`` file with an HTTP Range request."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / remote.name
    if target.exists() and (remote.md5 is None or _md5(target) == remote.md5):
        return target
    part = folder / f"{remote.name}.part"
    done = part.stat().st_size if part.exists() else 0
    if remote.size and done > remote.size:
        part.unlink()
        done = 0
    headers = {"Range": f"bytes={done}-"} if done else {}
    with _open(remote.url, headers) as response:
        if done and response.status != 206:  # the server ignored Range: start over
            done = 0
        with part.open("ab" if done else "wb") as fh:
            while block := response.read(CHUNK):
                fh.write(block)
                done += len(block)
                if progress:
                    progress(remote.name, done, remote.size)
    if remote.size and done < remote.size:  # http.client does not raise on a short body
        raise DownloadError(
            f"{remote.name}: connection dropped after {done} of {remote.size} bytes; "
            "run the command again to resume"
        )
    if remote.md5 is not None and (got := _md5(part)) != remote.md5:
        part.unlink()
        raise DownloadError(
            f"{remote.name}: checksum mismatch (md5 {got}, expected {remote.md5}); the partial "
            "file was removed, run the command again"
        )
    part.rename(target)
    return target


def _split_sequences(sequences: list[Path]) -> dict[str, list[Path]]:
    """Deterministic split by name: the last sequence is test, the one before it val. With
    fewer than 3 sequences all are train: one sequence in two splits would score a model on
    the data it trained on."""
    if len(sequences) < 3:
        warnings.warn(
            f"only {len(sequences)} labelled sequence(s): all go to train, and val and test "
            "stay empty (train with dataset.val_split= to skip validation)",
            stacklevel=2,
        )
        return {"train": sequences}
    return {"train": sequences[:-2], "val": [sequences[-2]], "test": [sequences[-1]]}


def labelled_sequences(root: Path) -> list[Path]:
    """Sequence folders (``01``, ``02`` …) under ``root`` that have a ``_GT`` sibling."""
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_dir() and re.fullmatch(r"\d{2,}", p.name) and (p.parent / f"{p.name}_GT").is_dir()
    )


def layout_splits(extracted: Path, out: Path) -> Path:
    """Copy CTC sequences (``NN`` + ``NN_GT``) from an extracted archive into ``out/<split>/CTC``.

    An archive that already sorts every sequence under ``train/val/test`` keeps that split;
    otherwise all its sequences are split deterministically by path (see :func:`_split_sequences`).
    """
    sequences = labelled_sequences(extracted)
    if not sequences:
        raise DownloadError(f"{extracted}: the archive holds no CTC sequence with ground truth")
    by_split: dict[str | None, list[Path]] = {}
    for seq in sequences:
        split = next((p for p in seq.relative_to(extracted).parts if p in SPLITS), None)
        by_split.setdefault(split, []).append(seq)
    splits = _split_sequences(sequences) if None in by_split else by_split
    # an earlier layout may hold the user's corrections: it is kept as a dated backup
    existing = backup_path(out) if out.is_dir() and any(out.iterdir()) else "replace"
    with atomic_folder(out, lambda p: p.name in SPLITS, existing) as tmp:
        for split, seqs in splits.items():
            for i, seq in enumerate(seqs, start=1):
                dest = tmp / str(split) / "CTC" / f"{i:02d}"
                shutil.copytree(seq, dest)
                for suffix in ("_GT", "_ST"):
                    gt = seq.parent / f"{seq.name}{suffix}"
                    if gt.is_dir():
                        shutil.copytree(gt, dest.parent / f"{dest.name}{suffix}")
    return out


def download_record(
    out: str | Path,
    record: str = MOMA_RECORD,
    api_url: str = ZENODO_API,
    progress: Progress | None = None,
) -> Path:
    """Download every file of ``record`` into ``out/downloads``, extract zips, lay out splits."""
    out = Path(out)
    downloads = out / "downloads"
    archives = [download_file(f, downloads, progress) for f in record_files(record, api_url)]
    extracted = out / "extracted"
    for archive in archives:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                bad = [n for n in zf.namelist() if n.startswith("/") or ".." in Path(n).parts]
                if bad:
                    raise DownloadError(f"{archive}: unsafe path in archive: {bad[0]}")
                zf.extractall(extracted / archive.stem)
    return layout_splits(extracted, out / "dataset")
