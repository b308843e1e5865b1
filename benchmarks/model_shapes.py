"""Real checkpoints' shapes for random-initialised benchmark models (no download; only the shapes matter).

Values are the public ``config.json`` of each checkpoint. Kept apart from ``train_throughput.py`` so that
scripts running where TRL / datasets are absent (``generative_decoding.py`` on the GPU image) share them.
"""

from transformers import LlamaConfig, MistralConfig, Qwen2Config

REAL_SHAPES = {
    "qwen2.5-0.5b": (Qwen2Config, dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                                       num_attention_heads=14, num_key_value_heads=2, vocab_size=151936,
                                       tie_word_embeddings=True, rope_theta=1e6, max_position_embeddings=32768)),
    "qwen2.5-7b": (Qwen2Config, dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                                     num_attention_heads=28, num_key_value_heads=4, vocab_size=152064,
                                     tie_word_embeddings=False, rope_theta=1e6, max_position_embeddings=32768)),
    "llama-3.1-8b": (LlamaConfig, dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                                       num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                                       rope_theta=500000.0, max_position_embeddings=131072,
                                       rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                     "high_freq_factor": 4.0,
                                                     "original_max_position_embeddings": 8192})),
    "mistral-7b": (MistralConfig, dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                                       num_attention_heads=32, num_key_value_heads=8, vocab_size=32768,
                                       rope_theta=1e6, sliding_window=None, max_position_embeddings=32768)),
}
