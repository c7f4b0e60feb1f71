"""Finding the GGUF file behind a model's name: a path, the Ollama store, LM Studio's folder.

- A plain path (``./model.gguf``, ``~/models/x-00001-of-00003.gguf``).
- Ollama: ``$OLLAMA_MODELS`` or ``~/.ollama/models``. A name ``[host/][namespace/]model[:tag]``
  (defaults ``registry.ollama.ai``, ``library``, ``latest``) has a manifest at
  ``manifests/<host>/<namespace>/<model>/<tag>``; its layer of media type
  ``application/vnd.ollama.image.model`` names the blob ``blobs/sha256-<hex>``.
- LM Studio: ``~/.lmstudio/models`` (and the older ``~/.cache/lm-studio/models``), laid out as
  ``<publisher>/<repo>/<file>.gguf``; a name may be ``publisher/repo``, ``publisher/repo/file``,
  or a repo or file name alone.
- Any extra folders configured, searched for ``<name>.gguf``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import attrs

from memwarden.core.errors import ModelFileError
from memwarden.estimation.gguf import open_regular

OLLAMA_MODEL_MEDIA_TYPE = "application/vnd.ollama.image.model"
OLLAMA_DEFAULT_HOST = "registry.ollama.ai"
OLLAMA_DEFAULT_NAMESPACE = "library"
OLLAMA_DEFAULT_TAG = "latest"

_FIRST_SPLIT = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$")


@attrs.frozen
class ModelSearch:
    """Where to look. None means the runtime's default location."""

    ollama_models_dir: Path | None = None
    lmstudio_models_dirs: tuple[Path, ...] = ()
    models_dirs: tuple[Path, ...] = ()

    @classmethod
    def defaults(
        cls,
        ollama_models_dir: str | None = None,
        lmstudio_models_dir: str | None = None,
        models_dirs: Iterable[str] = (),
    ) -> ModelSearch:
        home = Path.home()
        ollama = ollama_models_dir or os.environ.get("OLLAMA_MODELS")
        lmstudio = (
            (Path(lmstudio_models_dir).expanduser(),)
            if lmstudio_models_dir
            else (home / ".lmstudio" / "models", home / ".cache" / "lm-studio" / "models")
        )
        return cls(
            ollama_models_dir=Path(ollama).expanduser() if ollama else home / ".ollama" / "models",
            lmstudio_models_dirs=lmstudio,
            models_dirs=tuple(Path(d).expanduser() for d in models_dirs),
        )


def looks_like_path(name: str) -> bool:
    """A name the user meant as a file path, so a missing file is an error, not a miss."""
    return name.endswith(".gguf") or name.startswith((".", "/", "~"))


def find_model_file(name: str, search: ModelSearch, provider: str | None = None) -> Path | None:
    """The GGUF file behind ``name``, or None when no store has it."""
    candidate = Path(name).expanduser()
    if candidate.is_file():
        return candidate
    if provider in (None, "ollama") and search.ollama_models_dir is not None:
        found = ollama_blob(name, search.ollama_models_dir)
        if found:
            return found
    if provider in (None, "lmstudio"):
        for root in search.lmstudio_models_dirs:
            found = lmstudio_file(name, root)
            if found:
                return found
    for root in search.models_dirs:
        found = _named_gguf(name, root)
        if found:
            return found
    return None


def parse_ollama_name(name: str) -> tuple[str, str, str, str]:
    """``[host/][namespace/]model[:tag]`` -> (host, namespace, model, tag)."""
    tag = OLLAMA_DEFAULT_TAG
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name, tag = name.rsplit(":", 1)
    parts = name.split("/")
    if len(parts) == 1:
        return OLLAMA_DEFAULT_HOST, OLLAMA_DEFAULT_NAMESPACE, parts[0], tag
    if len(parts) == 2:
        return OLLAMA_DEFAULT_HOST, parts[0], parts[1], tag
    return parts[0], "/".join(parts[1:-1]), parts[-1], tag


# An Ollama manifest is about a KiB; a bigger "manifest" is not one.
MAX_MANIFEST_BYTES = 1 << 20


