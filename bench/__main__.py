"""`python -m bench SUITE [options]` runs one suite; `python -m bench --help` lists them, each described by the first
paragraph of its module's docstring (the description its own --help shows). With no suite, the three benchmarks in
SUITES run one after another with the options they share."""
import shutil
import sys
import textwrap
from ast import get_docstring, parse
from importlib import import_module
from pathlib import Path

from common.errors import DataError

SUITES = ("loaders", "train", "prep")
COMMANDS = (*SUITES, "recipes", "doctor", "sweep", "agreement", "feed")
HELP = ("-h", "--help")


def main(argv=None):
    try:
        return _run(sys.argv[1:] if argv is None else argv)
    except DataError as error:  # the data measured is damaged or missing: one line, its exit status
        print(error, file=sys.stderr)
        raise SystemExit(error.exit_status) from None


def _run(argv):
    if argv and argv[0] in COMMANDS:
        return import_module(f"bench.{argv[0]}").main(argv[1:])
    if any(arg in HELP for arg in argv):
        print(usage())
        return 0
    if argv and not argv[0].startswith("-"):
        print(f"bench: unknown suite {argv[0]!r}; choose from {', '.join(COMMANDS)}", file=sys.stderr)
        raise SystemExit(2)
    return _run_suites(argv)


def _run_suites(argv):
    suites = {name: import_module(f"bench.{name}") for name in SUITES}
    for suite in suites.values():
        suite.parse_args(argv)  # every suite takes the options, so a bad one stops the run before the first suite
    for name, suite in suites.items():
        print(f"== bench {name}", flush=True)
        suite.main(argv)
    return 0


def usage():
    columns = min(shutil.get_terminal_size().columns, 120)
    indent = max(len(command) for command in COMMANDS) + 4
    lines = [f"usage: python -m bench [{'|'.join(COMMANDS)}] [options]", "", "suites:"]
    lines += [textwrap.fill(summary(command), columns, initial_indent=f"  {command:<{indent - 2}}",
                            subsequent_indent=" " * indent) for command in COMMANDS]
    note = (f"With no suite, {', '.join(SUITES[:-1])} and {SUITES[-1]} run one after another with the options they "
            "share. `python -m bench SUITE --help` shows a suite's options.")
    return "\n".join([*lines, "", textwrap.fill(note, columns)])


def summary(command):
    """The first paragraph of bench.<command>'s docstring without its `python -m bench <command>`: prefix, read from
    the source: listing the suites imports none of them (torch, DALI, moto)."""
    source = Path(__file__).with_name(f"{command}.py").read_text()
    first = get_docstring(parse(source)).split("\n\n")[0]
    return " ".join(first.removeprefix(f"`python -m bench {command}`:").split())


if __name__ == "__main__":
    sys.exit(main())
