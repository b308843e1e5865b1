"""The hybrid model SASRecLLM trains: a backbone with LoRA, ``<|user_cf|>``/``<|item_cf|>`` tokens and a projector
that maps SASRec vectors into them (:class:`~llmrec_ft.train.trainer.TrainableCollaborativeLM`), its options,
and how it is built -- fresh, or from an earlier run's trained parts for the plug-and-play schedule.

The options are checked when :class:`HybridModelArgs` is built (the recipe's argument parsing), not when the
backbone loads: that comes after SASRec's pre-training, minutes into a run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from peft import LoraConfig, get_peft_model

from llmrec_ft import hub
from llmrec_ft.collab.sasrec import SASRec
from llmrec_ft.llm.backbone import EMBEDDED_MODEL, check_backbone_options, compile_decoder_layers, load_backbone
from llmrec_ft.llm.projector import CollaborativeProjector
from llmrec_ft.llm.prompts import load_prompt
from llmrec_ft.llm.tokens import add_collaborative_tokens
from llmrec_ft.train.answer_losses import ANSWER_LOSSES
from llmrec_ft.train.pointwise_data import answer_token_ids
from llmrec_ft.train.schedules import ScheduleArgs
from llmrec_ft.train.trainer import TrainableCollaborativeLM

ITEM_TEXT_FIELDS = ("title", "text")


@dataclass
class HybridModelArgs:
    """Backbone, LoRA, projector and prompt of a SASRecLLM run. Field names double as recipe YAML keys."""

    model_name_or_path: str = field(default=EMBEDDED_MODEL, metadata={"help": "Hub id, local dir or embedded name."})
    dtype: str = field(default="float32", metadata={"help": "float32 | bfloat16 | float16."})
    attn_implementation: str = field(default="sdpa", metadata={
        "help": "sdpa | llmrec_varlen (PyTorch varlen FlashAttention; with padding_free) | flash_attention_2 | eager."})
    load_in_4bit: bool = field(default=False, metadata={"help": "QLoRA: 4-bit base model (bitsandbytes, GPU)."})
    load_in_8bit: bool = field(default=False, metadata={"help": "8-bit base model (bitsandbytes, GPU)."})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
                                           metadata={"help": "Modules that get LoRA ('all-linear' works too)."})
    projector_hidden_dim: int = field(default=320, metadata={"help": "d_exp of the 2-layer projector MLP."})
    cf_tokens_per_slot: int = field(default=1, metadata={"help": "LLM tokens per projected SASRec vector."})
    item_text_field: str = field(default="title", metadata={"help": "Item column shown in prompts: title | text."})
    max_prompt_tokens: int | None = field(default=None, metadata={"help": "Drop oldest history beyond this."})
    answer_only_loss: bool = field(default=True, metadata={
        "help": "Apply the LM head only where a label is (the answer): same loss, no [batch, length, vocab] logits."})
    compile_layers: bool = field(default=False, metadata={
        "help": "torch.compile each decoder layer (GPU speed; seconds of compilation at the start)."})
    prompt: str = field(default="yes_no", metadata={"help": "Packaged template (llmrec_ft/prompts/) or a .jinja path: yes_no | collm_yes_no."})
    history_cf_tokens: bool = field(default=True, metadata={
        "help": "History items get <|item_cf|> slots (false: only user and candidate, CoLLM's prompt)."})
    loss: str = field(default="yes_no_ce", metadata={
        "help": "yes_no_ce (answer cross-entropy) | yes_bce (BCE on the Yes logit, scored by sigmoid(Yes); CoLLM)."})

    def __post_init__(self):
        check_backbone_options(self.model_name_or_path, self.dtype, self.attn_implementation, self.load_in_4bit,
                               self.load_in_8bit)
        if self.loss not in ANSWER_LOSSES:
            raise ValueError(f"loss={self.loss!r}; choose one of {ANSWER_LOSSES}")
        if self.item_text_field not in ITEM_TEXT_FIELDS:
            raise ValueError(f"item_text_field={self.item_text_field!r}; choose one of {ITEM_TEXT_FIELDS}")
        for name in ("lora_r", "cf_tokens_per_slot", "projector_hidden_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        load_prompt(self.prompt, history_cf=self.history_cf_tokens)  # an unknown name or missing file fails here


def build_hybrid_model(args: HybridModelArgs, schedule_args: ScheduleArgs, sasrec: SASRec):
    """``(TrainableCollaborativeLM, tokenizer)``: fresh LoRA + projector around ``sasrec`` or, for the plug-and-play
    schedule, the trained ones of the run saved in ``pretrained_hybrid`` (an artifact folder) around the new
    ``sasrec``.

    The projector's output starts at the norm of the backbone's token embeddings (``scale_to_embedding_norm_``).
    Raises ``ValueError`` when ``pretrained_hybrid`` was trained on another backbone or SASRec width."""
    if schedule_args.schedule == "plug_and_play":
        trained, tokenizer, trained_config = hub.load_artifacts(schedule_args.pretrained_hybrid)
        if trained_config["model_name_or_path"] != args.model_name_or_path:
            raise ValueError(f"pretrained_hybrid was trained on {trained_config['model_name_or_path']!r}, "
                             f"but model_name_or_path is {args.model_name_or_path!r}")
        if trained.projector.in_dim != sasrec.config.hidden_size:
            raise ValueError(f"the new SASRec is {sasrec.config.hidden_size}-d but the projector expects "
                             f"{trained.projector.in_dim}-d")
        return TrainableCollaborativeLM(trained.lm, trained.projector, sasrec, trained.token_ids,
                                        answer_only_loss=args.answer_only_loss, loss=args.loss,
                                        yes_token_id=answer_token_ids(tokenizer)[0]), tokenizer
    lm, tokenizer = load_backbone(args.model_name_or_path, dtype=args.dtype,
                                  attn_implementation=args.attn_implementation,
                                  load_in_4bit=args.load_in_4bit, load_in_8bit=args.load_in_8bit)
    token_ids = add_collaborative_tokens(tokenizer, lm)
    device = lm.get_input_embeddings().weight.device  # quantised models are placed on load, not by Trainer
    target_modules = args.lora_target_modules
    lm = get_peft_model(lm, LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                                       task_type="CAUSAL_LM",
                                       target_modules=target_modules[0] if target_modules == ["all-linear"]
                                       else target_modules))
    embeddings = lm.get_input_embeddings()
    sasrec.to(device)
    projector = CollaborativeProjector(sasrec.config.hidden_size, args.projector_hidden_dim,
                                       embeddings.embedding_dim, args.cf_tokens_per_slot).to(device)
    projector.scale_to_embedding_norm_(sasrec.all_item_embeddings()[1:].detach(), embeddings.weight)
    if args.compile_layers:
        compile_decoder_layers(lm)
    return TrainableCollaborativeLM(lm, projector, sasrec, token_ids, answer_only_loss=args.answer_only_loss,
                                    loss=args.loss, yes_token_id=answer_token_ids(tokenizer)[0]), tokenizer
