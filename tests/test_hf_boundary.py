"""transformers' private SAM 2 video API is touched in one module only (``model/hf_sam2.py``),
so a transformers upgrade has one place to check (issue 12)."""

from __future__ import annotations

import ast
from pathlib import Path

import torch
from transformers import Sam2VideoInferenceSession, Sam2VideoModel

import napari_cellsam2

PACKAGE = Path(napari_cellsam2.__file__).parent
ADAPTER = PACKAGE / "model" / "hf_sam2.py"


def _private_names() -> set[str]:
    """Underscore methods of ``Sam2VideoModel`` and the state attributes of a transformers
    inference session (what a caller would have to reach into)."""
    methods = {
        name
        for name in dir(Sam2VideoModel)
        if name.startswith("_")
        and not name.startswith("__")
        and callable(getattr(Sam2VideoModel, name))
    }
    methods -= set(dir(torch.nn.Module))  # nn.Module's own (_apply, _get_name, ...) are public
    session = Sam2VideoInferenceSession(video=None, video_height=8, video_width=8)
    state = set(vars(session)) - {"video_height", "video_width", "dtype"}
    return methods | state


def _violations(path: Path, private: set[str]) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
            "transformers.models"
        ):
            found.append(f"{path.name}:{node.lineno} imports {node.module}")
        if isinstance(node, ast.Attribute) and node.attr in private:
            found.append(f"{path.name}:{node.lineno} uses .{node.attr}")
    return found


def test_private_transformers_access_is_confined_to_the_adapter():
    private = _private_names()
    assert {"_encode_new_memory", "output_dict_per_obj", "processed_frames"} <= private
    assert _violations(ADAPTER, private)  # the scan sees what the adapter does
    found = [
        v
        for path in sorted(PACKAGE.rglob("*.py"))
        if path != ADAPTER
        for v in _violations(path, private)
    ]
    assert found == []


def test_the_scan_finds_a_private_call(tmp_path):
    source = tmp_path / "leak.py"
    source.write_text(
        "def f(model, view):\n    view.cache = None\n    model._encode_new_memory()\n"
    )
    assert len(_violations(source, _private_names())) == 2
