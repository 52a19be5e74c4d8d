"""The Zenodo download path against a loopback HTTP server: progress, checksum, resume, layout."""

from __future__ import annotations

import hashlib
import io
import json
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from napari_cellsam2.ctc import Lineage, open_dataset, write_gt, write_images
from napari_cellsam2.datasets.download import DownloadError, download_record


def _archive(tmp_path) -> bytes:
    """A zip laid out like a CTC download: ``MOMA/01``, ``MOMA/01_GT`` … three sequences."""
    lab = np.zeros((3, 12, 8), np.uint16)
    lab[:, 2:6, 2:6] = 1
    src = tmp_path / "src" / "MOMA"
    for name in ("01", "02", "03"):
        write_images(src / name, lab * 7)
        write_gt(src / f"{name}_GT", lab, Lineage.from_labels(lab))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for path in sorted(src.parent.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(src.parent))
    return buf.getvalue()


class _Server:
    """Serves a Zenodo-like record JSON and one file, honouring Range; counts requests."""

    def __init__(self, payload: bytes, md5: str, cut_after: int | None = None):
        self.payload, self.md5, self.cut_after = payload, md5, cut_after
        self.ranges: list[str | None] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                if self.path == "/api/records/42":
                    body = json.dumps(
                        {
                            "files": [
                                {
                                    "key": "moma.zip",
                                    "size": len(server.payload),
                                    "checksum": f"md5:{server.md5}",
                                    "links": {"self": f"{server.url}/files/moma.zip"},
                                }
                            ]
                        }
                    ).encode()
                    self.send_response(200)
                    self.end_headers()
                    self.wfile.write(body)
                    return
                rng = self.headers.get("Range")
                server.ranges.append(rng)
                start = int(rng.split("=")[1].rstrip("-")) if rng else 0
                body = server.payload[start:]
                if server.cut_after is not None:  # first request dies half-way
                    body, server.cut_after = body[: server.cut_after], None
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(server.payload)))
                    self.end_headers()
                    self.wfile.write(body)
                    self.wfile.flush()
                    self.connection.close()
                    return
                self.send_response(206 if rng else 200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


@pytest.fixture
def payload(tmp_path):
    data = _archive(tmp_path)
    return data, hashlib.md5(data).hexdigest()


def test_download_reports_progress_and_lays_out_splits(tmp_path, payload):
    server = _Server(*payload)
    seen = []
    try:
        out = download_record(
            tmp_path / "moma",
            "42",
            f"{server.url}/api/records",
            progress=lambda name, done, total: seen.append((name, done, total)),
        )
    finally:
        server.close()
    assert seen[-1] == ("moma.zip", len(payload[0]), len(payload[0]))
    ds = open_dataset(out)
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 1, "val": 1, "test": 1}
    ds.sequences("train")[0].validate()
    # downloading again lays the splits out afresh and keeps the earlier layout, which may
    # hold the user's corrections, as a dated backup
    corrected = out / "train" / "CTC" / "01_GT" / "TRA" / "man_track.txt"
    corrected.write_text(corrected.read_text() + "\n")
    server = _Server(*payload)
    try:
        download_record(tmp_path / "moma", "42", f"{server.url}/api/records")
    finally:
        server.close()
    (kept,) = out.parent.glob(f"{out.name}.backup-*")
    relative = corrected.relative_to(out)
    assert (kept / relative).read_text() == corrected.read_text() + "\n"


def test_interrupted_download_resumes_with_range(tmp_path, payload):
    server = _Server(*payload, cut_after=1000)
    try:
        with pytest.raises((DownloadError, OSError, ValueError)):
            download_record(tmp_path / "moma", "42", f"{server.url}/api/records")
        part = tmp_path / "moma" / "downloads" / "moma.zip.part"
        assert part.stat().st_size == 1000
        download_record(tmp_path / "moma", "42", f"{server.url}/api/records")
    finally:
        server.close()
    assert server.ranges == [None, "bytes=1000-"]
    assert (tmp_path / "moma" / "downloads" / "moma.zip").read_bytes() == payload[0]


def test_checksum_mismatch_removes_the_file(tmp_path, payload):
    server = _Server(payload[0], "0" * 32)
    try:
        with pytest.raises(DownloadError, match="checksum mismatch"):
            download_record(tmp_path / "moma", "42", f"{server.url}/api/records")
    finally:
        server.close()
    assert not list((tmp_path / "moma" / "downloads").iterdir())


def test_offline_gives_a_clear_error(tmp_path):
    with pytest.raises(DownloadError, match="looks offline"):
        download_record(tmp_path / "moma", "42", "http://127.0.0.1:9/api/records")


def test_cli_download_offline_exits_nonzero(tmp_path, capsys):
    from napari_cellsam2.cli import main

    code = main(
        [
            "download",
            "moma",
            "--out",
            str(tmp_path / "m"),
            "--record",
            "42",
            "--api-url",
            "http://127.0.0.1:9/api/records",
        ]
    )
    assert code == 2
    assert "looks offline" in capsys.readouterr().err


def test_fewer_than_three_sequences_all_go_to_train(tmp_path):
    """Two labelled sequences used to give train [01, 02], val [02], test [02]: a model was
    then scored on a sequence it trained on."""
    from napari_cellsam2.datasets.download import layout_splits

    lab = np.zeros((3, 12, 8), np.uint16)
    lab[:, 2:6, 2:6] = 1
    for name in ("01", "02"):
        write_images(tmp_path / "x" / name, lab * 7)
        write_gt(tmp_path / "x" / f"{name}_GT", lab, Lineage.from_labels(lab))
    with pytest.warns(UserWarning, match="all go to train"):
        out = layout_splits(tmp_path / "x", tmp_path / "dataset")
    assert {k: len(v) for k, v in open_dataset(out).splits.items() if v} == {"train": 2}
