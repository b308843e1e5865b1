"""Code usage and collisions of semantic-ID variants on a real catalogue (issue 13), with plots.

    python benchmarks/generative_sid_stats.py --items-tsv ../shared/data/amazon14-beauty/items.tsv --device cuda
    python benchmarks/generative_sid_stats.py --items-tsv ../shared/data/amazon14-beauty/items.tsv --encoder tfidf \
        --out benchmarks/results/generative_sid_stats_tfidf.json
    python benchmarks/generative_sid_stats.py --items-tsv ../shared/data/amazon14-beauty/items.tsv \
        --embeddings-npy /tmp/beauty_minilm.npy --embeddings-name all-minilm-l6-v2 --rqvae-epochs 50 \
        --out benchmarks/results/generative_sid_stats_minilm.json

Item texts (the TSV's title/keywords column, as ``dataset: sequences`` reads it) are embedded by an LLM
(``--encoder llm``: mean-pooled last hidden state of ``--model``, cached on disk; ~25 min for Beauty on one CPU
core, seconds with ``--device cuda``) or, for a quick CPU figure, by TF-IDF + truncated SVD to 256 dimensions
(``--encoder tfidf``, scikit-learn), or read from ``--embeddings-npy`` (``[num_items, d]`` in the TSV's item
order, e.g. ``embed_item_texts(texts, text_encoder="all-minilm-l6-v2")``; named by ``--embeddings-name``).
Variants: residual k-means and RQ-VAE on the text embeddings; with ``--cf-embeddings items.npy``
(``[num_items, d]``, row ``i`` = item ``i`` of the TSV, e.g. SASRec's item table) also k-means on those and on
both concatenated ("collaborative semantic IDs"). Default 3 levels, codebook size from ``auto_codebook_size``
(256 for Beauty's 12,101 items). Printed per variant: per level the share of codes used, the share of items
colliding on that prefix, the largest prefix group (mean and spread over seeds), and the size of the extra
level. JSON to ``benchmarks/results/generative_sid_stats.json``, one PNG per variant (first seed) beside it.
Exits with a message when the TSV is absent (a fresh clone).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from llmrec_ft.generative.semantic_ids import build_semantic_ids, concat_embeddings, plot_code_usage
from llmrec_ft.io import write_json


def text_embeddings(texts: list[str], encoder: str, model_name: str, batch_size: int, device: str) -> np.ndarray:
    if encoder == "tfidf":
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfVectorizer

        tfidf = TfidfVectorizer(min_df=2, sublinear_tf=True).fit_transform(texts)
        return TruncatedSVD(n_components=256, random_state=0).fit_transform(tfidf)
    from llmrec_ft.llm.backbone import load_backbone
    from llmrec_ft.llm.text_embeddings import item_text_embeddings

    model, tokenizer = load_backbone(model_name)
    return item_text_embeddings(model.to(device).eval(), tokenizer, texts, model_name, batch_size=batch_size).numpy()


def summarise(stats_per_seed: list[dict]) -> dict:
    """Mean and standard deviation over seeds of every per-level number."""
    levels = []
    for level in range(len(stats_per_seed[0]["levels"])):
        row = {"level": level + 1, "codebook_size": stats_per_seed[0]["levels"][level]["codebook_size"]}
        for key in ("codes_used", "items_colliding", "max_items_per_prefix"):
            values = [s["levels"][level][key] for s in stats_per_seed]
            row[key] = {"mean": float(np.mean(values)), "std": float(np.std(values))}
        levels.append(row)
    extra = [s["max_items_per_code"] for s in stats_per_seed]
    return {"levels": levels, "max_items_per_code": {"mean": float(np.mean(extra)), "std": float(np.std(extra))}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items-tsv", type=Path, default=Path("../shared/data/amazon14-beauty/items.tsv"))
    parser.add_argument("--cf-embeddings", type=Path, help=".npy [num_items, d] in the TSV's item order")
    parser.add_argument("--encoder", default="llm", choices=["llm", "tfidf"])
    parser.add_argument("--embeddings-npy", type=Path, help="precomputed text embeddings [num_items, d] (TSV order)")
    parser.add_argument("--embeddings-name", default=None, help="encoder name recorded for --embeddings-npy")
    parser.add_argument("--model", default="smollm2-135m-instruct", help="LLM text encoder (Hub id, dir or embedded)")
    parser.add_argument("--device", default="cpu", help="for the LLM encoder")
    parser.add_argument("--levels", type=int, default=3)
    parser.add_argument("--codebook-size", type=int, default=256)
    parser.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=True,
                        help="L2-normalise the embeddings first (build_semantic_ids' default)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=["rkmeans", "rqvae"], choices=["rkmeans", "rqvae"])
    parser.add_argument("--rqvae-epochs", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=64, help="text-encoding batch")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/generative_sid_stats.json"))
    args = parser.parse_args()
    if not args.items_tsv.exists():
        sys.exit(f"{args.items_tsv} not found: this benchmark needs the shared data folder (see README)")
    from llmrec_ft.data.sequences import read_item_tsv

    catalogue = read_item_tsv(args.items_tsv)
    texts = [info.title for info in catalogue.values()]
    start = time.perf_counter()
    if args.embeddings_npy is not None:
        encoder = args.embeddings_name or args.embeddings_npy.stem
        text = np.load(args.embeddings_npy)
        if text.ndim != 2 or text.shape[0] != len(texts):
            sys.exit(f"{args.embeddings_npy}: shape {text.shape}, expected [{len(texts)}, d] for {args.items_tsv}")
    else:
        encoder = args.model if args.encoder == "llm" else "tfidf-svd256"
        text = text_embeddings(texts, args.encoder, args.model, args.batch_size, args.device)
    print(f"{len(texts)} item texts embedded by {encoder} in {time.perf_counter() - start:.0f} s "
          f"(dim {text.shape[1]})", flush=True)
    variants = {f"text / {method}": (text, method) for method in args.methods}
    if args.cf_embeddings is not None:
        cf = np.load(args.cf_embeddings)
        if cf.shape[0] != len(texts):
            sys.exit(f"{args.cf_embeddings}: {cf.shape[0]} rows for {len(texts)} items in {args.items_tsv}")
        variants["cf / rkmeans"] = (cf, "rkmeans")
        variants["text+cf / rkmeans"] = (concat_embeddings(text, cf), "rkmeans")

    results = {}
    for name, (embeddings, method) in variants.items():
        per_seed, seconds = [], []
        for seed in args.seeds:
            start = time.perf_counter()
            kwargs = {"epochs": args.rqvae_epochs} if method == "rqvae" else {}
            sids = build_semantic_ids(embeddings, args.levels, args.codebook_size, method=method, seed=seed,
                                      normalize=args.normalize, **kwargs)
            seconds.append(time.perf_counter() - start)
            per_seed.append(sids.stats() | ({"rqvae": sids.info} if sids.info else {}))
            if seed == args.seeds[0]:
                plot = args.out.with_name(f"{args.out.stem}_{name.replace(' / ', '_').replace('+', '_')}.png")
                plot_code_usage(sids, plot)
        results[name] = {"summary": summarise(per_seed), "per_seed": per_seed, "seconds": seconds,
                         "plot": str(plot)}
        print(f"\n{name} ({len(args.seeds)} seeds, {np.mean(seconds):.1f} s each)")
        print(f"{'level':>5} | {'K':>4} | {'codes used':>13} | {'items colliding':>15} | {'max items/prefix':>16}")
        summary = results[name]["summary"]
        for row in summary["levels"]:
            print(f"{row['level']:>5} | {row['codebook_size']:>4} | "
                  f"{row['codes_used']['mean']:>7.1%} ± {row['codes_used']['std']:.1%} | "
                  f"{row['items_colliding']['mean']:>8.1%} ± {row['items_colliding']['std']:.1%} | "
                  f"{row['max_items_per_prefix']['mean']:>9.1f} ± {row['max_items_per_prefix']['std']:.1f}")
        extra = summary["max_items_per_code"]
        print(f"extra level size: {extra['mean']:.1f} ± {extra['std']:.1f}")
    write_json(args.out, {"items_tsv": str(args.items_tsv), "num_items": len(texts), "encoder": encoder,
                          "levels": args.levels, "normalize": args.normalize, "codebook_size_cap": args.codebook_size,
                          "seeds": args.seeds, "rqvae_epochs": args.rqvae_epochs, "variants": results})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
