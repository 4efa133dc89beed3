"""Option groups: frozen dataclasses whose fields carry their command-line flags, help and parse-time check (the
argparse `type`), and what a --resume does with them. A group is declared once, where its settings are used
(pipeline.options.DataOptions, trainer.options), and turned into an argparse group here; the field's name is the
flag's dest, its default the flag's default, so a program builds the same group without a command line.

    @dataclass(frozen=True, kw_only=True)
    class DataOptions:
        TITLE: ClassVar[str] = "data"
        workers: int | None = option("--workers", "-j", type=integer(1), help="loader workers per process")

A flag that sets no field of its own (--pretrained sets start_weights, --opt-level folds into --amp) is a
`Flag` in the group's EXTRA_FLAGS: it is shown in the group, and the code that reads it resolves it."""
import argparse
import dataclasses
from dataclasses import dataclass, field

from common.errors import UsageError

FLAGS, ARGPARSE, KEEP = "flags", "argparse", "keep"
# What a --resume does with a field (`keep=`); a field without one follows the command line:
MODEL = "model"        # what the weights are: every resume keeps it, an evaluation-only one too
SCHEDULE = "schedule"  # what fixes the schedule and the data order: a resumed training run ends where the first would


def option(*flags, default=None, keep=None, **argparse_kwargs):
    """A field set by `flags` (the first names it in messages), with argparse's keywords for them (type, choices,
    help, action, nargs, metavar, const); `keep`: MODEL or SCHEDULE when a --resume takes it from the checkpoint."""
    return field(default=default, metadata={FLAGS: flags, ARGPARSE: argparse_kwargs, KEEP: keep})


def setting(keep=None, default=None):
    """A field no flag sets as it is: resolved from other flags or from the machine (RunConfig's init_method, from
    --dist-url or --addr)."""
    return field(default=default, metadata={KEEP: keep})


@dataclass(frozen=True)
class Flag:
    """A flag of a group that sets no field of its own: its spellings and argparse's keywords."""
    flags: tuple
    kwargs: dict

    @classmethod
    def of(cls, *flags, **kwargs):
        return cls(flags, kwargs)


def flag_fields(group):
    """The fields of `group` (a class or an instance) that a flag sets, in declaration order."""
    return tuple(f for f in dataclasses.fields(group) if FLAGS in f.metadata)


def add_group(parser, group):
    """Add `group`'s flags to `parser` as one argparse group titled group.TITLE (its EXTRA_FLAGS after them)."""
    section = parser.add_argument_group(group.TITLE)
    for f in flag_fields(group):
        section.add_argument(*f.metadata[FLAGS], dest=f.name, default=f.default, **f.metadata[ARGPARSE])
    for extra in getattr(group, "EXTRA_FLAGS", ()):
        section.add_argument(*extra.flags, **extra.kwargs)
    return section


def flag(group, name):
    """The flag that sets field `name` of `group`, as messages name it (its first spelling)."""
    return next(f.metadata[FLAGS][0] for f in dataclasses.fields(group) if f.name == name)


def given(group, name, value):
    """A setting as a command line gives it: `--shuffle-window 3`."""
    return f"{flag(group, name)} {value}"


def kept(group, rules):
    """The fields of `group` a --resume takes from the checkpoint under `rules` (MODEL, SCHEDULE)."""
    return tuple(f.name for f in dataclasses.fields(group) if f.metadata.get(KEEP) in rules)


def values(group, source):
    """`source`'s values of `group`'s fields, by name (source: any object that has them, such as a RunConfig, which
    holds every group's)."""
    return {f.name: getattr(source, f.name) for f in dataclasses.fields(group)}


def subset(group, source, **changes):
    """An instance of `group` holding `source`'s values of its fields, with `changes` on top."""
    return group(**{**values(group, source), **changes})


def partition(group, settings):
    """(an instance of `group` from the `settings` that are its fields, the other settings): one flat dict of settings
    as a program gives them, sorted into the group and the rest."""
    names = {f.name for f in dataclasses.fields(group)}
    return (group(**{k: v for k, v in settings.items() if k in names}),
            {k: v for k, v in settings.items() if k not in names})


def check_values(options):
    """Each flag field of `options` (built by a program, not parsed) checked as its flag's type and choices check
    the text of a command line, so both ways in meet one rule; UsageError naming the flag."""
    for f in flag_fields(options):
        value, spec = getattr(options, f.name), f.metadata[ARGPARSE]
        if value is None or spec.get("action"):
            continue
        count = spec.get("nargs") if isinstance(spec.get("nargs"), int) else None  # "?" is one value or none
        if count is not None and not (isinstance(value, (tuple, list)) and len(value) == count):
            raise UsageError(f"{f.metadata[FLAGS][0]} takes {count} values, got {value!r}")
        for item in value if count is not None else (value,):
            try:
                if "type" in spec:
                    spec["type"](str(item))
            except (TypeError, ValueError, argparse.ArgumentTypeError) as error:
                raise UsageError(f"{f.metadata[FLAGS][0]} {value!r}: {error}") from None
            if "choices" in spec and item not in spec["choices"]:
                raise UsageError(f"{f.metadata[FLAGS][0]} must be one of {', '.join(map(str, spec['choices']))}, "
                                 f"got {item!r}")
