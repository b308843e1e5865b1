"""Field cases (issue 17, ``tests/fixtures/field_cases/`` from ``../shared/field_cases``): each fault *kind* is
checked in every source that can meet it -- text decoding (FC-02), missing/blank item text (FC-03), HTML in
titles (FC-04), time resolution and ordering (FC-08) -- plus the library-level cases FC-12, FC-16, FC-17."""

import gzip
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import datasets
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from llmrec_ft.data import DataConfig, DataError, build_dataset, load_manifest, prepare_dataset
from llmrec_ft.data.files import iter_lines
from llmrec_ft.data.interactions import parse_timestamp
from llmrec_ft.data.text import clean_list, clean_text
from llmrec_ft.eval import roc_auc

FIXTURES = Path(__file__).parent / "fixtures"
CASES = FIXTURES / "field_cases"


def _generic(interactions, items, **options):
    return DataConfig(dataset="generic", data_path=str(interactions), item_path=str(items),
                      **{"min_user_interactions": 3, **options})


def _amazon(release, reviews, meta, **options):
    return DataConfig(dataset=release, data_path=str(reviews), item_path=str(meta),
                      **{"min_user_interactions": 3, **options})


def _fails_without_output(config, tmp_path, match, error=DataError):
    out = tmp_path / "prepared"
    with pytest.raises(error, match=match):
        prepare_dataset(config, out)
    assert not out.exists() and not any(p.name.startswith(".prepared") for p in tmp_path.iterdir())


# --- every source, as a copy in tmp_path whose item with raw id "1" (Toy Story in every fixture) gets a new title

def _copy(name, tmp_path):
    folder = tmp_path / name
    shutil.copytree(FIXTURES / name, folder)
    return folder


def _ml100k(tmp_path, title: bytes):
    folder = _copy("ml-100k", tmp_path)
    lines = (folder / "u.item").read_bytes().split(b"\n")
    parts = lines[0].split(b"|")
    parts[1] = title + b" (1995)"
    (folder / "u.item").write_bytes(b"\n".join([b"|".join(parts), *lines[1:]]))
    return DataConfig(dataset="ml-100k-grouplens", data_path=str(folder)), "u.item", 1, "movie title"


def _ml1m(tmp_path, title: bytes):
    folder = _copy("ml-1m", tmp_path)
    lines = (folder / "movies.dat").read_bytes().split(b"\n")
    parts = lines[0].split(b"::")
    parts[1] = title + b" (1995)"
    (folder / "movies.dat").write_bytes(b"\n".join([b"::".join(parts), *lines[1:]]))
    return DataConfig(dataset="ml-1m", data_path=str(folder)), "movies.dat", 1, "Title"


def _recbole(tmp_path, title: bytes):
    folder = _copy("recbole", tmp_path) / "tiny"
    lines = (folder / "tiny.item").read_bytes().split(b"\n")
    parts = lines[1].split(b"\t")
    parts[1] = title
    (folder / "tiny.item").write_bytes(b"\n".join([lines[0], b"\t".join(parts), *lines[2:]]))
    return DataConfig(dataset="recbole", data_path=str(folder)), "tiny.item", 2, "movie_title"


def _generic_csv(tmp_path, title: bytes):
    folder = _copy("generic", tmp_path)
    lines = (folder / "items.csv").read_bytes().split(b"\n")
    item, _ = lines[1].split(b",", 1)
    (folder / "items.csv").write_bytes(b"\n".join([lines[0], item + b',"' + title + b'",', *lines[2:]]))  # no text
    return (DataConfig(dataset="generic", data_path=str(folder / "interactions.csv"),
                       item_path=str(folder / "items.csv")), "items.csv", 2, "title")


def _json_meta(lines: list[bytes], title: bytes) -> list[bytes]:
    obj = json.loads(lines[0])
    marker = "\u0000TITLE\u0000"
    obj["title"] = marker
    return [json.dumps(obj).encode().replace(json.dumps(marker).encode(), b'"' + title + b'"'), *lines[1:]]


