"""Deterministic synthetic time-lapses with CTC ground truth (mother machine, nuclei)."""

from .mother_machine import mother_machine
from .nuclei import nuclei_field
from .sample import sample_sequence
from .sequence import SyntheticSequence
from .writer import GENERATORS, sequence_seed, split_counts, write_dataset, write_sequence

__all__ = [
    "GENERATORS",
    "SyntheticSequence",
    "mother_machine",
    "nuclei_field",
    "sample_sequence",
    "sequence_seed",
    "split_counts",
    "write_dataset",
    "write_sequence",
]
