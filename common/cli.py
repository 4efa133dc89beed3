"""What every command line of prep and bench shares: a parser whose every error is one line on stderr with exit
status 2, flag types that refuse a bad number as argparse reads it, and the checks of paths that run before any
work starts. (The trainer's own parser, trainer/args.py, follows the same rule.)"""
import argparse
import math
import os
from pathlib import Path

from common.errors import UsageError
from common.layout import MANIFEST, read_manifest

BYTE_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "KIB": 2**10, "MIB": 2**20,
              "GIB": 2**30, "TIB": 2**40}


class ShowsDefaults(argparse.HelpFormatter):
    """--help adds each flag's default to its help, unless the help says it already (or it has none to show)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if not action.option_strings or "default" in text or action.default in (None, False, argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)" if text else "default: %(default)s"


class Parser(argparse.ArgumentParser):
    """argparse, but an error is `<name>: <message>` alone, with no usage lines above it, and --help shows the
    defaults."""

    def __init__(self, name, raises=False, **kwargs):
        """`raises`: an error is a UsageError for the caller (a program building a command line), not an exit."""
        super().__init__(formatter_class=ShowsDefaults, **kwargs)
        self.name, self.raises = name, raises

    def error(self, message):
        if self.raises:
            raise UsageError(message)
        self.exit(2, f"{self.name}: {message}\n")

    def require(self, named, problem):
        """Stop with `<named> <problem>` if there is a problem: `named` such as "--out DIR", the problem a phrase
        such as "does not exist"."""
        if problem:
            self.error(f"{named} {problem}")

    def prep_output(self, flag, path):
        """The manifest of the prep output at `path`, given as `flag`; else stop saying why it is none."""
        try:
            return read_prep_output(path)
        except ValueError as problem:
            self.error(f"{flag} {path} {problem}")


def integer(least=None, most=None):
    """A flag type: an int in least..most (None leaves that end open)."""
    def parse(text):
        value = int(text)
        problem = out_of_range(value, least, most)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return value
    parse.__name__ = "int"  # argparse names the type in "invalid int value: 'x'"
    return parse


def out_of_range(value, least=None, most=None):
    """Why `value` is outside least..most, such as "must be at least 1, not 0"; None inside (None leaves that end
    open)."""
    if (least is None or value >= least) and (most is None or value <= most):
        return None
    bounds = f"at least {least}" if most is None else f"at most {most}" if least is None else f"in {least}..{most}"
    return f"must be {bounds}, not {value}"


def number(least=None, most=None, *, above=None, below=None):
    """A flag type: a finite float within the bounds given (least/most inclusive, above/below exclusive)."""
    def parse(text):
        value = float(text)
        if not math.isfinite(value) or any(bad for bad in (least is not None and value < least,
                                                           most is not None and value > most,
                                                           above is not None and value <= above,
                                                           below is not None and value >= below)):
            low = f"[{least:g}" if least is not None else f"({above:g}" if above is not None else "(-inf"
            high = f"{most:g}]" if most is not None else f"{below:g})" if below is not None else "inf)"
            raise argparse.ArgumentTypeError(f"must be a number in {low}, {high}, not {text}")
        return value
    parse.__name__ = "number"
    return parse


def count_or_all(text):
    """A flag type: a positive count, or -1 for all of them."""
    value = int(text)
    if value == 0 or value < -1:
        raise argparse.ArgumentTypeError(f"must be a positive count or -1 (all), not {value}")
    return value


count_or_all.__name__ = "int"


def positive_number(text):
    """A flag type: a finite float above 0."""
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a number above 0, not {text}")
    return value


positive_number.__name__ = "number"


def byte_size(text):
    """A flag type: a size such as 20GB, 512MiB or 1000000 (bytes)."""
    number = text.rstrip("BbIiKkMmGgTt")
    unit = BYTE_UNITS.get(text[len(number):].upper())
    try:
        value = float(number) * unit if unit else math.nan
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"expected a size such as 20GB, 512MiB or a number of bytes, got {text!r}")
    return int(value)


byte_size.__name__ = "size"


def output_problem(path):
    """Why `path` cannot be an output directory (made if missing, then written in); None if it can."""
    path = Path(path)
    if os.path.exists(path) and not os.path.isdir(path):
        return "exists and is not a directory"
    nearest = next(p for p in (path.absolute(), *path.absolute().parents) if os.path.exists(p))
    if not os.path.isdir(nearest):  # os.path.exists says False below a file, so this is the file
        return f"cannot be made: {nearest} is a file"
    if not os.access(nearest, os.W_OK | os.X_OK):  # root may write anywhere, so only a second line of defence
        return "is not writable" if nearest == path.absolute() else f"cannot be made: {nearest} is not writable"
    return None


def input_dir_problem(path):
    """Why `path` is not a directory to read; None if it is one."""
    if not os.path.exists(path):
        return "does not exist"
    return None if os.path.isdir(path) else "is not a directory"


def read_prep_output(path):
    """The manifest of the prep output at `path`; ValueError naming why `path` is not one (a phrase)."""
    problem = input_dir_problem(path)
    if problem:
        raise ValueError(problem)
    if not (Path(path) / MANIFEST).is_file():
        raise ValueError(f"holds no {MANIFEST}: not the --out of python -m prep.imagenet")
    try:
        found = read_manifest(path)
        for entry in found["splits"].values():
            int(entry["samples"])  # the part every reader of a manifest needs
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"holds a {MANIFEST} that cannot be read ({type(error).__name__}: {error})") from None
    return found


def prepped_images(found, split):
    """Images of `split` in a manifest from read_prep_output (0 when that split was not prepped)."""
    entry = found["splits"].get(split)
    return entry["samples"] if entry else 0
