"""The ``lit-compress`` command.

``fit`` / ``validate`` / ``test`` / ``predict`` go through Lightning's ``LightningCLI`` (any LightningModule and
LightningDataModule by ``class_path``, YAML recipes via ``--config``, ``--print_config``). The other verbs are
typed functions turned into commands by jsonargparse; the verb table below is explicit (nothing registers itself
at import time) and each verb is imported only when it runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from lit_compress.errors import UserInputError
from lit_compress.utils.parse_errors import one_line

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
        # Lightning seeds 0 anyway when no seed is given, after warning "No seed found"; say 0 and skip the warning
        seed_everything_default=0,
        # parse errors are raised, not printed with the usage, so main() can say them in one line
        parser_kwargs={"exit_on_error": False, **{v: {"exit_on_error": False} for v in TRAINER_VERBS}},
        args=list(args) if args is not None else None,
        run=run,
    )


def _usage() -> str:
    lines = ["usage: lit-compress <verb> [--config FILE] [options]", "", "verbs:"]
    lines += [f"  {v:<10} Lightning Trainer {v} (LightningCLI)" for v in TRAINER_VERBS]
    lines += [f"  {v:<10} {h}" for v, (_, _, h) in FUNCTION_VERBS.items()]
    lines += ["", "`lit-compress <verb> --help` lists the options of a verb."]
    return "\n".join(lines)


def function_verb(verb: str) -> Callable[..., Any]:
    """Import the function behind a non-Trainer verb."""
    module, name, _ = FUNCTION_VERBS[verb]
    return getattr(importlib.import_module(module), name)


#: Errors a function verb also reports as one line (config validation in ``__post_init__`` raises ValueError);
#: any verb reports a ``UserInputError`` so.
FUNCTION_VERB_ERRORS = (UserInputError, ValueError, FileNotFoundError, ImportError, KeyError)
TRAINER_ROOT_OPTIONS = ("config", "print_config", "seed_everything", "trainer", "model", "data", "optimizer",
                        "lr_scheduler", "ckpt_path")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lit-compress`` console script.

    Bad input (an unknown or mistyped option, an unreadable data file, a model that cannot be resolved) ends
    here as one ``lit-compress <verb>: error: ...`` line on stderr and exit code 2, without a traceback.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    trainer_args = None if argv is None else args
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0 if args else 2
    verb = args[0]
    if verb not in TRAINER_VERBS and verb not in FUNCTION_VERBS:
        print(f"lit-compress: unknown verb {verb!r}.\n\n{_usage()}", file=sys.stderr)
        raise SystemExit(2)
    try:
        if verb in TRAINER_VERBS:
            trainer_cli(trainer_args)
        elif verb == "pipeline":  # its sections take dotted options (deep-merged), see pipeline_cli
            from lit_compress.pipeline.run import pipeline_cli

            pipeline_cli(args[1:])
        else:
            from jsonargparse import auto_cli

            auto_cli(function_verb(verb), args=args[1:], as_positional=False, prog=f"lit-compress {verb}",
                     exit_on_error=False)
    except argparse.ArgumentError as err:
        _fail(verb, _parse_error_line(verb, err), err)
    except Exception as err:
        user_error = _user_error(err)
        if user_error is not None:
            _fail(verb, one_line(str(user_error)), err)
        if verb in TRAINER_VERBS or not isinstance(err, FUNCTION_VERB_ERRORS):
            raise
        _fail(verb, _error_line(err), err)
    return 0


def _user_error(err: BaseException) -> UserInputError | None:
    """The ``UserInputError`` behind ``err``: jsonargparse re-raises errors of the classes it instantiates as
    a ``ValueError`` whose cause is the original."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        if isinstance(current, UserInputError):
            return current
        seen.add(id(current))
        current = current.__cause__
    return None


def _error_line(err: BaseException) -> str:
    """One line for an error; a config class's ``__post_init__`` error arrives wrapped in a parse tree."""
    from lit_compress.utils.parse_errors import describe_parse_error

    text = str(err)
    return describe_parse_error(text) if "Does not validate" in text or 'Parser key "' in text else one_line(text)


def _parse_error_line(verb: str, err: argparse.ArgumentError) -> str:
    from lit_compress.utils.parse_errors import describe_parse_error, option_names

    hint = f"lit-compress {verb} --help lists the options"
    if verb in TRAINER_VERBS:
        import lightning as L

        extra = [*TRAINER_ROOT_OPTIONS, *option_names(L.Trainer, prefix="trainer.")]
        return describe_parse_error(str(err), extra=extra, help_hint=hint)
    return describe_parse_error(str(err), root=function_verb(verb), help_hint=hint)


def _fail(verb: str, line: str, err: BaseException) -> NoReturn:
    print(f"lit-compress {verb}: error: {line}", file=sys.stderr)
    raise SystemExit(2) from err


if __name__ == "__main__":  # pragma: no cover
    main()