def _amazon2018(tmp_path, title: bytes):
    folder = _copy("amazon2018", tmp_path)
    lines = (folder / "meta.json").read_bytes().split(b"\n")
    (folder / "meta.json").write_bytes(b"\n".join(_json_meta(lines, title)))
    return (DataConfig(dataset="amazon2018", data_path=str(folder / "reviews.json.gz"),
                       item_path=str(folder / "meta.json")), "meta.json", 1, "title")


def _amazon2023(tmp_path, title: bytes):
    folder = _copy("amazon2023", tmp_path)
    with gzip.open(folder / "meta_Movies_and_TV.jsonl.gz", "rb") as handle:
        lines = handle.read().split(b"\n")
    with gzip.open(folder / "meta_Movies_and_TV.jsonl.gz", "wb") as handle:
        handle.write(b"\n".join(_json_meta(lines, title)))
    return (DataConfig(dataset="amazon2023", data_path=str(folder / "Movies_and_TV.jsonl"),
                       item_path=str(folder / "meta_Movies_and_TV.jsonl.gz")), "meta_Movies_and_TV.jsonl.gz", 1, "title")


SOURCES = {"ml-100k-grouplens": _ml100k, "ml-1m": _ml1m, "recbole": _recbole, "generic": _generic_csv,
           "amazon2018": _amazon2018, "amazon2023": _amazon2023}


def _title_of_item_1(dataset):
    """Title of the item that is raw id 1 / i1 / B000000001 (Toy Story) in every fixture."""
    raw_ids = dataset["items"]["raw_item_id"]
    return dataset["items"]["title"][next(i for i, raw in enumerate(raw_ids) if raw.lstrip("iB0") == "1")]


# --- FC-02: text decoding -------------------------------------------------------------------------------------

def test_utf8_bom_reads_like_utf8():
    plain, _ = build_dataset(_generic(CASES / "FC-02" / "interactions.csv", CASES / "FC-02" / "items.csv"))
    bom, manifest = build_dataset(_generic(CASES / "FC-02" / "interactions_bom.csv", CASES / "FC-02" / "items.csv"))
    assert bom["train"]["items"] == plain["train"]["items"] and bom["test"]["target"] == plain["test"]["target"]
    assert bom["train"]["ratings"] == plain["train"]["ratings"] and manifest["counts"]["users"] == 3
    assert bom["items"]["title"][1] == "Café Grinder"


@pytest.mark.parametrize("items, row", [("items_latin1.csv", 3), ("items_latin1.jsonl", 2)])
def test_undecodable_bytes_name_file_row_and_field(tmp_path, items, row):
    config = _generic(CASES / "FC-02" / "interactions.csv", CASES / "FC-02" / items)
    _fails_without_output(config, tmp_path, rf"{items}, row {row}, field 'title': bytes that are not valid utf-8 in "
                                            r"b'Caf\\xe9 Grinder'; set encoding")
    config.encoding = "latin-1"
    dataset, manifest = build_dataset(config)
    assert dataset["items"]["title"][1] == "Café Grinder" and manifest["config"]["encoding"] == "latin-1"


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_every_source_names_undecodable_field(tmp_path, name):
    config, file, row, field = SOURCES[name](tmp_path, b"Caf\xe9")
    config.encoding = "utf-8"  # GroupLens files default to Latin-1, where every byte decodes
    _fails_without_output(config, tmp_path, rf"{file}, row {row}, field '{field}': bytes that are not valid utf-8")


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_every_source_accepts_a_utf8_bom(tmp_path, name):
    config, *_ = SOURCES[name](tmp_path, b"Toy Story")
    reference, _ = build_dataset(config)
    for path in Path(config.data_path).parent.rglob("*"):
        if path.is_file() and path.suffix != ".gz":
            path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    config.encoding = "utf-8"
    dataset, _ = build_dataset(config)
    assert dataset["train"]["items"] == reference["train"]["items"] and _title_of_item_1(dataset) == "Toy Story"


def test_grouplens_default_encoding_is_latin1(tmp_path):
    config, *_ = _ml1m(tmp_path, b"Mis\xe9rables")
    assert _title_of_item_1(build_dataset(config)[0]) == "Misérables"


