"""Does ``torch.compile`` of SAM 2's submodules cut the training step's aten ops (issue 12)?

    OMP_NUM_THREADS=1 python benchmarks/compile_probe.py [--compile mask_decoder,...]

Builds the CPU proxy of ``profile_training_step.py`` (tiny model, 128 px, 4-frame clips, at most
8 objects, synthetic mother machine seed 0), compiles the named submodules of the model in place
(``nn.Module.compile(dynamic=True)``, inductor; none by default), then runs forward and backward
of 3 fixed batches: once to warm up (and compile), once timed with each batch's loss printed, and
once under torch.profiler, counting every ``aten::`` event per batch (no optimizer step, so the
count is lower than ``aten_ops_per_step``). Compare the printed losses and counts between runs with
and without ``--compile``. Prints; no files.
"""

from __future__ import annotations

import argparse
import time

import torch
from cpu_proxy import proxy_trainer
from torch.profiler import ProfilerActivity, profile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compile", default="", help="comma-separated submodules of the model")
    args = parser.parse_args()
    trainer = proxy_trainer("compile-probe-")
    names = [name for name in args.compile.split(",") if name]
    for name in names:
        getattr(trainer.module.sam, name).compile(dynamic=True)
    batches = [batch for _, batch in zip(range(3), iter(trainer.loader), strict=False)]
    trainer.module.train()

    def step(batch) -> float:
        loss, _ = trainer.module(batch, torch.Generator().manual_seed(0))
        loss.backward()
        return float(loss.detach())

    start = time.perf_counter()
    for batch in batches:
        step(batch)
    print(
        f"compiled {names or 'nothing'}; warm-up (with compilation): "
        f"{time.perf_counter() - start:.1f} s"
    )
    for i, batch in enumerate(batches):
        start = time.perf_counter()
        loss = step(batch)
        print(f"batch {i}: loss {loss:.6f}, {time.perf_counter() - start:.2f} s")
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for batch in batches:
            step(batch)
    ops = sum(1 for event in prof.events() if event.name.startswith("aten::")) / len(batches)
    print(f"aten ops per forward + backward: {ops:,.0f}")


if __name__ == "__main__":
    main()
