"""Start-up speed: `enclave` does at start-up only what the command that runs needs.

- A command group's module is imported only when that group runs. Importing every group
  (and through them the audit log, the simulator, numpy, SQLAlchemy...) cost about a second
  per call, `--help` included. Here the top-level group knows each group by name, module and
  one-line help; `enclave job list` imports `enclave.cli.jobs` alone, and `enclave --help`
  imports none (the help lines below are checked against the groups' own help by
  tests/cli/test_startup.py).
- Inside a group, typer builds a command (from its function's signature) when it is used
  (``command_of``), not every command of the group first.
- Typer's pydantic conversion of a parameter's value is built only for a value that needs it
  (``ConvertWhenNeeded``): `job list` and `job show` do not import pydantic.
- Start-up runs without the cyclic garbage collector; what it built is frozen for the rest
  of the process (``start_up_without_collection``).
"""

from __future__ import annotations

import copy
import gc
import importlib
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from difflib import get_close_matches
from functools import cached_property, wraps
from typing import Any

import typer
from typer.core import TyperGroup
from typer.models import DefaultPlaceholder

try:
    from typer._click.exceptions import UsageError
except ImportError:  # typer before it vendored click
    from click.exceptions import UsageError  # type: ignore[assignment]
try:  # typer >= 0.2x converts every parameter's value through a pydantic TypeAdapter
    from typer._coercion import RuntimeParam, TypeDescriptor, build_runtime_param
except ImportError:  # an older typer converts through click's own types: nothing to defer
    RuntimeParam = None  # type: ignore[assignment,misc]

# name -> (module, the group's help); the order is the order `enclave --help` lists them in.
GROUPS: dict[str, tuple[str, str]] = {
    "job": ("enclave.cli.jobs", "Batch jobs: submit, watch, logs, cancel."),
    "train": ("enclave.cli.train", "Training jobs: submit a script over datasets, follow its metrics."),
    "model": (
        "enclave.cli.models",
        "The model registry: models labelled from their lineage (datasets, base models, job).",
    ),
    "endpoint": (
        "enclave.cli.endpoints",
        "Endpoints: deploy a model as replicas, scale them, call them at <server>/v1 (OpenAI API).",
    ),
    "dataset": (
        "enclave.cli.datasets",
        "Datasets: versioned, labelled training data (an upload under an existing name is its next version).",
    ),
    "artifact": (
        "enclave.cli.artifacts",
        "Labelled artifacts (stored encrypted, read through the policy gate).",
    ),
    "transfer": (
        "enclave.cli.transfers",
        "Move an artifact to another label through the cross-domain guard.",
    ),
    "audit": ("enclave.cli.audit", "The signed, hash-chained audit log."),
    "sim": (
        "enclave.cli.sim",
        "Replay traces and synthetic workloads on a simulated fleet with the real scheduler.",
    ),
    "admin": ("enclave.cli.admin", "Administer agencies, projects, users and tokens."),
}


def load_group(name: str) -> Any:
    """The click command of group ``name``, importing its module now."""
    module = importlib.import_module(GROUPS[name][0])
    command = command_of(module.app)
    command.name = name
    return command


def command_of(app: typer.Typer) -> Any:
    """``typer.main.get_command(app)``, except that a group's commands are built (by typer,
    from their functions' signatures) when one is used rather than all at once: `enclave job
    show` builds `show` alone, not the other commands of `job` and of `enclave` (~1 ms each).
    An app typer would not make a group of, or one with its own group class, is built whole."""
    callback = app.registered_callback
    custom_cls = getattr(callback, "cls", None) if callback is not None else None
    cls = app.info.cls
    if isinstance(cls, DefaultPlaceholder):
        cls = cls.value
    is_group = bool(
        callback or app.info.callback or app.registered_groups or len(app.registered_commands) > 1
    )
    if (
        not is_group
        or not (cls is None or issubclass(cls, LazyCommands))
        or (custom_cls is not None and not isinstance(custom_cls, DefaultPlaceholder))
    ):
        return typer.main.get_command(app)
    shell = copy.copy(app)  # the group as typer builds it (its options, help, sub-groups), no commands
    shell.registered_commands = []
    shell.info = copy.copy(app.info)
    shell.info.cls = cls or LazyCommands
    group = typer.main.get_group(shell)
    assert isinstance(group, LazyCommands)
    if app._add_completion:  # as typer.main.get_command adds them to a group
        group.params.extend(typer.main.get_install_completion_arguments())
    group.to_build = {typer_command_name(info): info for info in app.registered_commands}
    group.build_options = {
        "pretty_exceptions_short": app.pretty_exceptions_short,
        "rich_markup_mode": app.rich_markup_mode,
    }
    return group