def test_encoding_option_is_checked(tmp_path):
    with pytest.raises(ValueError, match="not a known text encoding"):
        DataConfig(encoding="klingon")
    with pytest.raises(ValueError, match="not ASCII-compatible"):
        DataConfig(encoding="utf-16")
    path = tmp_path / "lines.txt"
    path.write_bytes(b"ok\nbad \xff\n")
    with pytest.raises(DataError, match=r"lines.txt, row 2: bytes that are not valid utf-8"):
        list(iter_lines(path))


# --- FC-03: missing, null or blank item text ------------------------------------------------------------------

def test_missing_title_is_an_error_naming_file_row_field(tmp_path):
    config = _amazon("amazon2018", CASES / "FC-03" / "reviews.json", CASES / "FC-03" / "meta.json")
    _fails_without_output(config, tmp_path, r"meta.json, row 2, field 'title': item 'P2' has no usable title .*"
                                            r"missing_text=drop")


def test_missing_text_drop_drops_and_counts(tmp_path):
    meta = (CASES / "FC-03" / "meta.json").read_text() + "".join(
        json.dumps({"asin": f"P{i}", "title": f"Item {i}", "category": ["Office", None, " "]}) + "\n" for i in (5, 6)) \
        + json.dumps({"asin": "P7", "title": None}) + "\n"
    reviews = (CASES / "FC-03" / "reviews.json").read_text() + "".join(
        json.dumps({"reviewerID": f"A{u}", "asin": f"P{i}", "unixReviewTime": 1600000000 + 10 * i + u}) + "\n"
        for u in (1, 2, 3) for i in (5, 6, 7))
    (tmp_path / "meta.json").write_text(meta)
    (tmp_path / "reviews.json").write_text(reviews)
    out = tmp_path / "prepared"
    dataset = prepare_dataset(_amazon("amazon2018", tmp_path / "reviews.json", tmp_path / "meta.json",
                                      missing_text="drop"), out)
    counts = load_manifest(out)["counts"]
    assert counts["items_without_text_dropped"] == 4 and counts["items_without_text_interactions_dropped"] == 12
    assert counts["raw_interactions"] == 21 and counts["interactions"] == 9
    assert dataset["items"]["raw_item_id"] == ["P1", "P5", "P6"]
    assert dataset["items"]["text"][1] == "Item 5. Genres: Office"  # null and blank list entries dropped


@pytest.mark.parametrize("name", sorted(SOURCES))
@pytest.mark.parametrize("title", [b"", b"   ", b"<span> </span>", b"&nbsp;"])
def test_every_source_treats_blank_titles_as_missing(tmp_path, name, title):
    config, file, row, field = SOURCES[name](tmp_path, title)
    _fails_without_output(config, tmp_path, rf"{file}, row {row}, field '{field}': item .* has no usable title")


def test_clean_list_and_null_or_list_titles():
    assert clean_list(["Office", None, "", ["  ", "Desk &amp; Chair"], {"nested": 1}]) == ["Office", "Desk & Chair"]
    assert clean_text(None) == "" and clean_text(["", None]) == "" and clean_text(["A", None, "B"]) == "A, B"
    assert clean_text(42) == "42"


# --- FC-04: HTML in titles ------------------------------------------------------------------------------------

def test_html_is_unescaped_and_stripped_and_counted():
    dataset, manifest = build_dataset(_amazon("amazon2018", CASES / "FC-04" / "reviews.json",
                                              CASES / "FC-04" / "meta.json"))
    assert dataset["items"]["title"] == ['Salt & Pepper "Duo" Grinder', "Chef's Knife – 8 inch", "Cast Iron Pan",
                                         "Tea Towel Set of 3"]
    assert dataset["items"]["text"][0] == 'Salt & Pepper "Duo" Grinder. Genres: Kitchen & Dining. Brand: Smith & Co'
    assert manifest["counts"]["titles_cleaned"] == 4


