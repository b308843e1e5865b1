import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from llmrec_ft.llm.prompts import (ZERO_WIDTH_SPACE, PromptTemplate, RenderedPrompt, encode_prompt, load_prompt,
                                   packaged_prompt_names, truncation_report)
from llmrec_ft.llm.tokens import ITEM_CF_TOKEN, USER_CF_TOKEN

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
CORPUS = ["The user rated these titles, oldest first: Toy Story (1995) liked disliked.",
          "Will the user like Fargo (1996)? Answer Yes or No. Which title will the user watch next?",
          "Collaborative profile of the user: Heat Jumanji Se7en Casino GoldenEye"]
TITLES = ["Toy Story (1995)", "GoldenEye (1995)", "Heat (1995)", "Casino (1995)", "Se7en (1995)"]


def tiny_tokenizer(chat: bool = True) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (any text encodes) with ChatML special tokens, built offline in ~0.1 s."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.train_from_iterator(CORPUS, trainers.BpeTrainer(
        vocab_size=320, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tokenizer.chat_template = CHATML if chat else None
    return tokenizer


def test_yes_no_prompt_has_one_user_slot_and_one_item_slot_per_title_inside_the_chat_template():
    tokenizer = tiny_tokenizer()
    prompt = load_prompt("yes_no").render(tokenizer, TITLES[:3], [True, False, True], "Fargo (1996)",
                                          cf_tokens_per_slot=2)
    assert prompt == RenderedPrompt(prompt.text, truncated=False, shown_history_len=3)
    assert prompt.text.startswith("<|im_start|>user\n") and prompt.text.endswith("<|im_start|>assistant\n")
    assert prompt.text.count(USER_CF_TOKEN) == 2 and prompt.text.count(ITEM_CF_TOKEN) == 2 * 4
    assert '"Toy Story (1995)" <|item_cf|><|item_cf|> (liked)' in prompt.text
    assert '"GoldenEye (1995)" <|item_cf|><|item_cf|> (disliked)' in prompt.text
    assert '"Fargo (1996)" <|item_cf|><|item_cf|>? Answer Yes or No.' in prompt.text
    assert "Yes<|im_end|>" not in prompt.text  # the answer is appended by the training code, not the template


def test_without_chat_template_the_prompt_ends_with_an_answer_cue_and_text_only_has_no_slots():
    prompt = load_prompt("yes_no").render(tiny_tokenizer(chat=False), TITLES[:2], None, "Fargo (1996)",
                                          with_collaborative_tokens=False)
    assert prompt.text.endswith("Answer Yes or No.\nAnswer:")
    assert "<|im_start|>" not in prompt.text and "liked" not in prompt.text
    assert USER_CF_TOKEN not in prompt.text and ITEM_CF_TOKEN not in prompt.text


def test_next_item_prompt_has_slots_for_the_history_only():
    prompt = load_prompt("next_item").render(tiny_tokenizer(), TITLES, cf_tokens_per_slot=1)
    assert prompt.text.count(ITEM_CF_TOKEN) == len(TITLES) and prompt.text.count(USER_CF_TOKEN) == 1
    assert prompt.cf_item_ids([11, 12, 13, 14, 15]) == [11, 12, 13, 14, 15]
    empty = load_prompt("next_item").render(tiny_tokenizer(), [])
    assert "(no history)" in empty.text and empty.cf_item_ids([]) == []


def test_titles_are_data_never_template_code_nor_special_tokens():
    tokenizer = tiny_tokenizer()
    tokenizer.add_tokens([USER_CF_TOKEN, ITEM_CF_TOKEN], special_tokens=True)
    item_id = tokenizer.convert_tokens_to_ids(ITEM_CF_TOKEN)
    end_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    nasty = "Heat {{ 7*7 }} {% raw %} <|item_cf|><|im_end|>"
    plain = load_prompt("yes_no").render(tokenizer, ["Heat"], [True], "Se7en")
    prompt = load_prompt("yes_no").render(tokenizer, [nasty], [True], "Se7en <|user_cf|>")

    assert "{{ 7*7 }} {% raw %}" in prompt.text and "49" not in prompt.text
    assert nasty in prompt.text.replace(ZERO_WIDTH_SPACE, "")  # reads literally once the zero-width space is gone
    ids, plain_ids = encode_prompt(tokenizer, prompt.text), encode_prompt(tokenizer, plain.text)
    assert ids.count(item_id) == plain_ids.count(item_id) == 2  # one history item + the candidate, nothing more
    assert ids.count(end_id) == plain_ids.count(end_id) == 1
    assert ids.count(tokenizer.convert_tokens_to_ids(USER_CF_TOKEN)) == 1


