"""A non-editable install works from any directory: the wheel carries the prompt templates (package data).

Builds the wheel from a clean copy of the sources (``pip wheel --no-deps --no-build-isolation``), installs it
with ``--no-deps`` into a fresh virtual environment that sees this interpreter's packages
(``--system-site-packages``: torch, transformers, ... are not reinstalled, nothing is downloaded), and renders
prompts there with the repository neither the working directory nor on ``sys.path``.
"""

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

from test_prompts import tiny_tokenizer

ROOT = Path(__file__).resolve().parents[1]

RENDER = """
import sys
from pathlib import Path
from transformers import AutoTokenizer
import llmrec_ft
from llmrec_ft.llm.prompts import load_prompt, packaged_prompt_names

print("module", llmrec_ft.__file__)
tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
print("names", packaged_prompt_names())
print(load_prompt("yes_no").render(tokenizer, ["Heat (1995)"], [True], "Fargo (1996)").text)
print(load_prompt("next_item").render(tokenizer, ["Heat (1995)"]).text)
Path("mine.jinja").write_text("{{ user_cf }} MY OWN {% for i in history %}{{ i.title }}{{ i.cf }}{% endfor %}")
print(load_prompt("mine.jinja").render(tokenizer, ["Heat (1995)"]).text)
"""


def run(command, cwd, env):
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result.stdout


def test_wheel_installed_outside_the_repository_renders_packaged_and_user_templates(tmp_path):
    source = tmp_path / "src"  # a clean copy, so the build leaves nothing (build/, egg-info) in the repository
    shutil.copytree(ROOT / "llmrec_ft", source / "llmrec_ft", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME")}
    env["PIP_NO_INDEX"] = "1"  # offline: everything needed is already installed
    wheels = tmp_path / "wheels"
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(source)],
        tmp_path, env)
    (wheel,) = wheels.glob("llmrec_ft-*.whl")

    venv.create(tmp_path / "venv", system_site_packages=True, with_pip=False)
    python = tmp_path / "venv" / "bin" / "python"
    run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--quiet", str(wheel)],
        tmp_path, env)
    tiny_tokenizer().save_pretrained(tmp_path / "tokenizer")
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    out = run([str(python), "-c", RENDER, str(tmp_path / "tokenizer")], workdir, env)

    assert f"module {tmp_path / 'venv'}" in out, out  # the wheel's copy, not the repository's
    names = next(line for line in out.splitlines() if line.startswith("names "))
    assert "'next_item'" in names and "'yes_no'" in names  # every *.jinja of the package folder
    assert 'Will the user like "Fargo (1996)"' in out and "<|user_cf|>" in out
    assert "Which title will the user watch next?" in out
    assert "MY OWN Heat (1995) <|item_cf|>" in out
