"""`cellsam2` command line: thin sub-commands over the package's Python APIs."""

from __future__ import annotations

import argparse
import inspect
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .ctc import CTCFormatError, CTCSequence, Lineage, OutputExistsError
from .ctc.writer import Existing
from .tracking.detect_config import DetectConfig
from .tracking.division_config import DIVISION_MODES, DivisionConfig

Handler = Callable[[argparse.Namespace], int]


def _uses(seq: CTCSequence) -> dict[str, str]:
    """What each command can do with ``seq``: ``yes …`` or ``no: <why>`` (headers only)."""
    from .model.preprocess import frames_layout

    tra = seq.gt.tra if seq.gt else None
    if seq.images is None:
        track = "no: no image frames (tNNN.tif) next to this folder"
    else:
        try:
            frames_layout(seq.images)
            track = f"yes: images {seq.images.frame_shape}"
        except (TypeError, ValueError) as exc:
            track = f"no: {exc}"
    if seq.images is None:
        train = "no: no images to learn from"
    elif not track.startswith("yes"):
        train = "no: training takes the same images as track"
    elif tra is None:
        train = "no: no GT/TRA (man_track###.tif + man_track.txt) to learn from"
    elif tra.masks.indices != seq.images.indices:
        train = "no: the GT/TRA frames differ from the image frames"
    else:
        train = "yes: as a sequence of a dataset with train/val/test splits"
    gt_parts = [name for name, part in (("TRA", tra), ("SEG", seq.gt and seq.gt.seg)) if part]
    evaluate = [f"--gt ({'+'.join(gt_parts)})"] if gt_parts else []
    evaluate += ["--res"] if seq.res else []
    return {
        "track": track,
        "train": train,
        "evaluate": f"yes: as {' and '.join(evaluate)}" if evaluate else "no: no GT or RES",
    }


def _cmd_info(args: argparse.Namespace) -> int:
    from .ctc import open_path

    seq = open_path(args.path)
    seq.validate()
    tra = seq.gt.tra if seq.gt else None
    if seq.images is not None:
        src = seq.images
    elif tra is not None or seq.res is not None:
        src = (tra or seq.res).masks
    else:  # a GT folder with SEG only
        src = seq.gt.seg
    print(f"sequence   {seq.name}  ({seq.folder})")
    print(f"frames     {len(src)}  (indices {src.indices[0]}..{src.indices[-1]})")
    print(f"shape      {src.frame_shape}  dtype {src.dtype}")
    for title, part in (("GT/TRA", seq.gt.tra if seq.gt else None), ("RES", seq.res)):
        if part is not None:
            lin = part.lineage
            print(f"{title:<10} {len(lin)} tracks, {len(lin.divisions)} divisions")
    if seq.gt and seq.gt.seg is not None:
        print(f"GT/SEG     {len(seq.gt.seg)} annotated frames")
    uses = _uses(seq)
    for command, verdict in uses.items():
        print(f"{command:<10} {verdict}")
    if seq.images is not None and not uses["track"].startswith("yes"):
        print("valid      CTC format yes, but `cellsam2 track` cannot use these images")
    else:
        print("valid      yes")
    return 0


def _cmd_synth(args: argparse.Namespace) -> int:
    from .ctc.writer import check_writable
    from .datasets import write_dataset
    from .datasets.writer import GENERATORS

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CTCFormatError(out, "is a file; --out must be a folder")
    if out.is_dir() and any(out.iterdir()) and not args.overwrite:
        raise CTCFormatError(out, "exists and is not empty; pass --overwrite to replace it")
    check_writable(out.parent)  # before generating anything
    options = _generator_options(args.set)
    params = inspect.signature(GENERATORS[args.kind]).parameters
    valid = sorted(set(params) - {"frames", "seed"})
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"--set {unknown[0]}: not an option of {args.kind}; valid: {valid}")
    for key, value in options.items():
        default = params[key].default
        if type(default) is int and not isinstance(value, int):
            raise ValueError(f"--set {key}={value}: {key} takes a whole number (default {default})")
    out = write_dataset(
        out,
        args.kind,
        sequences=args.sequences,
        frames=args.frames,
        seed=args.seed,
        overwrite=args.overwrite,
        invert=args.invert,
        **options,
    )
    print(f"wrote {args.kind} dataset to {out}")
    return 0