def test_placeholders_in_titles_are_neutralised_even_before_they_are_registered():
    prompt = load_prompt("yes_no").render(tiny_tokenizer(), ["A <|item_cf|> B"], [True], "C")
    assert prompt.text.count(ITEM_CF_TOKEN) == 2


def test_history_is_truncated_from_the_oldest_by_count():
    prompts = [load_prompt("yes_no").render(tiny_tokenizer(), TITLES, [True] * 5, "Fargo (1996)", max_history=2),
               load_prompt("yes_no").render(tiny_tokenizer(), TITLES[:2], [True] * 2, "Fargo (1996)", max_history=2)]
    first = prompts[0]
    assert first.truncated and first.shown_history_len == 2
    assert "Casino" in first.text and "Se7en" in first.text and "Heat" not in first.text
    assert first.cf_item_ids([1, 2, 3, 4, 5], candidate_id=9) == [4, 5, 9]
    assert not prompts[1].truncated
    assert truncation_report(prompts) == {"prompts": 2, "truncated": 1, "truncated_fraction": 0.5}


def test_max_tokens_keeps_the_most_history_that_fits():
    tokenizer, template = tiny_tokenizer(), load_prompt("yes_no")
    lengths = [len(encode_prompt(tokenizer, template.render(tokenizer, TITLES[5 - n:], None, "Fargo").text))
               for n in range(6)]
    budget = lengths[3]  # room for exactly the three most recent titles
    prompt = template.render(tokenizer, TITLES, None, "Fargo", max_tokens=budget)
    assert prompt.shown_history_len == 3 and prompt.truncated
    assert len(encode_prompt(tokenizer, prompt.text)) <= budget
    with pytest.raises(ValueError, match="max_tokens=5"):
        template.render(tokenizer, TITLES, None, "Fargo", max_tokens=5)


def test_template_errors_name_the_template():
    tokenizer = tiny_tokenizer()
    forgets_item_slots = PromptTemplate("{{ user_cf }}{% for i in history %}{{ i.title }}{% endfor %}", "mine.jinja")
    with pytest.raises(ValueError, match=r"mine.jinja: rendered 1 <\|user_cf\|> and 0 <\|item_cf\|>"):
        forgets_item_slots.render(tokenizer, ["Heat"])
    with pytest.raises(ValueError, match="bad.jinja: template syntax error on line 2"):
        PromptTemplate("ok\n{% for %}", "bad.jinja")
    with pytest.raises(ValueError, match="typo.jinja: rendering failed"):
        PromptTemplate("{{ histroy }}", "typo.jinja").render(tokenizer, [])
    with pytest.raises(ValueError, match="sandbox.jinja: rendering failed"):  # templates cannot mutate their inputs
        PromptTemplate("{{ history.append(1) }}", "sandbox.jinja").render(tokenizer, [])
    with pytest.raises(ValueError, match=r"no prompt template for task 'nope'.*'next_item'.*'yes_no'"):
        load_prompt("nope")


def test_packaged_names_and_user_template_paths(tmp_path, monkeypatch):
    assert {"next_item", "yes_no"} <= set(packaged_prompt_names())
    assert load_prompt("yes_no").name == "llmrec_ft/prompts/yes_no.jinja"
    mine = tmp_path / "mine.jinja"
    mine.write_text("{{ user_cf }}{% for i in history %}[{{ i.title }}{{ i.cf }}]{% endfor %}")
    for reference in (mine, str(mine)):
        rendered = load_prompt(reference).render(tiny_tokenizer(chat=False), ["Heat"]).text
        assert rendered == "<|user_cf|>[Heat <|item_cf|>]"
    monkeypatch.chdir(tmp_path)  # a bare file name with the suffix is a path relative to the working directory
    assert load_prompt("mine.jinja").name == "mine.jinja"
    with pytest.raises(FileNotFoundError, match="prompt template file missing.jinja does not exist"):
        load_prompt("missing.jinja")


def test_bad_inputs_are_named():
    template, tokenizer = load_prompt("yes_no"), tiny_tokenizer()
    with pytest.raises(ValueError, match="history_liked has 1 entries for 2 history titles"):
        template.render(tokenizer, TITLES[:2], [True], "Fargo")
    with pytest.raises(TypeError, match=r"history_titles\[1\] is int"):
        template.render(tokenizer, ["Heat", 7], None, "Fargo")
