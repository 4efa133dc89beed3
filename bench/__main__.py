"""`python -m bench [prep|loaders|train|recipes|doctor|sweep] [options]`; no subcommand runs the three benchmarks with
defaults. `recipes` (fixed resolution against progressive resizing and EMA, minutes of training) runs only when
named; `doctor` is the self-check of this machine's paths, not a benchmark; `sweep` tries the URL cache's promise
(refused at once, or run to the end) on random configurations."""
import importlib
import sys

from common.errors import DataError

SUITES = ("loaders", "train", "prep")
COMMANDS = (*SUITES, "recipes", "doctor", "sweep")


def main(argv=None):
    try:
        return _run(sys.argv[1:] if argv is None else argv)
    except DataError as error:  # the data measured is damaged or missing: one line, its exit status
        print(error, file=sys.stderr)
        raise SystemExit(error.exit_status) from None


def _run(argv):
    if argv and argv[0] in COMMANDS:
        return importlib.import_module(f"bench.{argv[0]}").main(argv[1:])
    if argv and not argv[0].startswith("-"):
        print(f"bench: unknown suite {argv[0]!r}; choose from {', '.join(COMMANDS)}", file=sys.stderr)
        raise SystemExit(2)
    suites = {name: importlib.import_module(f"bench.{name}") for name in SUITES}
    for suite in suites.values():
        suite.parse_args(argv)  # every suite takes the options, so a bad one stops the run before the first suite
    for name, suite in suites.items():
        print(f"== bench {name}", flush=True)
        suite.main(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
