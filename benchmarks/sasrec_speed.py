"""SASRec training speed on ML-100K: seconds per epoch through the real stack (Trainer, collator, model).

    python benchmarks/sasrec_speed.py                                   # CPU
    python benchmarks/sasrec_speed.py --device cuda --batch_size 1024 --bf16

An epoch is one pass over every training interaction (the ~2.4k windows of :mod:`llmrec_ft.collab.sequences`),
as in RecBole, whose epoch covers each interaction once as an augmented prefix. "train" is the time between
Trainer's epoch-begin and epoch-end callbacks (the training steps only); "with eval" adds the validation
full ranking and the checkpoint written after each epoch. Medians over ``--epochs`` after ``--warmup``.
Results of each device are merged into ``benchmarks/results/sasrec_speed.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

from llmrec_ft.collab.sasrec import SASRec, SASRecConfig
from llmrec_ft.collab.sequences import training_windows
from llmrec_ft.collab.trainer import RankingTrainingArguments, train_id_model
from llmrec_ft.data import DataConfig, num_items, prepare_dataset
from llmrec_ft.io import write_json

RESULTS = Path(__file__).parent / "results" / "sasrec_speed.json"


class EpochTimer(TrainerCallback):
    """Wall-clock per epoch; synchronises the GPU so queued kernels are counted in the epoch that issued them."""

    def __init__(self):
        self.train, self.total, self._begin = [], [], None

    @staticmethod
    def _now() -> float:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter()

    def on_epoch_begin(self, args, state, control, **kwargs):
        now = self._now()
        if self._begin is not None:
            self.total.append(now - self._begin)
        self._begin = now

    def on_epoch_end(self, args, state, control, **kwargs):
        self.train.append(self._now() - self._begin)

    def on_train_end(self, args, state, control, **kwargs):
        self.total.append(self._now() - self._begin)


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    cpuinfo = Path("/proc/cpuinfo")
    models = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
              if line.startswith("model name")] if cpuinfo.exists() else []
    return f"{models[0] if models else platform.machine()} ({torch.get_num_threads()} threads)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--epochs", type=int, default=5, help="timed epochs")
    parser.add_argument("--warmup", type=int, default=1, help="untimed first epochs")
    parser.add_argument("--batch_size", type=int, default=256, help="the recipe's batch size")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--output", type=Path, default=RESULTS, help="JSON to merge this device's result into")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but torch sees no GPU")
    if args.threads:
        torch.set_num_threads(args.threads)

    ds = prepare_dataset(DataConfig(dataset="ml-100k"))
    config = SASRecConfig(num_items=num_items(ds), hidden_size=64, num_blocks=2, max_len=50)
    windows = training_windows(ds["train"], config.max_len)
    timer = EpochTimer()
    with tempfile.TemporaryDirectory() as output_dir:
        training_args = RankingTrainingArguments(
            output_dir=output_dir, use_cpu=args.device == "cpu", bf16=args.bf16, seed=0,
            per_device_train_batch_size=args.batch_size, num_train_epochs=args.warmup + args.epochs,
            early_stopping_patience=None, disable_tqdm=True, dataloader_pin_memory=args.device == "cuda")
        torch.manual_seed(0)
        trainer = train_id_model(SASRec(config), ds, training_args, train_dataset=windows, callbacks=[timer])
    train_s, total_s = timer.train[args.warmup:], timer.total[args.warmup:]
    name = device_name(args.device)
    result = {
        "device": name, "batch_size": args.batch_size, "precision": "bf16 autocast" if args.bf16 else "fp32",
        "windows_per_epoch": len(windows), "interactions_per_epoch": sum(len(w) for w in windows["labels"]),
        "steps_per_epoch": trainer.state.max_steps // (args.warmup + args.epochs),
        "train_s_per_epoch_median": statistics.median(train_s), "train_s_per_epoch_all": train_s,
        "with_eval_s_per_epoch_median": statistics.median(total_s), "with_eval_s_per_epoch_all": total_s,
        "valid_ndcg@10_after_training": trainer.state.best_metric, "torch": torch.__version__,
        "load_average_1min": os.getloadavg()[0],  # the CPU here is shared: a high load slows every number
    }
    results = json.loads(args.output.read_text()) if args.output.exists() else {}
    results[f"{name} | bs{args.batch_size} | {result['precision']}"] = result
    write_json(args.output, results)

    print("| device | batch | precision | train s/epoch | with valid ranking + checkpoint s/epoch | steps/epoch |")
    print("| --- | --- | --- | --- | --- | --- |")
    for entry in results.values():
        print(f"| {entry['device']} | {entry['batch_size']} | {entry['precision']} | "
              f"{entry['train_s_per_epoch_median']:.3f} | {entry['with_eval_s_per_epoch_median']:.3f} | "
              f"{entry['steps_per_epoch']} |")


if __name__ == "__main__":
    main()
