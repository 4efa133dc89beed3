"""`python -m bench [prep|loaders|train] [options]`; no subcommand runs all three with defaults."""
import importlib
import sys

SUITES = ("loaders", "train", "prep")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in SUITES:
        return importlib.import_module(f"bench.{argv[0]}").main(argv[1:])
    if argv and not argv[0].startswith("-"):
        sys.exit(f"bench: unknown suite {argv[0]!r}; choose from {', '.join(SUITES)}")
    for suite in SUITES:
        print(f"== bench {suite}", flush=True)
        importlib.import_module(f"bench.{suite}").main(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