def typer_command_name(info: Any) -> str:
    """The name typer.main.get_command_from_info gives a registered command."""
    return str(info.name or typer.main.get_command_name(info.callback.__name__))


def prepare(command: Any) -> None:
    """Applied to a whole command tree before it parses or prints help:

    - typer's help shows `<bool>` after every flag (`--json <bool>`, even `--help <bool>`), as
      if it took a value; an empty metavar shows nothing;
    - each parameter converts its value through typer's own conversion only when the value
      needs one (see ``ConvertWhenNeeded``);
    - a command's own work starts with the cyclic garbage collector back on (see
      ``start_up_without_collection``)."""
    for param in [*command.params, command.get_help_option(typer.Context(command))]:
        if param is None:
            continue
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
        if RuntimeParam is not None and getattr(param, "_runtime_param", False) is None:
            descriptor = param.type_descriptor
            param._runtime_param = ConvertWhenNeeded(
                parameter_info=descriptor.parameter_info,
                annotation=descriptor.annotation,
                descriptor=descriptor,
            )
    callback = command.callback
    if not hasattr(command, "commands") and callback is not None and not hasattr(callback, "__after__"):
        command.callback = after_start_up(callback)
    for sub in getattr(command, "commands", {}).values():
        prepare(sub)


if RuntimeParam is not None:

    class ConvertWhenNeeded(RuntimeParam):
        """Typer (0.2x) converts every value a command receives through a pydantic TypeAdapter
        that it builds on first use: importing pydantic and building the adapters cost ~55 ms
        per call, even when no value needs converting (a default of the right type, a string
        option given a string, an absent option). Here typer's conversion is built only for a
        value whose conversion is not plain (see ``plain_value``); the others get at once the
        value typer's conversion gives them.

        Typer's own ``RuntimeParam.coerce`` still handles an absent value (None) and a string
        given to a multi-value parameter; ``_coerce_value`` sees every other value."""

        descriptor: TypeDescriptor

        def __init__(self, parameter_info: Any, annotation: Any, descriptor: TypeDescriptor) -> None:
            # RuntimeParam is a frozen dataclass: fields are set as its own __init__ does
            object.__setattr__(self, "parameter_info", parameter_info)
            object.__setattr__(self, "annotation", annotation)
            object.__setattr__(self, "descriptor", descriptor)

        @cached_property
        def typers(self) -> Any:
            """Typer's conversion of this parameter (pydantic imported, the adapter built)."""
            return build_runtime_param(self.descriptor)

        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            converted = plain_value(self.descriptor, value)
            if converted is NOT_PLAIN:
                return self.typers._coerce_value(value, param=param, ctx=ctx)
            return converted


NOT_PLAIN = object()
MAX_PLAIN_DIGITS = 18  # a plain integer: an int64 whatever its digits


def plain_value(descriptor: Any, value: Any) -> Any:
    """What typer's conversion makes of a (non-None) ``value`` where that is plain, else
    NOT_PLAIN: a ``str`` for a ``str`` parameter is itself; an ``int`` (not a bool) for an
    ``int`` parameter, or a string of ASCII digits without a leading zero, is that integer,
    and a ``float`` for a ``float`` parameter is itself, where within the parameter's min and
    max. Never for a parameter with its own ``parser`` or a file. Everything else (and an
    out-of-range number, for typer's own message) is left to typer. Checked value by value
    against typer's conversion by tests/cli/test_startup.py."""
    info = descriptor.parameter_info
    if info.parser is not None or descriptor.file_annotation is not None:
        return NOT_PLAIN
    annotation = descriptor.annotation
    if annotation is str:
        return value if type(value) is str else NOT_PLAIN
    if annotation is int and type(value) is str and _plain_digits(value):
        value = int(value)
    if annotation not in (int, float) or type(value) is not annotation:
        return NOT_PLAIN
    in_range = (info.min is None or value >= info.min) and (info.max is None or value <= info.max)
    return value if in_range else NOT_PLAIN


def _plain_digits(text: str) -> bool:
    return (
        text.isascii()
        and text.isdigit()
        and len(text) <= MAX_PLAIN_DIGITS
        and (text == "0" or not text.startswith("0"))
    )


