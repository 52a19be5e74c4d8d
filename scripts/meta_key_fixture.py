"""Write the Meta -> transformers key-map fixture that anchors our SAM 2 ``.pt`` loader's tests.

Our loader (``napari_cellsam2.model.meta_checkpoint``) renames Meta's parameter names with one
bidirectional table, and its round-trip tests build Meta files with the inverse of that same
table, so a wrong entry is wrong both ways and invisible. This script produces the key map from
two sources that do not involve our table at all:

* the Meta key names (and shapes) come from Meta's own model code: the ``SAM2Base`` described by
  ``sam2/configs/sam2.1/sam2.1_hiera_t.yaml`` in a checkout of facebookresearch/sam2 is built on
  the CPU and its ``state_dict()`` is read;
* the HF names come from transformers' conversion script for SAM 2 video
  (``src/transformers/models/sam2_video/convert_sam2_video_to_hf.py``; not in the wheel): its
  ``replace_keys`` is applied to that state dict. Each Meta tensor carries a distinct value, so
  the output can be traced back to its inputs, including the structural changes (four point
  embeddings concatenated into one table, the positional matrix stored under two names).

Neither project's code is copied here: both are imported from the paths given, at generation time
only. The tests read the committed JSON, so they need neither checkout.

Regenerate the committed fixtures as below. ``HF`` is the newer of the two versions of the script
that could be found (it uses httpx, as the installed transformers 5.x does; the older,
requests-based cd16edb0 has identical key-renaming code); the fixture's ``source_sha256`` is the
file's hash. ``META`` is facebookresearch/sam2 as of December 2024 (SAM 2.1 code)::

    HF=09cb93d8890401636f6abd80b763671e755aa025
    META=2b90b9f5ceec907a1c18123530e92e794ad901a4
    SCRIPT=src/transformers/models/sam2_video/convert_sam2_video_to_hf.py
    git -C transformers show "$HF:$SCRIPT" > /tmp/convert_sam2_video_to_hf.py
    git -C sam2 checkout "$META"
    for arch in hiera_tiny tiny; do
      OMP_NUM_THREADS=1 python scripts/meta_key_fixture.py /tmp/convert_sam2_video_to_hf.py \\
        --script-source "huggingface/transformers@$HF:$SCRIPT" \\
        --sam2 sam2 --sam2-source "facebookresearch/sam2@$META" \\
        --arch "$arch" --out "tests/fixtures/meta_keys/$arch.json"
    done

``--arch tiny`` shrinks Meta's hiera-tiny config to our ``tiny_config()`` test architecture. Only
its key names are written: Meta's memory-fuser block fixes its hidden width at 4 x dim, which the
tiny config does not use, so Meta cannot build that model with the tiny config's exact shapes.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import importlib
import importlib.util
import json
import re
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

ReplaceKeys = Callable[[dict[str, torch.Tensor], Any], dict[str, torch.Tensor]]

_CONFIG = "sam2/configs/sam2.1/sam2.1_hiera_t.yaml"

# Meta's hiera-tiny config shrunk to napari_cellsam2.model.tiny.tiny_config() (dotted paths into
# the YAML's ``model`` node). Only the block / layer counts change key names; widths are set so
# that every shape but the memory fuser's hidden layer matches the tiny config.
_TINY_OVERRIDES: dict[str, Any] = {
    "image_size": 256,
    "image_encoder.trunk.embed_dim": 8,
    "image_encoder.trunk.stages": [1, 1, 2, 1],
    "image_encoder.trunk.global_att_blocks": [3],
    "image_encoder.neck.d_model": 128,
    "image_encoder.neck.backbone_channel_list": [64, 32, 16, 8],
    "image_encoder.neck.position_encoding.num_pos_feats": 128,
    "memory_attention.d_model": 128,
    "memory_attention.num_layers": 1,
    "memory_attention.layer.d_model": 128,
    "memory_attention.layer.dim_feedforward": 64,
    "memory_attention.layer.self_attention.embedding_dim": 128,
    "memory_attention.layer.self_attention.feat_sizes": [16, 16],
    "memory_attention.layer.cross_attention.embedding_dim": 128,
    "memory_attention.layer.cross_attention.feat_sizes": [16, 16],
    "memory_encoder.in_dim": 128,
    "memory_encoder.mask_downsampler.embed_dim": 128,
    "memory_encoder.fuser.layer.dim": 128,
}


def load_replace_keys(script: Path) -> ReplaceKeys:
    """transformers' ``replace_keys`` from the conversion script at ``script``.

    The script is imported as a module. Its top level also imports what only the conversion run
    needs (an HTTP client, image processors); when one of those is missing, the module's
    top-level definitions (tables and functions, not imports and not the ``__main__`` block) are
    executed instead, with the two modules ``replace_keys`` uses (``re``, ``torch``) provided.
    """
    spec = importlib.util.spec_from_file_location("_hf_sam2_video_conversion", script)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {script}")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        return module.replace_keys
    except ImportError as err:
        print(f"importing {script.name} failed ({err}); executing its definitions only")
    tree = ast.parse(script.read_text(encoding="utf-8"), filename=str(script))
    tree.body = [
        node
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.ClassDef | ast.Assign | ast.AnnAssign)
    ]
    namespace: dict[str, Any] = {"re": re, "torch": torch, "__name__": "_hf_sam2_video_defs"}
    exec(compile(tree, str(script), "exec"), namespace)
    return namespace["replace_keys"]


def _expose_meta_modeling(checkout: Path) -> None:
    """Make ``sam2.modeling`` importable from a checkout of facebookresearch/sam2.

    ``sam2/__init__.py`` initialises hydra (only needed by ``build_sam``), so the package object
    is created here without running it. ``iopath`` is only used by Hiera to load pretrained
    weights; if it is not installed, a stand-in module lets Hiera's module import.
    """
    package = types.ModuleType("sam2")
    package.__path__ = [str(checkout / "sam2")]
    sys.modules["sam2"] = package
    if importlib.util.find_spec("iopath") is None:
        file_io = types.ModuleType("iopath.common.file_io")
        file_io.g_pathmgr = None  # type: ignore[attr-defined]
        for name in ("iopath", "iopath.common"):
            sys.modules[name] = types.ModuleType(name)
        sys.modules["iopath.common.file_io"] = file_io


def _instantiate(node: Any) -> Any:
    """Build the objects a hydra-style config describes (``_target_`` = class path)."""
    if isinstance(node, list):
        return [_instantiate(item) for item in node]
    if not isinstance(node, dict):
        return node
    kwargs = {key: _instantiate(value) for key, value in node.items() if key != "_target_"}
    if "_target_" not in node:
        return kwargs
    module_name, _, name = node["_target_"].rpartition(".")
    return getattr(importlib.import_module(module_name), name)(**kwargs)


def meta_state_dict(checkout: Path, arch: str) -> dict[str, torch.Tensor]:
    """The state dict of Meta's ``SAM2Base`` for ``arch`` (``hiera_tiny`` or ``tiny``)."""
    _expose_meta_modeling(checkout)
    config = OmegaConf.load(checkout / _CONFIG)
    if arch == "tiny":
        for path, value in _TINY_OVERRIDES.items():
            OmegaConf.update(config, f"model.{path}", value, force_add=True)
    model_config = OmegaConf.to_container(config.model, resolve=True)
    with torch.random.fork_rng(devices=[]):
        model = _instantiate(model_config)
    return dict(model.state_dict())


