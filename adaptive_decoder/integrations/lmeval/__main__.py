"""`python -m adaptive_decoder.integrations.lmeval ARGS`: lm-eval's own command line (`run`, `ls`, `validate`, or
the bare flags) with the `adaptive-decoder` model registered, which the installed `lm_eval` command cannot do by
itself (see the package docstring)."""

import sys

from lm_eval.__main__ import cli_evaluate

from . import AdaptiveDecoderLM  # noqa: F401  (importing the package registers the model)


def main(argv=None) -> None:
    """lm-eval's command line on `argv` (default: this process's arguments), the model registered."""
    if argv is not None:
        sys.argv = ["lm_eval", *argv]
    cli_evaluate()


if __name__ == "__main__":
    main()
