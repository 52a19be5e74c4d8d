"""CTC lineage (`L B E P` tracks): parse, validate against masks, build from labels, clean, write.

The CTC rules are checked here once so that readers, writers, the tracker and the trainer all share
one definition of a valid lineage.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .errors import CTCFormatError


@dataclass(frozen=True, order=True)
class Track:
    """One CTC track: ``label`` on frames ``begin..end`` (inclusive); ``parent`` 0 = none."""

    label: int
    begin: int
    end: int
    parent: int = 0


@dataclass
class Lineage:
    """A set of tracks keyed by label, with the CTC rules and CellSAM2's cleaning."""

    tracks: dict[int, Track] = field(default_factory=dict)

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def from_tracks(cls, tracks: Iterable[Track], source: str | Path = "<tracks>") -> Lineage:
        out: dict[int, Track] = {}
        for t in tracks:
            if t.label in out:
                raise CTCFormatError(source, f"duplicate label {t.label}")
            out[t.label] = t
        return cls(out)

    @classmethod
    def parse(cls, text: str, source: str | Path = "<text>") -> Lineage:
        """Parse ``man_track.txt``/``res_track.txt``; errors name ``source`` and the line."""
        tracks: list[Track] = []
        seen: dict[int, int] = {}
        for lineno, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip()
            if not line:
                continue
            parts = line.split()
            if len(parts) != 4:
                raise CTCFormatError(
                    source,
                    f"line {lineno}: expected 4 columns 'L B E P', got {len(parts)}: {raw!r}",
                )
            try:
                label, begin, end, parent = (int(p) for p in parts)
            except ValueError:
                raise CTCFormatError(
                    source, f"line {lineno}: non-integer value in {raw!r}"
                ) from None
            if label <= 0:
                raise CTCFormatError(source, f"line {lineno}: label must be > 0, got {label}")
            if begin < 0 or end < begin:
                raise CTCFormatError(
                    source, f"line {lineno}: label {label} has begin {begin} > end {end} or < 0"
                )
            if parent < 0:
                raise CTCFormatError(source, f"line {lineno}: negative parent {parent}")
            if label in seen:
                raise CTCFormatError(
                    source, f"line {lineno}: duplicate label {label} (first on line {seen[label]})"
                )
            seen[label] = lineno
            tracks.append(Track(label, begin, end, parent))
        return cls({t.label: t for t in tracks})

    @classmethod
    def read(cls, path: str | Path) -> Lineage:
        path = Path(path)
        if not path.is_file():
            raise CTCFormatError(path, "lineage file is missing")
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise CTCFormatError(path, f"cannot read lineage file: {exc}") from exc
        return cls.parse(text, source=path)

    @classmethod
    def from_presence(
        cls, presence: Mapping[int, Iterable[int]], parents: Mapping[int, int] | None = None
    ) -> Lineage:
        """Tracks from ``label -> frames present``; ``parents`` maps daughter -> parent."""
        parents = parents or {}
        tracks = {}
        for label, frames in presence.items():
            frames = list(frames)
            tracks[int(label)] = Track(
                int(label), int(min(frames)), int(max(frames)), int(parents.get(label, 0))
            )
        return cls(dict(sorted(tracks.items())))

    @classmethod
    def from_labels(
        cls,
        labels: np.ndarray | Iterable[np.ndarray],
        parents: Mapping[int, int] | None = None,
        first_frame: int = 0,
    ) -> Lineage:
        """Build the lineage of a (T,Y,X) labels array; frame indices start at ``first_frame``."""
        return cls.from_presence(label_presence(labels, first_frame), parents)

    # ---- queries ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.tracks)

    def __iter__(self):
        return iter(sorted(self.tracks.values()))

    def __contains__(self, label: int) -> bool:
        return label in self.tracks

    def __getitem__(self, label: int) -> Track:
        return self.tracks[label]

    @property
    def parents(self) -> dict[int, int]:
        """daughter -> parent for every linked track."""
        return {t.label: t.parent for t in self.tracks.values() if t.parent}

    def children(self, label: int) -> list[int]:
        return sorted(t.label for t in self.tracks.values() if t.parent == label)

    @property
    def divisions(self) -> dict[int, list[int]]:
        """parent -> daughters, for parents with at least one linked daughter."""
        out: dict[int, list[int]] = {}
        for d, p in sorted(self.parents.items()):
            out.setdefault(p, []).append(d)
        return out

    def to_text(self) -> str:
        return "".join(f"{t.label} {t.begin} {t.end} {t.parent}\n" for t in self)

    def write(self, path: str | Path) -> None:
        Path(path).write_text(self.to_text())

    # ---- rules --------------------------------------------------------------------------------
    def validate(
        self,
        labels: np.ndarray | Iterable[np.ndarray] | None = None,
        *,
        source: str | Path = "<lineage>",
        first_frame: int = 0,
        presence: Mapping[int, Iterable[int]] | None = None,
    ) -> None:
        """Raise :class:`CTCFormatError` unless the CTC rules hold (and match ``labels`` if given).

        Rules: parents exist and end before their daughters begin; with masks, every label is
        present on every frame from B to E and on no other, and every mask label has a track.
        """
        for t in self:
            if t.parent:
                if t.parent == t.label:
                    raise CTCFormatError(source, f"label {t.label} is its own parent")
                if t.parent not in self.tracks:
                    raise CTCFormatError(
                        source, f"label {t.label} has parent {t.parent}, which has no track"
                    )
                p = self.tracks[t.parent]
                if p.end >= t.begin:
                    raise CTCFormatError(
                        source,
                        f"parent {p.label} ends at frame {p.end}, at or after its daughter "
                        f"{t.label} begins (frame {t.begin})",
                    )
        if labels is None and presence is None:
            return
        if presence is None:
            presence = label_presence(labels, first_frame)
        for label, frames in presence.items():
            frames = sorted(frames)
            if label not in self.tracks:
                raise CTCFormatError(
                    source, f"label {label} is in the masks (frame {frames[0]}) but has no track"
                )
            t = self.tracks[label]
            outside = [f for f in frames if f < t.begin or f > t.end]
            if outside:
                raise CTCFormatError(
                    source,
                    f"label {label} appears on frame {outside[0]}, outside its track "
                    f"{t.begin}..{t.end}",
                )
            # the frames are distinct and inside the track, so it is complete when the counts
            # agree (a set of the track's range would be as large as a typo in its end)
            if len(set(frames)) != t.end - t.begin + 1:
                expected = t.begin
                for f in sorted(set(frames)):
                    if f != expected:
                        break
                    expected += 1
                raise CTCFormatError(
                    source,
                    f"label {label} is missing on frame {expected} inside its track "
                    f"{t.begin}..{t.end}",
                )
        absent = sorted(set(self.tracks) - set(presence))
        if absent:
            t = self.tracks[absent[0]]
            raise CTCFormatError(
                source, f"label {t.label} has track {t.begin}..{t.end} but is in no mask"
            )

    def cleaned(self) -> Lineage:
        """CellSAM2's cleaning before training: drop parent links that are not real divisions.

        A link is dropped when the parent has a single child, or when the daughter starts later
        than parent end + 1 (a gap would teach the model to jump).
        """
        kept = {}
        for t in self.tracks.values():
            parent = t.parent
            if parent:
                p = self.tracks.get(parent)
                if p is None or len(self.children(parent)) < 2 or t.begin > p.end + 1:
                    parent = 0
            kept[t.label] = replace(t, parent=parent)
        return Lineage(dict(sorted(kept.items())))


def label_presence(
    labels: np.ndarray | Iterable[np.ndarray], first_frame: int = 0
) -> dict[int, list[int]]:
    """label -> sorted frame indices where it has at least one pixel (0 is background)."""
    presence: dict[int, list[int]] = {}
    for i, frame in enumerate(labels):
        for lab in np.unique(np.asarray(frame)):
            if lab != 0:
                presence.setdefault(int(lab), []).append(first_frame + i)
    return presence
