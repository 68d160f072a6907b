"""The ``lit-compress`` command.

``fit`` / ``validate`` / ``test`` / ``predict`` go through Lightning's ``LightningCLI`` (any LightningModule and
LightningDataModule by ``class_path``, YAML recipes via ``--config``, ``--print_config``). The other verbs are
typed functions turned into commands by jsonargparse; the verb table below is explicit (nothing registers itself
at import time) and each verb is imported only when it runs.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence
from typing import Any

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

TRAINER_VERBS = ("fit", "validate", "test", "predict")
#: verb -> (module, function, one-line help)
FUNCTION_VERBS: dict[str, tuple[str, str, str]] = {
    "pipeline": ("lit_compress.pipeline.run", "run_pipeline", "the main job: train, compress, export, benchmark"),
    "export": ("lit_compress.export.api", "export_model", "export a trained model to ONNX and int8 artifacts"),
    "benchmark": ("lit_compress.bench.api", "benchmark_cli", "benchmark saved models/artifacts side by side"),
    "tune": ("lit_compress.tune.search", "tune", "Optuna search over a recipe's hyper-parameters"),
}


class LitCompressCLI(LightningCLI):
    """LightningCLI that passes the datamodule's label names to the model (``model.init_args.labels``)."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.label_names", "model.init_args.labels", apply_on="instantiate")


def trainer_cli(args: Sequence[str] | None = None, run: bool = True) -> LitCompressCLI:
    """Build (and by default run) the Trainer-backed part of the CLI."""
    import lightning as L

    from lit_compress.loggers import LoggedConfig

    return LitCompressCLI(
        L.LightningModule,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_callback=LoggedConfig,
        save_config_kwargs={"overwrite": True},
        args=list(args) if args is not None else None,
        run=run,
    )


def _usage() -> str:
    lines = ["usage: lit-compress <verb> [--config FILE] [options]", "", "verbs:"]
    lines += [f"  {v:<10} Lightning Trainer {v} (LightningCLI)" for v in TRAINER_VERBS]
    lines += [f"  {v:<10} {h}" for v, (_, _, h) in FUNCTION_VERBS.items()]
    lines += ["", "`lit-compress <verb> --help` lists the options of a verb."]
    return "\n".join(lines)


def _root_message(err: BaseException) -> str:
    """The most specific message of an error: jsonargparse wraps config errors in Union/validation noise."""
    text = str(err)
    for line in text.splitlines():
        line = line.strip().lstrip("- ").strip()
        if line and not line.startswith(("Expected a", "Does not validate", "Subtypes", "Errors", "Given value")):
            return line if line != text.strip() else text.strip()
    return text.strip()


def function_verb(verb: str) -> Callable[..., Any]:
    """Import the function behind a non-Trainer verb."""
    module, name, _ = FUNCTION_VERBS[verb]
    return getattr(importlib.import_module(module), name)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lit-compress`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    trainer_args = None if argv is None else args
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0 if args else 2
    verb = args[0]
    if verb in TRAINER_VERBS:
        trainer_cli(trainer_args)
        return 0
    if verb in FUNCTION_VERBS:
        from jsonargparse import auto_cli

        try:
            auto_cli(function_verb(verb), args=args[1:], as_positional=False)
        except (ValueError, FileNotFoundError, ImportError, KeyError) as err:
            print(f"lit-compress {verb}: error: {_root_message(err)}", file=sys.stderr)
            raise SystemExit(2) from err
        return 0
    print(f"lit-compress: unknown verb {verb!r}.\n\n{_usage()}", file=sys.stderr)
    raise SystemExit(2)


if __name__ == "__main__":  # pragma: no cover
    main()
