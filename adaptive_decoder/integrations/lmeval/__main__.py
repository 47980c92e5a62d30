"""`python -m adaptive_decoder.integrations.lmeval ARGS`: lm-eval's own command line (`run`, `ls`, `validate`, or
the bare flags) with the `adaptive-decoder` model registered, which the installed `lm_eval` command cannot do by
itself (see the package docstring)."""

from lm_eval.__main__ import cli_evaluate

from . import AdaptiveDecoderLM  # noqa: F401  (importing the package registers the model)

if __name__ == "__main__":
    cli_evaluate()
