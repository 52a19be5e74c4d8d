"""The one-command demo: napari with the CellSAM2 dock and the synthetic sample loaded.

The model defaults to sam2.1-hiera-tiny when its weights are in the Hugging Face cache; otherwise
the user is told exactly how to get them and the shipped ``demo`` model is loaded: a small SAM 2
trained here on synthetic data only, labelled so.
"""

from __future__ import annotations

from typing import Any

from napari.utils.notifications import show_warning

from ..model.loading import how_to_get, hub_settings
from .dock import CellSAM2Widget
from .model_panel import DEMO_LABEL, DEMO_MODEL

DEFAULT_MODEL = "facebook/sam2.1-hiera-tiny"
SAMPLE = ("napari-cellsam2", "mother_machine")


def hub_weights_cached(repo_id: str = DEFAULT_MODEL) -> bool:
    """True when the hub model's weights are already in the local Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    cache = hub_settings()[1]
    found = try_to_load_from_cache(repo_id, "model.safetensors", cache_dir=cache)
    return isinstance(found, str)


def open_demo(viewer: Any, *, load: bool = True) -> CellSAM2Widget:
    """Open the sample and the dock in ``viewer``; pick (and load) the best available model."""
    sample = viewer.open_sample(*SAMPLE)  # [image, its GT], appended after the user's layers
    widget = CellSAM2Widget(viewer)
    viewer.window.add_dock_widget(widget, name="CellSAM2", area="right")
    panel = widget.model_panel
    if hub_weights_cached(DEFAULT_MODEL):
        panel.add_spec(DEFAULT_MODEL)
    else:
        show_warning(
            f"{DEFAULT_MODEL} weights are not on this machine. {how_to_get(DEFAULT_MODEL)} "
            f"Loading the shipped model instead ({DEMO_LABEL})."
        )
        panel.add_spec(DEMO_MODEL, DEMO_LABEL)
    widget.track_panel.image.select(sample[0].name)
    widget.track_panel.seed_layer.select(sample[1].name)
    if load:
        panel.load()
    return widget


def demo_command(viewer: napari.viewer.Viewer) -> None:  # noqa: F821 (npe2 injects it)
    """napari command: the same demo inside the running viewer."""
    open_demo(viewer)


def main() -> int:
    """`cellsam2 demo`: start napari with the dock and the sample (blocks until closed)."""
    import napari

    viewer = napari.Viewer(title="CellSAM2 demo")
    open_demo(viewer)
    napari.run()
    return 0