def _generator_options(items: list[str]) -> dict[str, int | float]:
    """``--set key=value`` pairs as numbers for the generator (e.g. n_cells=16, radius=8.5)."""
    options: dict[str, int | float] = {}
    for item in items:
        key, _, value = (part.strip() for part in item.partition("="))
        number: int | float | None = None
        for kind in (int, float):
            try:
                number = kind(value)
                break
            except ValueError:
                continue
        if not key or number is None:
            raise ValueError(f"--set {item!r}: expected key=number, e.g. --set n_cells=16")
        options[key] = number
    return options


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
    import warnings

    from .evaluation import evaluate_folders, format_table, scores_to_json

    if args.json:
        from .ctc.writer import check_output_file

        check_output_file(args.json)  # before scoring: a run never ends in "cannot write"
        for folder in (args.gt, args.res):
            if Path(args.json).resolve().is_relative_to(Path(folder).resolve()):
                raise CTCFormatError(args.json, f"is inside {folder}: write the scores elsewhere")
        if Path(args.json).exists() and not args.overwrite:
            raise CTCFormatError(
                args.json, "already exists; pass --overwrite to replace it (kept as a backup)"
            )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        scores = evaluate_folders(args.gt, args.res)
    for w in caught:
        if issubclass(w.category, UserWarning):
            print(f"warning: {w.message}", file=sys.stderr)
    print(format_table({Path(args.res).name or "result": scores}))
    if args.json:
        from .ctc.writer import atomic_write_text, keep_copy

        kept = keep_copy(args.json)
        out = atomic_write_text(args.json, scores_to_json(scores) + "\n")
        print(f"wrote {out}" + (f"; the earlier file is {kept}" if kept else ""))
    return 0


def _replacing(target: Path, overwrite: bool) -> Existing:
    """``--overwrite`` as a writer's ``existing``: keep the old output in a dated backup."""
    from .ctc.writer import backup_path

    return backup_path(target) if overwrite else "refuse"


def _said_backups(*choices: Existing) -> None:
    for choice in choices:
        if isinstance(choice, Path) and choice.exists():
            old = choice.name.rsplit(".backup-", 1)[0]
            print(f"the earlier {old} was moved to {choice}")


def _add_config_arguments(
    parser: argparse.ArgumentParser, config: type, flag_prefix: str, used_by: str
) -> None:
    """``--<flag_prefix><option>`` for every field of the dataclass ``config`` (DetectConfig,
    DivisionConfig), with its type, default, help and choices, so the flags never drift from
    the config."""
    from dataclasses import fields

    for f in fields(config):
        kind, choices = type(f.default), f.metadata.get("choices")
        parser.add_argument(
            f"--{flag_prefix}{f.name.replace('_', '-')}",
            type=kind,
            default=f.default,
            choices=choices,
            metavar=None if choices else kind.__name__.upper(),
            help=f"{used_by}: {f.metadata['help']} (default {f.default})",
        )


def _config_from(args: argparse.Namespace, config: type, flag_prefix: str) -> Any:
    """The ``config`` dataclass from the flags :func:`_add_config_arguments` added."""
    from dataclasses import fields

    dest = flag_prefix.replace("-", "_")
    return config(**{f.name: getattr(args, dest + f.name) for f in fields(config)})


