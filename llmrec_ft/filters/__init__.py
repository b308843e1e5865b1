"""Spectral filters that keep collaborative signal in a frozen LM (FreLLM4Rec, arXiv 2508.10312)."""

from llmrec_ft.filters.frellm4rec import FreLLM4Rec, FreLLM4RecConfig
from llmrec_ft.filters.frellm4rec_authors import FreLLM4RecAuthors
from llmrec_ft.filters.glpf import graph_low_pass
from llmrec_ft.filters.graph import cooccurrence_graph, normalized_adjacency
from llmrec_ft.filters.hooks import decoder_layers, map_layer_outputs
from llmrec_ft.filters.spectral_energy import layerwise_low_frequency_energy, plot_layerwise_energy
from llmrec_ft.filters.tfm import temporal_frequency_modulation, temporal_low_pass

__all__ = ["FreLLM4Rec", "FreLLM4RecAuthors", "FreLLM4RecConfig", "cooccurrence_graph", "decoder_layers", "graph_low_pass",
           "layerwise_low_frequency_energy", "map_layer_outputs", "normalized_adjacency", "plot_layerwise_energy",
           "temporal_frequency_modulation", "temporal_low_pass"]
