"""Metric names we expose and the py-ctcmetrics metrics that compute them.

py-ctcmetrics is asked for *metrics* (``"TRA"``, ``"BC(1)"`` …) and answers with *scores*, some of
which are by-products (``AOGM``, ``IDSW`` …) or composites (``OP_CTB``, ``BIO(i)``). Callers here
name the scores they want; :func:`plan` turns them into the metric list py-ctcmetrics needs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

# The default: the CTC technical and biological measures, all cheap once masks are matched.
# HOTA and CHOTA are left out: their association loops are quadratic in the number of labels.
DEFAULT_METRICS: tuple[str, ...] = (
    "Valid",
    "TRA",
    "SEG",
    "DET",
    "LNK",
    "OP_CTB",
    "CT",
    "TF",
    "BC(0)",
    "CCA",
)

# The AOGM score and its graph-operation counts, computed with TRA.
_AOGM = ("AOGM", "AOGM_0", "AOGM_NS", "AOGM_FN", "AOGM_FP", "AOGM_ED", "AOGM_EA", "AOGM_EC")

# score name -> the py-ctcmetrics metrics it needs
_PROVIDERS: dict[str, tuple[str, ...]] = {
    "Valid": ("Valid",),
    "DET": ("DET",),
    "SEG": ("SEG",),
    # py-ctcmetrics counts graph operations only when DET or TRA is asked for; LNK reads them.
    "LNK": ("LNK", "DET"),
    "CT": ("CT",),
    "TF": ("TF",),
    "CCA": ("CCA",),
    "OP_CSB": ("SEG", "DET"),
    "OP_CTB": ("SEG", "TRA"),
    **{name: ("TRA",) for name in ("TRA", *_AOGM)},
    **{name: ("MOTA",) for name in ("MOTA", "TP", "FP", "FN", "IDSW", "Precision", "Recall")},
    **{name: ("IDF1",) for name in ("IDF1", "IDP", "IDR", "IDTP", "IDFP", "IDFN")},
    "HOTA": ("HOTA",),
    "CHOTA": ("CHOTA",),
    "MT": ("MTML",),
    "ML": ("MTML",),
    "FAF": ("FAF",),
    "gt_divisions": ("BC(0)",),
}
# Scores that are counts (of graph operations, matches, tracks), not fractions.
_COUNTS = frozenset({*_AOGM, "TP", "FP", "FN", "IDSW", "IDTP", "IDFP", "IDFN", "gt_divisions"})
_INDEXED = re.compile(r"^(BC|tp_div|fp_div|fn_div|BIO|OP_CLB)\((\d+)\)$")


def is_count(name: str) -> bool:
    """Whether the score ``name`` is a count rather than a fraction in [0, 1]."""
    return name in _COUNTS or name.startswith(("tp_div(", "fp_div(", "fn_div("))


def supported() -> list[str]:
    """Every score name :func:`plan` accepts (``i`` stands for any frame tolerance)."""
    indexed = ["BC(i)", "tp_div(i)", "fp_div(i)", "fn_div(i)", "BIO(i)", "OP_CLB(i)"]
    return [*_PROVIDERS, *indexed]


def providers(name: str) -> tuple[str, ...]:
    """The py-ctcmetrics metrics needed for the score ``name``; ValueError if unknown."""
    if name in _PROVIDERS:
        return _PROVIDERS[name]
    m = _INDEXED.match(name)
    if m is None:
        raise ValueError(f"unknown metric {name!r}; supported: {', '.join(supported())}")
    kind, i = m.group(1), m.group(2)
    if kind == "BIO":
        return ("CT", "TF", f"BC({i})", "CCA", "BIO")
    if kind == "OP_CLB":
        return ("CT", "TF", f"BC({i})", "CCA", "BIO", "LNK", "DET")
    return (f"BC({i})",)


def plan(names: Iterable[str]) -> list[str]:
    """The py-ctcmetrics metric list (deduplicated, stable order) for the requested scores."""
    out: list[str] = []
    for name in names:
        for metric in providers(name):
            if metric not in out:
                out.append(metric)
    return out


def requested(metrics: Sequence[str] | None) -> list[str]:
    """Normalise the caller's choice: default set, no duplicates, every name known."""
    names = list(DEFAULT_METRICS if metrics is None else metrics)
    if not names:
        raise ValueError("metrics: empty selection; pass None for the default set")
    plan(names)  # raises on unknown names
    return list(dict.fromkeys(names))
