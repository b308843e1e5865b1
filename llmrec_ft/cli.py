"""``llmrec-ft`` command line: data preparation and a pointer to the recipes.

Training lives in ``recipes/`` (run them with ``accelerate launch``); the CLI covers the steps that
are not training.
"""

from __future__ import annotations

import argparse
import json
import sys

from transformers import HfArgumentParser

from llmrec_ft.data import DataConfig, DataError, load_manifest, prepare_dataset
from llmrec_ft.data.prepare import default_output_dir


def _prepare(argv: list[str]) -> int:
    parser = HfArgumentParser(DataConfig, prog="llmrec-ft data prepare")
    parser.add_argument("--out", default=None, help="Output folder (default: the cache, keyed by the config).")
    parser.add_argument("--overwrite", action="store_true", help="Rebuild even if the output exists.")
    config, extra = parser.parse_args_into_dataclasses(argv)
    path = extra.out or default_output_dir(config)
    try:
        prepare_dataset(config, path, overwrite=extra.overwrite)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps({"output_dir": path, **load_manifest(path)["counts"]}, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:2] == ["data", "prepare"]:
        return _prepare(argv[2:])
    if argv[:1] == ["recommend"]:
        from llmrec_ft.recommender import recommend_command

        return recommend_command(argv[1:])
    parser = argparse.ArgumentParser(prog="llmrec-ft", description=__doc__)
    parser.add_argument("command", choices=["data prepare", "recommend"], help="Training: accelerate launch recipes/<recipe>.py --config ...")
    parser.print_help()
    return 0 if argv in ([], ["-h"], ["--help"]) else 2


if __name__ == "__main__":
    sys.exit(main())