def trace_conversion(
    meta: dict[str, torch.Tensor], replace_keys: ReplaceKeys
) -> tuple[list[list[str]], dict[str, list[str]]]:
    """Run ``replace_keys`` on tagged stand-ins for ``meta``; return (pairs, merged rows).

    Every Meta tensor is replaced by a 1 x 1 tensor holding its index, so each output tensor
    names the Meta tensors it was made of. ``pairs`` lists every (Meta key, HF key) link; an HF
    tensor built from several Meta tensors is also listed in ``rows`` with its sources in row
    order (the point-embedding concatenation).
    """
    names = list(meta)
    tagged = {name: torch.full((1, 1), float(i)) for i, name in enumerate(names)}
    converted = replace_keys(tagged, None)
    pairs: list[list[str]] = []
    rows: dict[str, list[str]] = {}
    for hf_key, value in converted.items():
        sources = [names[int(tag)] for tag in value.flatten().tolist()]
        if len(sources) > 1:
            rows[hf_key] = sources
        pairs.extend([meta_key, hf_key] for meta_key in sources)
    lost = set(names) - {meta_key for meta_key, _ in pairs}
    if lost:
        raise RuntimeError(f"the conversion dropped Meta keys: {sorted(lost)}")
    return pairs, rows


def _dump(fixture: dict[str, Any]) -> str:
    """JSON with one pair / row list / shape per line, so that a regenerated fixture diffs well."""
    fields = []
    for key, value in fixture.items():
        if isinstance(value, list):
            items = [f"  {json.dumps(item)}" for item in value]
        elif isinstance(value, dict):
            items = [f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in value.items()]
        else:
            fields.append(f" {json.dumps(key)}: {json.dumps(value)}")
            continue
        brackets = "[]" if isinstance(value, list) else "{}"
        body = ",\n".join(items)
        fields.append(f" {json.dumps(key)}: {brackets[0]}\n{body}\n {brackets[1]}")
    return "{\n" + ",\n".join(fields) + "\n}\n"


def main(argv: list[str] | None = None) -> None:
    """Parse the arguments, build both name lists, write the JSON fixture."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("script", type=Path, help="transformers' convert_sam2_video_to_hf.py")
    parser.add_argument(
        "--script-source", required=True, help="<repo>@<commit>:<path> of that script"
    )
    parser.add_argument(
        "--sam2", type=Path, required=True, help="checkout of facebookresearch/sam2"
    )
    parser.add_argument("--sam2-source", required=True, help="<repo>@<commit> of that checkout")
    parser.add_argument("--arch", choices=("hiera_tiny", "tiny"), default="hiera_tiny")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    meta = meta_state_dict(args.sam2, args.arch)
    pairs, rows = trace_conversion(meta, load_replace_keys(args.script))
    fixture: dict[str, Any] = {
        "source": args.script_source,
        "source_sha256": hashlib.sha256(args.script.read_bytes()).hexdigest(),
        "meta_keys_source": f"{args.sam2_source}:{_CONFIG}",
        "arch": args.arch,
        "pairs": pairs,
        "rows": rows,
    }
    if args.arch == "hiera_tiny":
        fixture["meta_shapes"] = {name: list(value.shape) for name, value in meta.items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(_dump(fixture), encoding="utf-8")
    print(f"{args.out}: {len(meta)} Meta keys, {len(pairs)} pairs, {len(rows)} merged tensor(s)")


if __name__ == "__main__":
    main()