def test_clean_text_rules():
    assert clean_text("Fish &amp;amp; Chips") == "Fish & Chips"  # double-escaped dumps
    assert clean_text("Line one<br/>line two<p>three</p>") == "Line one line two three"
    assert clean_text("Wal<b>nut</b> <!-- c --> box") == "Walnut box"
    assert clean_text("a < b > c") == "a < b > c"
    assert clean_text("Cafe\u0301\u00a0 Noir") == "Café Noir"


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_every_source_cleans_titles(tmp_path, name):
    config, *_ = SOURCES[name](tmp_path, b"Toy &amp; Story<br>&nbsp; 2")
    dataset, manifest = build_dataset(config)
    assert _title_of_item_1(dataset) == "Toy & Story 2" and manifest["counts"]["titles_cleaned"] == 1


# --- FC-08: time resolution and ordering ----------------------------------------------------------------------

def test_rows_out_of_order_and_a_tie_follow_the_documented_rule():
    dataset, _ = build_dataset(_generic(CASES / "FC-08" / "interactions.csv", CASES / "FC-08" / "items.csv"))
    raw = ["", *dataset["items"]["raw_item_id"]]
    assert [raw[i] for i in dataset["train"][0]["items"]] == ["a", "b", "c"]
    assert raw[dataset["valid"][0]["target"]] == "e" and raw[dataset["test"][0]["target"]] == "d"  # tie: file order


def test_milliseconds_stay_milliseconds():
    dataset, manifest = build_dataset(_amazon("amazon2023", CASES / "FC-08" / "Books_b.jsonl",
                                              CASES / "FC-08" / "meta_Books.jsonl"))
    raw = ["", *dataset["items"]["raw_item_id"]]
    assert raw[dataset["valid"][0]["target"]] == "P3" and raw[dataset["test"][0]["target"]] == "P4"
    assert dataset["train"][0]["timestamps"] == [1600000000000, 1600003600000] and manifest["timestamp_unit"] == "ms"


def test_duplicates_only_when_timestamps_are_identical(tmp_path):
    dataset, manifest = build_dataset(_amazon("amazon2023", CASES / "FC-08" / "Books_c.jsonl",
                                              CASES / "FC-08" / "meta_Books.jsonl"))
    raw = ["", *dataset["items"]["raw_item_id"]]
    assert [raw[i] for i in dataset["test"][0]["history"]] == ["P1", "P2", "P4"] and manifest["counts"]["duplicates_dropped"] == 0
    assert dataset["test"][0]["target_rating"] == 5.0  # the 900 ms review, after the 400 ms one
    same = tmp_path / "Books.jsonl"
    lines = (CASES / "FC-08" / "Books_c.jsonl").read_text().splitlines()
    same.write_text("\n".join([*lines, lines[2]]) + "\n")
    _fails_without_output(_amazon("amazon2023", same, CASES / "FC-08" / "meta_Books.jsonl"), tmp_path,
                          r"Books.jsonl, row 5: duplicate of row 3")


def test_fractional_and_nanosecond_timestamps_keep_their_resolution(tmp_path):
    (tmp_path / "inter.csv").write_text("user,item,timestamp\nu,a,10.75\nu,b,10.25\nu,c,10.5\nu,d,11\n")
    (tmp_path / "items.csv").write_text("item,title\na,A\nb,B\nc,C\nd,D\n")
    dataset, _ = build_dataset(_generic(tmp_path / "inter.csv", tmp_path / "items.csv"))
    assert dataset["train"][0]["timestamps"] == [10.25, 10.5] and dataset["valid"][0]["target"] == 1
    assert parse_timestamp("1600000000000000001", "f", 1, "t") == 1600000000000000001
    assert parse_timestamp(1600007200900, "f", 1, "t") == 1600007200900
    with pytest.raises(DataError, match="row 1, field 't': timestamp True is not numeric"):
        parse_timestamp(True, "f", 1, "t")


# --- minor: unknown items, short users, CLI ---------------------------------------------------------------------

def test_unknown_item_names_the_sources_field_and_the_option(tmp_path):
    meta = tmp_path / "meta.jsonl"
    meta.write_text("".join(line + "\n" for line in (CASES / "FC-08" / "meta_Books.jsonl").read_text().splitlines()
                            if '"P2"' not in line))
    config = _amazon("amazon2023", CASES / "FC-08" / "Books_b.jsonl", meta)
    _fails_without_output(config, tmp_path, r"Books_b.jsonl, row 2, field 'parent_asin': item id 'P2' is not in the "
                                            r"item file .*unknown_items=drop")
    config.unknown_items = "drop"
    _, manifest = build_dataset(config)
    assert manifest["counts"]["unknown_item_interactions_dropped"] == 1 and manifest["counts"]["interactions"] == 3