class LazyCommands(TyperGroup):
    """A TyperGroup whose commands are built on first use (see ``command_of``); typer's
    own list order, help and "Did you mean" suggestions are kept."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self.to_build: dict[str, Any] = {}  # name -> typer's CommandInfo, in typer's order
        self.build_options: dict[str, Any] = {}

    def list_commands(self, ctx: Any) -> list[str]:
        return [*self.to_build, *(name for name in self.commands if name not in self.to_build)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name in self.to_build and cmd_name not in self.commands:
            built = typer.main.get_command_from_info(self.to_build[cmd_name], **self.build_options)
            self.commands[cmd_name] = built
        command = self.commands.get(cmd_name)
        if command is not None:
            prepare(command)
        return command

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        # typer suggests a command for a typo from those built so far; here from every one,
        # in typer's words, as it does when it has built them all
        suggest, self.suggest_commands = self.suggest_commands, False
        try:
            return super().resolve_command(ctx, args)
        except UsageError as exc:
            matches = get_close_matches(args[0], self.list_commands(ctx)) if suggest and args else []
            if matches:
                suggestions = ", ".join(f"{m!r}" for m in matches)
                exc.message = f"{exc.message.rstrip('.')}. Did you mean {suggestions}?"
            raise
        finally:
            self.suggest_commands = suggest

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        prepare(self)
        return list(super().parse_args(ctx, args))

    def format_help(self, ctx: Any, formatter: Any) -> None:
        prepare(self)
        super().format_help(ctx, formatter)


class LazyGroup(LazyCommands):
    """The `enclave` group: its command groups are imported on first use (see the module
    docstring), its commands built on first use."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self._listing = False  # formatting help: a group's name and help line are enough

    def list_commands(self, ctx: Any) -> list[str]:
        return [*GROUPS, *(name for name in super().list_commands(ctx) if name not in GROUPS)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name in GROUPS and cmd_name not in self.commands:
            if self._listing:
                return TyperGroup(name=cmd_name, help=GROUPS[cmd_name][1])
            self.commands[cmd_name] = load_group(cmd_name)
        return super().get_command(ctx, cmd_name)

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False


@contextmanager
def start_up_without_collection() -> Iterator[None]:
    """The `enclave` process's start-up (its entry point, never on import) without CPython's
    cyclic garbage collector: what start-up allocates, the modules, classes and functions of
    typer, rich, httpx and the command tree, lives as long as the process, and the collector
    traversed it over and over while it grew (and once more at exit): ~10-25 ms of a call. At
    the end of start-up (when a command's own function starts, see ``after_start_up``) the
    collector runs again, with what start-up built frozen (``gc.freeze``, made for long-lived
    start-up objects: they are out of its sight, never freed, as they would not be anyway).
    A call that ends before any command runs (`--help`, a usage error) ends here alike."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            started()


def started() -> None:
    """Start-up is over: its objects frozen, the collector on (if start-up turned it off)."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def after_start_up(callback: Callable[..., Any]) -> Callable[..., Any]:
    """``callback`` (a command's function) with the collector on while it runs."""

    @wraps(callback)
    def command(*args: Any, **kwargs: Any) -> Any:
        started()
        return callback(*args, **kwargs)

    command.__after__ = callback  # type: ignore[attr-defined]
    return command


# A command's own large import (the HTTP client, ~40 ms) is taken like start-up: without the
# collector, its modules frozen after (if the collector was on).
importing = start_up_without_collection


UNUSED_IN_CLI = ("trio", "httpx._main")


def skip_unused_imports() -> None:
    """For the `enclave` process only (its entry point, never on import), two optional imports
    of the HTTP client that it never uses: httpcore imports trio, when installed, only to tell
    whether it runs under trio (about 65 ms; Enclave's client is synchronous, its server runs
    on asyncio); httpx imports its own command line (`httpx._main`: click, pygments, about
    17 ms). A None entry in sys.modules makes each import fail at once, which both expect."""
    for name in UNUSED_IN_CLI:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]


def version_callback(value: bool) -> None:
    """``enclave --version``: the installed distribution's version."""
    if not value:
        return
    from importlib.metadata import PackageNotFoundError, version

    try:
        typer.echo(f"enclave {version('enclave')}")
    except PackageNotFoundError:
        typer.echo("enclave (not installed as a distribution)")
    raise typer.Exit()