def _non_negative(text: str) -> int:
    """An integer >= 0 (argparse turns the error into a usage error, exit status 2)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0 (0 = off), got {value}")
    return value


def _cmd_track(args: argparse.Namespace) -> int:
    from .tracking.run import track_ctc_sequence

    out, geff = Path(args.out), Path(args.geff) if args.geff else None
    if args.evaluate:  # a wrong GT path fails now, not after the result was written
        from .ctc import read_gt

        read_gt(args.evaluate)
    existing = _replacing(out, args.overwrite)
    geff_existing = _replacing(geff, args.overwrite) if geff else "refuse"
    try:
        track_ctc_sequence(
            args.sequence,
            args.prompts,
            args.model,
            out,
            device=args.device,
            direction=args.direction,
            divisions=args.divisions,
            division_config=_config_from(args, DivisionConfig, ""),
            precision=args.precision,
            progress=True,
            existing=existing,
            geff=geff,
            geff_existing=geff_existing,
            detect=_config_from(args, DetectConfig, "detect-"),
            detect_new_cells=args.detect_new_cells,
            log=lambda line: print(line, file=sys.stderr),
        )
    except OutputExistsError as exc:
        raise CTCFormatError(
            exc.path, "already holds a result; pass --overwrite to replace it (kept as a backup)"
        ) from None
    except TypeError as exc:  # e.g. frames of an unsupported dtype
        raise ValueError(str(exc)) from None
    lineage = Lineage.read(out / "res_track.txt")  # as written: no pass over frames
    print(f"wrote {out}: {len(lineage)} tracks, {len(lineage.divisions)} divisions")
    if geff:
        print(f"wrote {geff}: the lineage as a GEFF graph")
    _said_backups(existing, geff_existing)
    if args.evaluate:
        from .evaluation import evaluate_folders, format_table

        scores = evaluate_folders(args.evaluate, out)
        print(format_table({out.name or "result": scores}))
    return 0


def _cmd_export_geff(args: argparse.Namespace) -> int:
    from .ctc import open_path
    from .ctc.geff import geff_path_for, write_geff

    folder = Path(args.folder)
    seq = open_path(folder)
    use_res = folder.name.endswith("_RES") or not seq.gt
    part = seq.res if use_res else seq.gt.tra
    if part is None:
        raise CTCFormatError(folder, "has no RES or GT/TRA lineage to export")
    out = Path(args.out) if args.out else geff_path_for(part.folder if use_res else seq.gt.folder)
    existing = _replacing(out, args.overwrite)
    part.validate()  # the GEFF is only as good as the CTC lineage it comes from
    try:
        write_geff(out, part.masks, part.lineage, part.masks.indices[0], existing=existing)
    except OutputExistsError as exc:
        raise CTCFormatError(
            exc.path, "already holds a GEFF; pass --overwrite to replace it (kept as a backup)"
        ) from None
    print(f"wrote {out}: {len(part.lineage)} tracks of {part.folder} as a GEFF graph")
    _said_backups(existing)
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from .ctc.writer import check_writable
    from .training.__main__ import console_train
    from .training.config import load_config

    cfg = load_config(list(args.overrides), args.config)
    check_writable(cfg.launcher.experiment_log_dir)  # before loading data and model
    return console_train(args.overrides, args.config)


def _cmd_demo(args: argparse.Namespace) -> int:
    from .widgets.demo import main as demo_main

    return demo_main()


def _cmd_compare(args: argparse.Namespace) -> int:
    from .evaluation.compare import MODES, compare

    compare(
        args.base,
        args.data,
        args.out,
        steps=args.steps,
        seed=args.seed,
        modes=MODES if args.modes is None else args.modes,
        seeding=("gt", "clicks") if args.clicks else ("gt",),
        overrides=args.overrides,
        annotate_tracks=not args.no_annotate,
        iou_threshold=args.iou,
        max_clicks=args.click_budget,
        split=args.split,
        device=args.device,
        log=print,
    )
    print(f"wrote {Path(args.out) / 'compare.json'} and {Path(args.out) / 'compare.png'}")
    return 0


def _add_compare_parser(sub) -> None:
    p = sub.add_parser(
        "compare",
        help="zero-shot vs LoRA vs full fine-tuning: CTC metrics, clicks, time, memory",
    )
    p.add_argument("--base", required=True, help="base model spec for load_model")
    p.add_argument("--data", required=True, help="CTC dataset with train/val/test splits")
    p.add_argument("--out", required=True, help="run folder (a rerun reuses finished modes)")
    p.add_argument("--steps", type=int, default=100, help="optimizer steps per fine-tuning mode")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--modes",
        type=lambda text: [m.strip() for m in text.split(",") if m.strip()],
        default=None,
        help="comma-separated subset of zero-shot,lora,full (default all; checked by compare)",
    )
    p.add_argument("--clicks", action="store_true", help="also track from one click per cell")
    p.add_argument("--no-annotate", action="store_true", help="skip the simulated annotator")
    p.add_argument("--iou", type=float, default=0.8, help="annotator: IoU a frame must reach")
    p.add_argument("--click-budget", type=int, default=3, help="annotator: clicks per track")
    p.add_argument("--split", default="test", help="split to track and score (default test)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="training overrides for both fine-tuning modes (after the options), e.g. "
        "scratch.num_frames=4 scratch.lora_lr=1e-3",
    )
    p.set_defaults(handler=_cmd_compare)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cellsam2", description="SAM 2 cell tracking, fine-tuning and CTC tools."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "info",
        help="validate a CTC folder completely, summarise it and say what track, train and "
        "evaluate can do with it",
    )
    p.add_argument("path", help="sequence folder (01), 01_GT, 01_RES, or a root with one sequence")
    p.set_defaults(handler=_cmd_info)

    p = sub.add_parser("synth", help="write a synthetic CTC dataset with train/val/test splits")
    p.add_argument("kind", choices=["mother-machine", "nuclei"])
    p.add_argument("--out", required=True)
    p.add_argument("--sequences", type=int, default=3)
    p.add_argument("--frames", type=int, default=60)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier synthetic dataset in --out (moved to a backup)",
    )
    p.add_argument(
        "--invert", action="store_true", help="inverted contrast: dark cells on a bright field"
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a generator option (docs/synthetic-data.md), e.g. --set n_cells=16 --set radius=8 "
        "(nuclei) or --set height=128 --set width=48 (mother machine)",
    )
    p.set_defaults(handler=_cmd_synth)

    p = sub.add_parser("demo", help="open napari with the CellSAM2 dock and the synthetic sample")
    p.set_defaults(handler=_cmd_demo)

    p = sub.add_parser("download", help="fetch a public CTC dataset (MOMA) as train/val/test")
    p.add_argument("dataset", choices=["moma"])
    p.add_argument("--out", required=True)
    p.add_argument("--record", help="Zenodo record id (default: the MOMA record)")
    p.add_argument("--api-url", help="Zenodo API base URL (for mirrors)")
    p.set_defaults(handler=_cmd_download)

    p = sub.add_parser("evaluate", help="CTC metrics (py-ctcmetrics) of a RES folder against GT")
    p.add_argument("--gt", required=True, help="the 01_GT folder")
    p.add_argument("--res", required=True, help="the 01_RES folder")
    p.add_argument(
        "--json", help="also write the scores as JSON here (checked before scoring starts)"
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing --json file (the old one is kept as a dated backup)",
    )
    p.set_defaults(handler=_cmd_evaluate)

    p = sub.add_parser("track", help="track cells with SAM 2 from prompts; write a CTC RES folder")
    p.add_argument("sequence", help="the CTC image folder (01) to track")
    p.add_argument(
        "--prompts",
        required=True,
        help="'gt-first-frame' (seed every cell of 01_GT/TRA on the first frame), 'auto' (the "
        "cells SAM 2 finds on the first frame from a grid of clicks; --detect-* options) or a "
        "prompt file: CSV object_id,frame,x,y[,label] or JSON (see docs/tracking.md)",
    )
    p.add_argument("--model", required=True, help="model spec for load_model (e.g. 'tiny')")
    p.add_argument(
        "--out",
        required=True,
        help="the RES folder to write (e.g. 01_RES); checked before tracking starts",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier RES (and GEFF) at --out; the old one is moved to "
        "<name>.backup-<date-time> beside it",
    )
    p.add_argument("--geff", metavar="PATH", help="also write the lineage as a GEFF graph here")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--direction", choices=["forward", "backward", "both"], default="both")
    p.add_argument(
        "--divisions",
        choices=DIVISION_MODES,
        default=None,
        help="learned: the model's division head (the default when it has one); learned+split: "
        "the head, then the split rule for the cells it did not divide; split: a mask that falls "
        "apart into two; off: none (the default without a head)",
    )
    _add_config_arguments(p, DivisionConfig, "", "--divisions")
    p.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16"],
        default="auto",
        help="auto: bf16 autocast on CUDA, fp32 elsewhere; fp32: strict fp32 (CUDA: TF32 off)",
    )
    p.add_argument("--evaluate", metavar="GT", help="print CTC metrics against this 01_GT folder")
    p.add_argument(
        "--detect-new-cells",
        type=_non_negative,
        default=0,
        metavar="N",
        help="every N frames, also track the cells found (--detect-* options) outside the "
        "tracked ones, forward from there; with any --prompts, not with --direction backward "
        "(default 0: off)",
    )
    _add_config_arguments(p, DetectConfig, "detect-", "--prompts auto, --detect-new-cells")
    p.set_defaults(handler=_cmd_track)

    p = sub.add_parser(
        "export-geff", help="write the lineage of a RES (or GT/TRA) folder as a GEFF graph"
    )
    p.add_argument("folder", help="01_RES, or 01_GT / a sequence folder for the GT/TRA lineage")
    p.add_argument(
        "--out", help="the GEFF to write (default: 01_RES.geff or 01_GT.geff beside the folder)"
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace an earlier GEFF (moved to a backup)"
    )
    p.set_defaults(handler=_cmd_export_geff)

    from .training.__main__ import add_train_arguments

    p = sub.add_parser("train", help="fine-tune SAM 2 (LoRA or full) on CTC ground truth")
    add_train_arguments(p).set_defaults(handler=_cmd_train)
    _add_compare_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (CTCFormatError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # permissions, a full disk …: one line naming the path, no traceback
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2


def train_main(argv: Sequence[str] | None = None) -> int:
    """``cellsam2-train key=value ...``: the seed's ``train_ctc.py`` as a console script."""
    return main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
