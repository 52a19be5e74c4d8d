"""The lineage that goes with a labels layer, for export and fine-tuning."""

from __future__ import annotations

from typing import Any

from napari.layers import Labels, Tracks
from napari.utils.notifications import show_info, show_warning

from ..ctc.napari_layers import META_KEY, PARENTS_KEY, links_from_metadata, parents_from_graph


def _same_sequence(labels: Labels, tracks: Tracks) -> bool:
    mine, theirs = labels.metadata.get(META_KEY), tracks.metadata.get(META_KEY)
    return bool(mine and theirs and mine.get("sequence") and
                (mine.get("sequence"), mine.get("folder")) ==
                (theirs.get("sequence"), theirs.get("folder")))  # fmt: skip


def layer_lineage_inputs(viewer, labels: Labels) -> tuple[Any, dict[int, int], int]:
    """Labels array, parent links and first CTC frame of a labels layer.

    Links come from the layer's metadata (layers made by this plugin carry them, ``{}`` when
    there are no divisions). Layers without that entry (e.g. made by another plugin) take the
    links of a Tracks layer of the same sequence, or of the only Tracks layer with divisions;
    with several candidates none is guessed.
    """
    parents, first = links_from_metadata(labels.metadata)
    if PARENTS_KEY not in labels.metadata:  # {} there means "no divisions", not "unknown"
        candidates = [layer for layer in viewer.layers if isinstance(layer, Tracks) and layer.graph]
        same = [layer for layer in candidates if _same_sequence(labels, layer)]
        chosen = same or (candidates if len(candidates) == 1 else [])
        if chosen:
            parents = parents_from_graph(chosen[0].graph)
            show_info(f"divisions of '{labels.name}' taken from tracks layer '{chosen[0].name}'")
        elif candidates:
            names = ", ".join(f"'{layer.name}'" for layer in candidates)
            show_warning(
                f"'{labels.name}' has no division links and {len(candidates)} tracks layers "
                f"have some ({names}); none was used. Keep only the matching tracks layer to "
                "use its links."
            )
    return labels.data, parents, first  # may be lazy: workers read it, not the GUI thread
