"""Semantic IDs: a short code per item from residual quantisation of its embedding.

An item's semantic ID is ``L`` codes ``(c_1, ..., c_L)``, each from a codebook of ``K`` entries, chosen so that
items with similar embeddings share prefixes (TIGER, Rajput et al. 2023, arXiv 2305.05065, Sec. 3.1). Level 1
quantises the embedding, level ``l`` quantises what levels ``1..l-1`` left over (the residual). Two methods:

* ``"rkmeans"`` (default): scikit-learn ``KMeans`` on each level's residuals. No training loop, deterministic given
  the seed, and in the LC-Rec / MiniOneRec ablations within noise of RQ-VAE on Amazon data.
* ``"rqvae"``: an MLP auto-encoder with a residual-quantised latent (RQ-VAE, Lee et al. 2022, arXiv 2203.01941;
  as used by TIGER): see :mod:`llmrec_ft.generative.rqvae`.

Items whose ``L`` codes coincide get one extra level ``0, 1, 2, ...`` in item-index order (TIGER Sec. 3.1: "we
append an extra token at the end of the ordered semantic codes"), so every item's code is unique; the extra
level's codebook size is the largest number of items sharing an ``L``-code.

Codebook size for small catalogues: ``K = min(codebook_size, 2 ** ceil(log2(2 * sqrt(N))))``. ``K^L`` must exceed
``N`` with room to spare (else most items collide), but k-means with ``K`` close to ``N / 10`` leaves many codes
holding one item and the first level stops grouping anything. ``2 sqrt(N)`` rounded up to a power of two gives
256 from about 4,100 items on (Amazon Beauty, 12,101 items: 256, as in TIGER), 128 for ML-1M (3,706 items) and
ML-100K (1,682), 64 for 1,000 items. Pass ``shrink_for_small_catalogues=False`` to use ``codebook_size`` as given.

Inputs are scaled to unit L2 norm first (``normalize=True``): quantisation then works in the cosine geometry
text encoders are trained for, and items with small-norm embeddings no longer form one blob that every level
leaves together. Amazon Beauty, TF-IDF-SVD text embeddings, 3 x 256 residual k-means, 3 seeds
(benchmarks/generative_sid_stats.py --encoder tfidf): the largest group of items sharing all three codes falls
from 641 +- 15 (raw) to 57 +- 0 (normalised; exactly the 57 items whose text shares no word with another item,
identical vectors no quantiser can split) and items colliding before the extra level from 39.5% to 36.5%.
Centring the columns before normalising made that group larger (113 +- 15), so it is not done.

Inputs (issue 13): text embeddings, SASRec item embeddings, or both (:func:`concat_embeddings`, "collaborative
semantic IDs" as in LETTER / LC-Rec's CF variants).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field

import numpy as np
import torch

from llmrec_ft.io import atomic_path

CODES_FILE, META_FILE = "codes.npy", "semantic_ids.json"


@dataclass
class SemanticIDs:
    """The catalogue's codes. ``codes``: ``[num_items, num_levels + 1]`` int64, row ``i`` = item index ``i`` (the
    dataset's 0-based item index); the last column is the collision-separating level. ``codebook_sizes``: one per
    column (the last = the largest number of items sharing the first ``num_levels`` codes)."""

    codes: np.ndarray
    codebook_sizes: list[int]
    method: str = "given"
    info: dict = field(default_factory=dict)  # e.g. RQ-VAE losses; saved with the codes

    def __post_init__(self):
        self.codes = np.asarray(self.codes, dtype=np.int64)
        self.codebook_sizes = [int(k) for k in self.codebook_sizes]
        if self.codes.ndim != 2 or self.codes.shape[1] != len(self.codebook_sizes) or self.codes.shape[1] < 2:
            raise ValueError(f"codes must be [num_items, num_levels + 1] with one codebook size per column; got "
                             f"{self.codes.shape} and {len(self.codebook_sizes)} sizes")
        if (self.codes < 0).any() or (self.codes >= np.asarray(self.codebook_sizes)).any():
            row, col = np.argwhere((self.codes < 0) | (self.codes >= np.asarray(self.codebook_sizes)))[0]
            raise ValueError(f"code {self.codes[row, col]} of item row {row + 1}, level {col + 1} is outside "
                             f"[0, {self.codebook_sizes[col]})")
        if len(np.unique(self.codes, axis=0)) != len(self.codes):
            raise ValueError("two items have the same semantic ID; build codes with with_collision_level()")

    @property
    def num_items(self) -> int:
        return self.codes.shape[0]

    @property
    def num_levels(self) -> int:
        """Quantisation levels, not counting the collision-separating one."""
        return self.codes.shape[1] - 1

    @classmethod
    def with_collision_level(cls, codes: np.ndarray, codebook_sizes: list[int], **kwargs) -> "SemanticIDs":
        """Append the extra level to ``codes`` ``[N, L]``: item ``i`` gets its rank (in item order) among the items
        sharing its ``L`` codes."""
        codes = np.asarray(codes, dtype=np.int64)
        _, group = np.unique(codes, axis=0, return_inverse=True)
        group = group.reshape(-1)
        order = np.argsort(group, kind="stable")
        sorted_groups = group[order]
        starts = np.r_[0, np.flatnonzero(np.diff(sorted_groups)) + 1]
        group_start = np.repeat(starts, np.diff(np.r_[starts, len(order)]))
        extra = np.empty(len(codes), dtype=np.int64)
        extra[order] = np.arange(len(order)) - group_start
        return cls(np.column_stack([codes, extra]), list(codebook_sizes) + [int(extra.max()) + 1], **kwargs)

    def stats(self) -> dict:
        """Per quantisation level ``l`` (prefix = the first ``l`` codes): ``codes_used`` (share of level ``l``'s
        codebook that some item uses), ``items_colliding`` (share of items whose prefix another item shares),
        ``max_items_per_prefix``. Top level: ``num_items``, ``codebook_sizes``, ``collision_rate`` (=
        ``items_colliding`` of the last level, i.e. before the extra level) and ``max_items_per_code``."""
        levels = []
        for level in range(self.num_levels):
            _, counts = np.unique(self.codes[:, : level + 1], axis=0, return_counts=True)
            used = len(np.unique(self.codes[:, level]))
            levels.append({"level": level + 1, "codebook_size": self.codebook_sizes[level],
                           "codes_used": used / self.codebook_sizes[level],
                           "items_colliding": float(counts[counts > 1].sum() / self.num_items),
                           "max_items_per_prefix": int(counts.max())})
        return {"method": self.method, "num_items": self.num_items, "codebook_sizes": self.codebook_sizes,
                "levels": levels, "collision_rate": levels[-1]["items_colliding"],
                "max_items_per_code": self.codebook_sizes[-1]}

    def save(self, directory: str | os.PathLike) -> None:
        """Write ``codes.npy`` and ``semantic_ids.json`` (sizes, method, stats) into ``directory``, atomically."""
        with atomic_path(directory) as tmp:
            tmp.mkdir(parents=True)
            np.save(tmp / CODES_FILE, self.codes)
            meta = {"codebook_sizes": self.codebook_sizes, "method": self.method, "info": self.info,
                    "stats": self.stats()}
            (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "SemanticIDs":
        """Read what :meth:`save` wrote. Raises ``FileNotFoundError`` naming the missing file."""
        directory = os.fspath(directory)
        for name in (CODES_FILE, META_FILE):
            if not os.path.exists(os.path.join(directory, name)):
                raise FileNotFoundError(f"{os.path.join(directory, name)} not found (not a SemanticIDs.save folder)")
        with open(os.path.join(directory, META_FILE)) as f:
            meta = json.load(f)
        return cls(np.load(os.path.join(directory, CODES_FILE)), meta["codebook_sizes"], method=meta["method"],
                   info=meta.get("info", {}))


def auto_codebook_size(num_items: int, codebook_size: int = 256) -> int:
    """``min(codebook_size, 2 ** ceil(log2(2 sqrt(num_items))))``, at least 2 (see the module docstring)."""
    return int(max(2, min(codebook_size, 2 ** math.ceil(math.log2(2 * math.sqrt(max(num_items, 1)))))))


def concat_embeddings(*blocks: np.ndarray | torch.Tensor) -> np.ndarray:
    """``[N, d_1 + d_2 + ...]``: each block centred and scaled to unit mean row norm, then concatenated, so text
    and collaborative (SASRec) embeddings weigh the same in the k-means distances whatever their scales."""
    scaled = []
    for block in blocks:
        block = _as_numpy(block)
        block = block - block.mean(axis=0)
        scaled.append(block / max(float(np.linalg.norm(block, axis=1).mean()), 1e-12))
    if len({len(b) for b in scaled}) != 1:
        raise ValueError(f"blocks have different numbers of rows: {[len(b) for b in scaled]}")
    return np.concatenate(scaled, axis=1)


def residual_kmeans(embeddings: np.ndarray, num_levels: int, codebook_size: int, seed: int = 0
                    ) -> tuple[np.ndarray, list[np.ndarray]]:
    """Codes ``[N, num_levels]`` and centroids (one ``[K, dim]`` array per level): ``KMeans`` per level on the
    residuals left by the previous levels (TIGER Sec. 3.1 with k-means in place of the learned codebooks)."""
    from sklearn.cluster import KMeans  # imported here: the decoding path must not need scikit-learn

    residual = np.asarray(embeddings, dtype=np.float64).copy()
    codes, centroids = [], []
    for level in range(num_levels):
        kmeans = KMeans(n_clusters=codebook_size, n_init=1, random_state=seed + level).fit(residual)
        codes.append(kmeans.labels_.astype(np.int64))
        centroids.append(kmeans.cluster_centers_)
        residual -= kmeans.cluster_centers_[kmeans.labels_]
    return np.stack(codes, axis=1), centroids


def build_semantic_ids(embeddings: np.ndarray | torch.Tensor, num_levels: int = 3, codebook_size: int = 256,
                       method: str = "rkmeans", seed: int = 0, shrink_for_small_catalogues: bool = True,
                       normalize: bool = True, **rqvae_kwargs) -> SemanticIDs:
    """Semantic IDs of ``embeddings`` ``[num_items, dim]`` (row ``i`` = item index ``i``).

    ``codebook_size`` is capped by :func:`auto_codebook_size` unless ``shrink_for_small_catalogues=False``.
    ``normalize``: scale every row to unit L2 norm first (see the module docstring).
    ``method``: ``"rkmeans"`` or ``"rqvae"`` (``rqvae_kwargs`` go to :func:`llmrec_ft.generative.rqvae.train_rqvae`).
    Raises ``ValueError`` for a non-2-D input, non-finite values (naming the first bad row, 1-based), fewer
    items than codes, or an unknown method.
    """
    embeddings = _as_numpy(embeddings)
    if embeddings.ndim != 2:
        raise ValueError(f"embeddings must be [num_items, dim]; got shape {embeddings.shape}")
    bad = ~np.isfinite(embeddings).all(axis=1)
    if bad.any():
        raise ValueError(f"embedding row {int(np.flatnonzero(bad)[0]) + 1} has a NaN or infinite value")
    if normalize:
        embeddings = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    num_items = len(embeddings)
    size = auto_codebook_size(num_items, codebook_size) if shrink_for_small_catalogues else codebook_size
    if size > num_items or size < 2 or num_levels < 1:
        raise ValueError(f"need 2 <= codebook_size ({size}) <= num_items ({num_items}) and num_levels >= 1")
    if method == "rkmeans":
        codes, _ = residual_kmeans(embeddings, num_levels, size, seed)
        info = {}
    elif method == "rqvae":
        from llmrec_ft.generative.rqvae import train_rqvae

        codes, info = train_rqvae(embeddings, num_levels, size, seed=seed, **rqvae_kwargs)
    else:
        raise ValueError(f"unknown semantic-ID method {method!r}; expected 'rkmeans' or 'rqvae'")
    return SemanticIDs.with_collision_level(codes, [size] * num_levels, method=method, info=info)


def plot_code_usage(sids: SemanticIDs, path: str | os.PathLike) -> None:
    """PNG with one panel per level: items per code, codes sorted by count (log y), with the share of codes used
    and of colliding items in the title. A flat curve is a well-spread codebook; a cliff is collapse."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stats = sids.stats()
    fig, axes = plt.subplots(1, sids.num_levels + 1, figsize=(4 * (sids.num_levels + 1), 3.2), squeeze=False)
    for column, ax in enumerate(axes[0]):
        counts = np.sort(np.bincount(sids.codes[:, column], minlength=sids.codebook_sizes[column]))[::-1]
        ax.bar(np.arange(len(counts)), np.maximum(counts, 0.5), width=1.0, color="C0" if column < sids.num_levels
               else "C1")
        ax.set_yscale("log")
        ax.set_xlabel("code (sorted by items)")
        if column < sids.num_levels:
            level = stats["levels"][column]
            ax.set_title(f"level {column + 1}: {level['codes_used']:.0%} codes used\n"
                         f"{level['items_colliding']:.0%} items share the prefix", fontsize=9)
        else:
            ax.set_title(f"extra level: up to {sids.codebook_sizes[-1]} items per code", fontsize=9)
    axes[0][0].set_ylabel("items")
    fig.suptitle(f"{sids.method} semantic IDs, {sids.num_items} items", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def _as_numpy(array) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        return array.detach().float().cpu().numpy()
    return np.asarray(array, dtype=np.float64)