def test_short_users_and_k_core_are_counted(tmp_path):
    (tmp_path / "inter.csv").write_text("user,item,timestamp\n" + "".join(
        f"u{u},i{i},{i}\n" for u in range(3) for i in range(4)) + "short,i1,1\nshort,i2,2\n")
    (tmp_path / "items.csv").write_text("item,title\n" + "".join(f"i{i},Item {i}\n" for i in range(4)))
    _, manifest = build_dataset(_generic(tmp_path / "inter.csv", tmp_path / "items.csv"))
    counts = manifest["counts"]
    assert counts["short_users_dropped"] == 1 and counts["k_core_interactions_dropped"] == 2
    assert counts["users"] == 3 and counts["interactions"] == 12


def test_min_user_interactions_below_three_is_a_clear_error(capsys):
    from llmrec_ft.cli import main
    with pytest.raises(ValueError, match="min_user_interactions=2, but leave-one-out needs at least 3"):
        DataConfig(min_user_interactions=2)
    assert main(["data", "prepare", "--dataset", "ml-100k", "--min_user_interactions", "2"]) == 2
    assert "error: min_user_interactions=2" in capsys.readouterr().err
    assert main(["data", "prepare", "--dataset", "generic", "--missing_text", "skip"]) == 2
    assert "missing_text must be 'error' or 'drop'" in capsys.readouterr().err


def test_cli_prepare_without_out_prints_the_cache_folder(tmp_path, monkeypatch, capsys):
    from llmrec_ft.cli import main
    monkeypatch.setenv("LLMREC_FT_CACHE", str(tmp_path / "cache"))
    assert main(["data", "prepare", "--dataset", "ml-1m", "--data_path", str(FIXTURES / "ml-1m")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert Path(printed["output_dir"]).parent == tmp_path / "cache" / "datasets" and printed["users"] == 6


# --- FC-12: a default SFTConfig works in run_stage ------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from llmrec_ft.data import num_items
    from llmrec_ft.llm.prompts import load_prompt
    from llmrec_ft.train.pointwise_data import PointwiseConfig, build_pointwise_samples, encode_pointwise
    from llmrec_ft.train.tiny import save_tiny_backbone, tiny_collaborative_lm

    ds, _ = build_dataset(DataConfig(dataset="ml-100k-grouplens", data_path=str(FIXTURES / "ml-100k")))
    backbone = save_tiny_backbone(tmp_path_factory.mktemp("tiny") / "llama", "llama", hidden_size=32, num_layers=1)
    samples = build_pointwise_samples(ds, PointwiseConfig(max_history=3))["train"]

    def build():
        model, tokenizer = tiny_collaborative_lm(backbone, num_items(ds))
        return model, tokenizer, encode_pointwise(samples, tokenizer, load_prompt("yes_no"),
                                                  ["", *ds["items"]["title"]], True, max_history=3)
    return SimpleNamespace(build=build, backbone=backbone)


def test_run_stage_works_with_a_default_sft_config(tiny, tmp_path):
    from trl import SFTConfig

    from llmrec_ft.train.collator import PointwiseCollator
    from llmrec_ft.train.freezing import FreezeStage
    from llmrec_ft.train.schedules import final_model_dir, run_stage

    model, tokenizer, encoded = tiny.build()
    args = SFTConfig(output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=2, use_cpu=True,
                     report_to=[], disable_tqdm=True)
    assert args.remove_unused_columns and not (args.dataset_kwargs or {}).get("skip_prepare_dataset")
    before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_B" in n}
    run_stage("hybrid", model, tokenizer, encoded, [FreezeStage(0, ("lora", "projector"))], args, collaborative=True)
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters() if "lora_B" in n)
    assert (final_model_dir(tmp_path, "hybrid") / "adapter_model.safetensors").exists()
    # SFTConfig's default bf16=True: the live model must not keep Accelerate's autocast forward after training,
    # or it scores differently from the folder it saved.
    assert args.bf16
    from llmrec_ft.llm.backbone import load_backbone
    from llmrec_ft.llm.collaborative_lm import CollaborativeLM

    lm, _ = load_backbone(str(tiny.backbone))
    reloaded = CollaborativeLM.from_pretrained(final_model_dir(tmp_path, "hybrid"), lm, tokenizer, model.collab_model)
    batch = PointwiseCollator(tokenizer.pad_token_id)(encoded.select(range(4)).to_list())
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, reloaded(**batch).logits, atol=1e-6, rtol=0)


