"""Where a training step's aten ops come from: per SAM 2 module, and per mask-decoder pass.

    OMP_NUM_THREADS=1 python benchmarks/ops_by_module.py

Builds the training objective of ``profile_training_step.py``'s CPU proxy (tiny model, 128 px,
4-frame clips, at most 8 objects, synthetic mother machine seed 0), runs the forward pass and
loss of one seeded batch under torch.profiler and attributes every ``aten::`` op to the nearest
enclosing SAM 2 submodule (or the loss); prints the calls and ops per module. Then profiles one
decoder pass (``training.forward.decode``: prompt encoder, mask decoder, object-pointer head) of 8
objects, forward and backward. Prints a table; no files.
"""

from __future__ import annotations

import collections

import torch
from cpu_proxy import proxy_trainer
from torch.profiler import ProfilerActivity, profile, record_function

import napari_cellsam2.training.objective as objective
from napari_cellsam2.training.forward import decode

MODULES = (
    "vision_encoder",
    "prompt_encoder",
    "mask_decoder",
    "memory_attention",
    "memory_encoder",
    "object_pointer_proj",
    "mask_downsample",
)


def _labelled(fn, label: str, calls: collections.Counter):
    def wrapper(*args, **kwargs):
        calls[label] += 1
        with record_function(f"MOD::{label}"):
            return fn(*args, **kwargs)

    return wrapper


def _ops_by_label(prof) -> collections.Counter:
    counts: collections.Counter = collections.Counter()
    for event in prof.events():
        if not event.name.startswith("aten::"):
            continue
        parent, label = event.cpu_parent, "other"
        while parent is not None:
            if parent.name.startswith("MOD::"):
                label = parent.name[5:]
                break
            parent = parent.cpu_parent
        counts[label] += 1
    return counts


def main() -> None:
    trainer = proxy_trainer("ops-by-module-")
    sam = trainer.module.sam
    calls: collections.Counter = collections.Counter()
    for name in MODULES:
        module = getattr(sam, name)
        module.forward = _labelled(module.forward, name, calls)
    objective.clip_losses = _labelled(objective.clip_losses, "loss", calls)
    batch = next(iter(trainer.loader))
    trainer.module.train()
    trainer.module(batch, torch.Generator().manual_seed(0))  # warm-up
    calls.clear()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        trainer.module(batch, torch.Generator().manual_seed(0))
    counts = _ops_by_label(prof)
    print(f"one step's forward pass and loss: {sum(counts.values())} aten ops")
    print(f"{'module':<22}{'calls':>7}{'aten ops':>10}")
    for label, ops in counts.most_common():
        print(f"{label:<22}{calls.get(label, 0):>7}{ops:>10}")

    sam.train()
    m = 8
    size = sam.backbone_feature_sizes
    width = sam.config.mask_decoder_config.hidden_size
    embeddings = [
        torch.randn(m, width // 8, *size[0]),
        torch.randn(m, width // 4, *size[1]),
        torch.randn(m, width, *size[2]),
    ]
    coords = torch.rand(m, 1, 2) * sam.image_size
    labels = torch.ones(m, 1, dtype=torch.int32)
    decode(sam, embeddings, coords, labels, None, True)  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        result = decode(sam, embeddings, coords, labels, None, True)
    forward = sum(e.count for e in prof.key_averages() if e.key.startswith("aten::"))
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        (result.mask_logits.sum() + result.iou_scores.sum()).backward()
    backward = sum(e.count for e in prof.key_averages() if e.key.startswith("aten::"))
    print(f"one decoder pass of {m} objects: {forward} aten ops forward, {backward} backward")


if __name__ == "__main__":
    main()
