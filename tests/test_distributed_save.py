"""Saving under FSDP / DeepSpeed: CollaborativeLM.save_pretrained writes a gathered state dict, and
parameters that are views into one flat buffer (DeepSpeed ZeRO-2) save like any others."""

import weakref

import pytest
import torch
from safetensors.torch import load_file

from llmrec_ft.llm.collaborative_lm import COLLAB_MODEL_DIR, PROJECTOR_NAME
from llmrec_ft.train.tiny import save_tiny_backbone, tiny_collaborative_lm
from llmrec_ft.train.zero3 import whole_weights


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    backbone = save_tiny_backbone(tmp_path_factory.mktemp("tiny") / "llama", "llama", hidden_size=32, num_layers=1)
    return tiny_collaborative_lm(backbone, num_items=20)[0]


def test_parameters_in_one_flat_buffer_save_and_reload(model, tmp_path):
    params = list(model.projector.parameters())
    flat = torch.cat([p.detach().flatten() for p in params])
    offset = 0
    for param in params:  # what ZeRO-2 does to trainable parameters
        param.data = flat[offset:offset + param.numel()].view_as(param)
        offset += param.numel()
    model.save_pretrained(tmp_path)
    saved = load_file(tmp_path / PROJECTOR_NAME)
    for name, value in model.projector.state_dict().items():
        torch.testing.assert_close(saved[name], value)


def test_a_gathered_state_dict_is_what_gets_saved(model, tmp_path):
    # Under FSDP the live parameters are shards; Trainer passes the gathered full state dict instead.
    gathered = {name: value + 1 for name, value in model.state_dict().items()}
    model.save_pretrained(tmp_path, state_dict=gathered)
    projector = load_file(tmp_path / PROJECTOR_NAME)
    for name, value in model.projector.state_dict().items():
        torch.testing.assert_close(projector[name], value + 1)
    collab = load_file(tmp_path / COLLAB_MODEL_DIR / "model.safetensors")
    for name, value in model.collab_model.state_dict().items():
        torch.testing.assert_close(collab[name], value + 1)
    adapter = load_file(tmp_path / "adapter_model.safetensors")
    lora_b = {name: value for name, value in model.lm.state_dict().items() if "lora_B" in name}
    assert lora_b and len(adapter) == 2 * len(lora_b)
    for name, value in lora_b.items():
        saved_name = name.replace(".default", "")
        torch.testing.assert_close(adapter[saved_name], value + 1)


def test_whole_weights_hides_the_zero3_config_and_restores_it():
    from transformers.integrations import deepspeed

    class Zero3Config:  # stands in for transformers' HfDeepSpeedConfig of a stage-3 run
        def is_zero3(self):
            return True

    class Plugin:  # Accelerate's DeepSpeedPlugin: registers its config with transformers through a weakref
        def set_deepspeed_weakref(self):
            self.config = Zero3Config()
            deepspeed._hf_deepspeed_config_weak_ref = weakref.ref(self.config)

    class Args:
        deepspeed_plugin = Plugin()

    Args.deepspeed_plugin.set_deepspeed_weakref()
    try:
        assert deepspeed.is_deepspeed_zero3_enabled()
        with whole_weights(Args()):
            assert not deepspeed.is_deepspeed_zero3_enabled()  # from_pretrained skips zero.Init here
        assert deepspeed.is_deepspeed_zero3_enabled()
    finally:
        deepspeed.unset_hf_deepspeed_config()