def test_a_second_stage_on_the_same_model_trains_under_autocast_too(tiny, tmp_path):
    """Dual-stage trains one model twice; Accelerate skipped preparing it the second time (it stayed marked as
    prepared), so the hybrid stage ran without the bf16 autocast the first stage had."""
    from trl import SFTConfig

    from llmrec_ft.llm.collaborative_lm import CollaborativeLM
    from llmrec_ft.train.freezing import FreezeStage
    from llmrec_ft.train.schedules import run_stage

    model, tokenizer, encoded = tiny.build()
    args = SFTConfig(output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=2, use_cpu=True, bf16=True,
                     report_to=[], disable_tqdm=True)
    autocast_on: list[bool] = []
    embed = CollaborativeLM.embed

    def recording_embed(self, *args, **kwargs):
        autocast_on.append(torch.is_autocast_enabled("cpu"))
        return embed(self, *args, **kwargs)

    CollaborativeLM.embed = recording_embed
    try:
        for stage in ("text_stage", "hybrid_stage"):
            run_stage(stage, model, tokenizer, encoded, [FreezeStage(0, ("lora", "projector"))], args,
                      collaborative=True)
    finally:
        CollaborativeLM.embed = embed
    assert autocast_on == [True, True]


# --- FC-16: incomplete checkpoints never load silently ----------------------------------------------------------

@pytest.fixture
def saved_model(tiny, tmp_path):
    model, tokenizer, _ = tiny.build()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_()
    model.save_pretrained(tmp_path / "run")
    return tmp_path / "run", model


def _reload(tiny, folder):
    from llmrec_ft.llm.backbone import load_backbone
    from llmrec_ft.llm.collaborative_lm import CollaborativeLM

    lm, tokenizer = load_backbone(str(tiny.backbone))
    return CollaborativeLM.from_pretrained(folder, lm, tokenizer, tiny.build()[0].collab_model)


@pytest.mark.parametrize("missing", [["adapter_model.safetensors"], ["adapter_config.json", "adapter_model.safetensors"],
                                     ["projector.safetensors"], ["collab_model/model.safetensors"]])
def test_from_pretrained_names_missing_files(tiny, saved_model, missing):
    folder, _ = saved_model
    for name in missing:
        (folder / name).unlink()
    with pytest.raises(FileNotFoundError, match=r"incomplete CollaborativeLM checkpoint, missing " + repr(missing)
                       .replace("[", r"\[").replace("]", r"\]")):
        _reload(tiny, folder)


def test_missing_lora_tensors_are_listed(tiny, saved_model):
    folder, _ = saved_model
    weights = load_file(folder / "adapter_model.safetensors")
    dropped = sorted(key for key in weights if "v_proj.lora_B" in key)
    save_file({k: v for k, v in weights.items() if k not in dropped}, str(folder / "adapter_model.safetensors"))
    with pytest.raises(ValueError, match=r"lacks 1 LoRA tensor.*v_proj\.lora_B"):
        _reload(tiny, folder)
    fresh, _, _ = tiny.build()
    with pytest.raises(ValueError, match=r"lacks 1 LoRA tensor.*v_proj\.lora_B"):
        fresh.load_pretrained_weights(folder)


