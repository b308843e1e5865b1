"""Adapters from LLM item text embeddings to a recommender's item space, and their fusion with ID embeddings."""

from llmrec_ft.adapters.baselines import MLPAdapter, SVDTopKAdapter
from llmrec_ft.adapters.fusion import ADAPTERS, FusedItemEmbedding, attach_adapter, build_adapter
from llmrec_ft.adapters.spectran import SpecTranAdapter, SpectralPositionEncoding
from llmrec_ft.adapters.spectrum import effective_rank, normalized_spectrum, plot_spectra, spectral_basis, standardize

__all__ = ["ADAPTERS", "FusedItemEmbedding", "MLPAdapter", "SVDTopKAdapter", "SpecTranAdapter",
           "SpectralPositionEncoding", "attach_adapter", "build_adapter", "effective_rank", "normalized_spectrum",
           "plot_spectra", "spectral_basis", "standardize"]
