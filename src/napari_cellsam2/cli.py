"""`cellsam2` command line: thin sub-commands over the package's Python APIs."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from .ctc import CTCFormatError

Handler = Callable[[argparse.Namespace], int]


def _cmd_info(args: argparse.Namespace) -> int:
    from .ctc import open_path

    seq = open_path(args.path)
    seq.validate()
    tra = seq.gt.tra if seq.gt else None
    src = seq.images if seq.images is not None else (tra or seq.res).masks
    print(f"sequence   {seq.name}  ({seq.folder})")
    print(f"frames     {len(src)}  (indices {src.indices[0]}..{src.indices[-1]})")
    print(f"shape      {src.frame_shape}  dtype {src.dtype}")
    for title, part in (("GT/TRA", seq.gt.tra if seq.gt else None), ("RES", seq.res)):
        if part is not None:
            lin = part.lineage
            print(f"{title:<10} {len(lin)} tracks, {len(lin.divisions)} divisions")
    if seq.gt and seq.gt.seg is not None:
        print(f"GT/SEG     {len(seq.gt.seg)} annotated frames")
    print("valid      yes")
    return 0


def _cmd_synth(args: argparse.Namespace) -> int:
    from .datasets import write_dataset

    out = write_dataset(
        Path(args.out),
        args.kind,
        sequences=args.sequences,
        frames=args.frames,
        seed=args.seed,
        overwrite=args.overwrite,
    )
    print(f"wrote {args.kind} dataset to {out}")
    return 0


def _cmd_download(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .datasets.download import MOMA_RECORD, ZENODO_API, download_record

    bars: dict[str, tqdm] = {}

    def progress(name: str, done: int, total: int) -> None:
        bar = bars.setdefault(name, tqdm(total=total or None, unit="B", unit_scale=True, desc=name))
        bar.update(done - bar.n)

    out = download_record(
        args.out, args.record or MOMA_RECORD, args.api_url or ZENODO_API, progress
    )
    for bar in bars.values():
        bar.close()
    print(f"dataset ready: {out} (train/val/test); use dataset.data_dir={out}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluation import evaluate_folders, format_table

    scores = evaluate_folders(args.gt, args.res)
    print(format_table({"result": scores}))
    if args.json:
        Path(args.json).write_text(json.dumps(scores, indent=2))
        print(f"wrote {args.json}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cellsam2", description="SAM 2 cell tracking, fine-tuning and CTC tools."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="validate a CTC folder completely and summarise it")
    p.add_argument("path", help="sequence folder (01), 01_GT, 01_RES, or a root with one sequence")
    p.set_defaults(handler=_cmd_info)

    p = sub.add_parser("synth", help="write a synthetic CTC dataset with train/val/test splits")
    p.add_argument("kind", choices=["mother-machine", "nuclei"])
    p.add_argument("--out", required=True)
    p.add_argument("--sequences", type=int, default=3)
    p.add_argument("--frames", type=int, default=60)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.set_defaults(handler=_cmd_synth)

    p = sub.add_parser("download", help="fetch a public CTC dataset (MOMA) as train/val/test")
    p.add_argument("dataset", choices=["moma"])
    p.add_argument("--out", required=True)
    p.add_argument("--record", help="Zenodo record id (default: the MOMA record)")
    p.add_argument("--api-url", help="Zenodo API base URL (for mirrors)")
    p.set_defaults(handler=_cmd_download)

    p = sub.add_parser("evaluate", help="CTC metrics (py-ctcmetrics) of a RES folder against GT")
    p.add_argument("--gt", required=True, help="the 01_GT folder")
    p.add_argument("--res", required=True, help="the 01_RES folder")
    p.add_argument("--json", help="also write the scores as JSON here")
    p.set_defaults(handler=_cmd_evaluate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (CTCFormatError, FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