def test_load_artifacts_fails_before_loading_anything(tiny, saved_model, tmp_path):
    from llmrec_ft import hub

    folder, model = saved_model
    _, tokenizer, _ = tiny.build()
    artifacts = hub.save_artifacts(tmp_path / "artifacts", folder, tokenizer,
                                   {"model_name_or_path": str(tiny.backbone)}, {})
    (artifacts / "adapter_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"missing \['adapter_model.safetensors'\]"):
        hub.load_artifacts(artifacts)
    (folder / "projector.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"missing \['projector.safetensors'\]"):
        hub.save_artifacts(tmp_path / "again", folder, tokenizer, {}, {})
    assert not (tmp_path / "again").exists()


# --- FC-17: scores never saturate ---------------------------------------------------------------------------------

class GapModel(nn.Module):
    """Returns logits whose Yes-No gap at the last prompt token is ``gaps[last token id]``."""

    def __init__(self, gaps: torch.Tensor, yes: int, no: int):
        super().__init__()
        self.gaps, self.yes, self.no = nn.Parameter(gaps, requires_grad=False), yes, no

    def forward(self, input_ids, attention_mask=None, position_ids=None, logits_to_keep=0):
        logits = torch.zeros(*input_ids.shape[:1], 1, 8)
        logits[:, -1, self.yes] = self.gaps[input_ids[:, -1]] + 3.0
        logits[:, -1, self.no] = 3.0
        return SimpleNamespace(logits=logits)


@pytest.mark.parametrize("low, high", [(-2.0, 2.0), (20.0, 60.0), (-60.0, -20.0), (200.0, 900.0)])
def test_auc_from_scores_equals_auc_of_the_raw_gaps(low, high):
    from llmrec_ft.train.scoring import auc_report, yes_logit_gaps

    generator = torch.Generator().manual_seed(0)
    gaps = low + (high - low) * torch.rand(40, generator=generator)
    labels = (gaps + (high - low) * 0.3 * torch.randn(40, generator=generator) > (low + high) / 2).long()
    encoded = datasets.Dataset.from_dict({"input_ids": [[7, i, 1] for i in range(40)], "label": labels.tolist()})
    scores = yes_logit_gaps(GapModel(gaps, yes=1, no=2), encoded, pad_token_id=0, yes_id=1, no_id=2,
                            collaborative=False, batch_size=16)
    expected = roc_auc(gaps, labels)
    assert 0.6 < expected < 1.0
    assert roc_auc(scores, labels) == expected
    assert auc_report({"all": scores}, {"all": encoded})["auc_all"] == expected
    if low >= 20:  # what the old float32 sigmoid score gave: every sample ties at 1.0
        assert roc_auc(torch.sigmoid(gaps), labels) == 0.5


# --- stale prepared folders and duplicate item ids ------------------------------------------------------------

def test_prepared_folder_is_reused_only_for_the_same_options_and_files(tmp_path, caplog):
    inter, items = tmp_path / "inter.csv", tmp_path / "items.csv"
    shutil.copy(CASES / "FC-02" / "interactions.csv", inter)
    shutil.copy(CASES / "FC-02" / "items.csv", items)
    config = _generic(inter, items)
    prepare_dataset(config, tmp_path / "out")
    assert prepare_dataset(config, tmp_path / "out")["items"]["title"]  # same options and files: reused
    with pytest.raises(DataError, match=r"manifest.json: this prepared dataset was built with other "
                                        r"min_user_interactions; pass overwrite=True"):
        prepare_dataset(DataConfig(**{**config.__dict__, "min_user_interactions": 4}), tmp_path / "out")
    inter.write_text(inter.read_text().rstrip("\n") + "\nu3,i1,1050,5\n")
    with pytest.raises(DataError, match="content of .*inter.csv"):
        prepare_dataset(config, tmp_path / "out")
    assert prepare_dataset(config, tmp_path / "out", overwrite=True)


def test_duplicate_item_ids_in_a_generic_item_table_name_both_rows(tmp_path):
    items = tmp_path / "items.csv"
    lines = (CASES / "FC-02" / "items.csv").read_text().splitlines()
    first_id = lines[1].split(",")[0]
    items.write_text("\n".join([*lines, f"{first_id},Another title"]) + "\n")
    with pytest.raises(DataError, match=rf"items.csv, row {len(lines) + 1}, field 'item': item id '{first_id}' is "
                                        r"already defined in row 2"):
        build_dataset(_generic(CASES / "FC-02" / "interactions.csv", items))
