"""The CPU proxy set-up of issue 12, shared by the probes that dissect one training step.

The tiny model at 128 px, 4-frame clips, at most 8 objects, on a synthetic mother machine
(seed 0, 4 movies of 30 frames): ``profile_training_step.py --device cpu --resolution 128
--frames 4 --objects 8``, built here as a :class:`~napari_cellsam2.training.loop.Trainer` whose
objective module can be called on single batches (``ops_by_module.py``, ``compile_probe.py``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from napari_cellsam2.datasets import write_dataset
from napari_cellsam2.training.config import load_config
from napari_cellsam2.training.loop import Trainer, epoch_scratch


def proxy_trainer(prefix: str) -> Trainer:
    """A set-up trainer on one torch thread, in a fresh temporary folder named ``prefix``, with
    epoch 1's curriculum (``trainer.module`` is the objective, ``trainer.loader`` the clips)."""
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix=prefix))
    data = write_dataset(work / "data", "mother-machine", sequences=4, frames=30, seed=0)
    cfg = load_config(
        [
            f"launcher.experiment_log_dir={work / 'runs'}",
            "model.base=tiny",
            "model.device=cpu",
            f"dataset.data_dir={data}",
            "scratch.num_frames=4",
            "scratch.max_num_objects=8",
            "scratch.resolution=128",
            "scratch.val_tracking_sequences=0",
        ]
    )
    trainer = Trainer(cfg)
    trainer._setup()
    trainer.module.scratch = epoch_scratch(trainer.scratch, 1)
    return trainer
