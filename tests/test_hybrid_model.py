"""SASRecLLM's model options (llmrec_ft/train/hybrid_model.py) fail when the arguments are parsed, not minutes later
when the backbone loads after SASRec's pre-training."""

import huggingface_hub.constants
import pytest
from trl import TrlParser

from llmrec_ft.train.hybrid_model import HybridModelArgs


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """A Hub lookup fails at once, as under HF_HUB_OFFLINE=1, instead of retrying a network that is not there."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.mark.parametrize("option,value,message", [
    ("--dtype", "float8", "dtype='float8' is not supported"),
    ("--model_name_or_path", "no-such-model", "model_name_or_path='no-such-model' is not an embedded model"),
    ("--attn_implementation", "flash", "attn_implementation='flash' is not supported"),
    ("--loss", "bce", r"loss='bce'; choose one of \('yes_no_ce', 'yes_bce'\)"),
    ("--item_text_field", "name", "item_text_field='name'"),
    ("--prompt", "yes_or_no", "no prompt template for task 'yes_or_no'"),
    ("--lora_r", "0", "lora_r=0 must be >= 1"),
])
def test_a_bad_option_fails_at_parse_time_naming_the_field(option, value, message):
    with pytest.raises(ValueError, match=message):
        TrlParser((HybridModelArgs,)).parse_args_and_config([option, value])


def test_the_defaults_pass():
    assert HybridModelArgs().model_name_or_path == "smollm2-135m-instruct"