def _read_small_file(path: Path, limit: int) -> bytes | None:
    """The bytes of ``path`` if it is a regular file of at most ``limit`` bytes, else None
    (never blocking on a FIFO, never reading a huge file)."""
    try:
        stream, size = open_regular(path)
    except ModelFileError:
        return None
    with stream:
        if size > limit:
            return None
        try:
            return stream.read(limit + 1)[:limit]
        except OSError:
            return None


# A provider's model info (Ollama's /api/show answer) is tens of KiB.
MAX_METADATA_FILE_BYTES = 16 << 20


def read_metadata_file(path: Path) -> bytes:
    """A provider's model info saved as a file (``estimate --metadata``): a regular file of at
    most 16 MiB, else a ModelFileError saying why (a FIFO would block, a huge file fill RAM)."""
    stream, size = open_regular(path, "model info file")
    with stream:
        if size > MAX_METADATA_FILE_BYTES:
            raise ModelFileError(
                f"{path}: {size / (1 << 20):,.1f} MiB is too large for a provider's model info "
                f"(at most {MAX_METADATA_FILE_BYTES >> 20} MiB)",
                hint="save only the provider's answer about this model (`/api/show`)",
            )
        return stream.read(MAX_METADATA_FILE_BYTES + 1)[:MAX_METADATA_FILE_BYTES]


def ollama_blob(name: str, models_dir: Path) -> Path | None:
    """The model blob an Ollama manifest names, or None."""
    host, namespace, model, tag = parse_ollama_name(name)
    manifest = models_dir / "manifests" / host / namespace / model / tag
    raw = _read_small_file(manifest, MAX_MANIFEST_BYTES)
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    layers = data.get("layers") if isinstance(data, dict) else None
    for layer in layers or ():
        if isinstance(layer, dict) and layer.get("mediaType") == OLLAMA_MODEL_MEDIA_TYPE:
            digest = str(layer.get("digest", ""))
            blob = models_dir / "blobs" / digest.replace(":", "-")
            return blob if blob.is_file() else None
    return None


def _gguf_files(folder: Path) -> list[Path]:
    """Model files of a folder, first split parts only, projector files (mmproj) left out."""
    try:
        files = sorted(p for p in folder.iterdir() if p.suffix == ".gguf" and p.is_file())
    except OSError:
        return []
    models = []
    for path in files:
        if "mmproj" in path.name.lower():
            continue
        split = _FIRST_SPLIT.search(path.name)
        if split and split.group(1) != "00001":
            continue
        models.append(path)
    return models


def _normal(name: str) -> str:
    name = name.lower().removesuffix(".gguf")
    return re.sub(r"[-_.]gguf$", "", name)


def lmstudio_file(name: str, root: Path) -> Path | None:
    """A model in LM Studio's ``<publisher>/<repo>/<file>.gguf`` layout, or None."""
    if not root.is_dir():
        return None
    parts = [p for p in name.split("/") if p]
    if len(parts) >= 3:
        folder = root / parts[0] / parts[1]
        wanted = _normal("/".join(parts[2:]))
        return next((p for p in _gguf_files(folder) if _normal(p.name) == wanted), None)
    if len(parts) == 2:
        files = _gguf_files(root / parts[0] / parts[1])
        return files[0] if len(files) == 1 else _best(files, parts[1])
    wanted = _normal(name)
    for publisher in _dirs(root):
        for repo in _dirs(publisher):
            files = _gguf_files(repo)
            if _normal(repo.name) == wanted and files:
                return files[0] if len(files) == 1 else _best(files, name)
            for path in files:
                if _normal(path.name) == wanted:
                    return path
    return None


def _best(files: Sequence[Path], name: str) -> Path | None:
    """Of several files in a repo, the one whose name contains the quantisation asked for,
    else the first."""
    lowered = name.lower()
    for path in files:
        if _normal(path.name) in lowered or lowered in _normal(path.name):
            return path
    return files[0] if files else None


def _dirs(folder: Path) -> Iterator[Path]:
    try:
        yield from sorted(p for p in folder.iterdir() if p.is_dir())
    except OSError:
        return


def _named_gguf(name: str, root: Path) -> Path | None:
    direct = root / name
    if direct.is_file():
        return direct
    wanted = _normal(Path(name).name)
    try:
        for path in sorted(root.rglob("*.gguf")):
            if _normal(path.name) == wanted:
                return path
    except OSError:
        return None
    return None
