"""Generative recommendation: items as semantic-ID (or title) token sequences, decoded under a catalogue trie.

semantic_ids / rqvae: item -> code; tokens: codes -> new vocabulary entries; trie: the catalogue as a prefix
trie of token sequences; decoding: constrained beam search (fast path and the ``generate`` reference).
"""

from llmrec_ft.generative.decoding import constrained_beam_search, hf_generate_beam_search
from llmrec_ft.generative.semantic_ids import SemanticIDs, build_semantic_ids, concat_embeddings, plot_code_usage
from llmrec_ft.generative.tokens import add_code_tokens, code_tokens, trainable_token_indices
from llmrec_ft.generative.trie import CatalogConstraintLogitsProcessor, CatalogTrie

__all__ = ["CatalogConstraintLogitsProcessor", "CatalogTrie", "SemanticIDs", "add_code_tokens",
           "build_semantic_ids", "code_tokens", "concat_embeddings", "constrained_beam_search",
           "hf_generate_beam_search", "plot_code_usage", "trainable_token_indices"]
