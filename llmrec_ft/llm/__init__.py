"""The LLM side: backbone loading, prompt templates and collaborative-token injection."""

from llmrec_ft.llm.backbone import EMBEDDED_MODEL, load_backbone
from llmrec_ft.llm.collaborative_lm import CollaborativeLM
from llmrec_ft.llm.projector import CollaborativeProjector
from llmrec_ft.llm.prompts import PromptTemplate, RenderedPrompt, encode_prompt, load_prompt, truncation_report
from llmrec_ft.llm.tokens import ITEM_CF_TOKEN, USER_CF_TOKEN, CollaborativeTokenIds, add_collaborative_tokens

__all__ = ["EMBEDDED_MODEL", "ITEM_CF_TOKEN", "USER_CF_TOKEN", "CollaborativeLM", "CollaborativeProjector",
           "CollaborativeTokenIds", "PromptTemplate", "RenderedPrompt", "add_collaborative_tokens", "encode_prompt",
           "load_backbone", "load_prompt", "truncation_report"]
