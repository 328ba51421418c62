"""`simsd generate` / `python -m jobs.generate`: parse -> validate -> run the Ray Data plan."""
from __future__ import annotations

import sys

PROG = "simsd generate"


def main(argv: list[str] | None = None) -> int:
    from pipeline import demo, driver, summary
    from pipeline.config import ConfigError, parse_args
    from pipeline.validate import validate

    try:
        config = parse_args(argv, prog=PROG)
        if config.input is None and config.target is None:
            config = demo.prepare(config)
        validate(config)
        stats = driver.run(config)
    except ConfigError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    print(summary.format_table(stats))
    print(f"output: {config.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
