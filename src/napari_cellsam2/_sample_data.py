"""napari sample data: a synthetic mother-machine time-lapse with TRA labels and tracks."""

from __future__ import annotations

from .ctc.napari_layers import LayerData, layers_from_arrays

SAMPLE_NAME = "mother machine"


def mother_machine_sample() -> list[LayerData]:
    """Layers ``"mother machine"`` (image), ``"… TRA"`` (labels), ``"… TRA tracks"`` (divisions)."""
    from .datasets import sample_sequence

    seq = sample_sequence()
    return layers_from_arrays(SAMPLE_NAME, seq.images, seq.labels, seq.parents)
