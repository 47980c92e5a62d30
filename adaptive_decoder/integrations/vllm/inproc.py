"""Start a vLLM engine inside this process, leaving this process's state as it found it.

On the CPU, vLLM's default engine is two spawned processes (the engine core, and its one worker that the CPU
platform always runs through the multiprocessing executor), and each imports torch, vLLM and this package again
before it loads a 270 MB model in under a second: on the 2-core bench machine the two spawns took 20 of the 23 s
an engine took to start, and waiting for them to exit 4 of the 6 s `close` took (bench/vllm_natural_copy.md, "Fixed
cost of a start"). vLLM's own in-process mode
(`VLLM_ENABLE_V1_MULTIPROCESSING=0`, the uni-process executor) runs the same worker class on the same weights,
kernels and KV-cache layout in the caller's process, with no process to spawn or to wait for at shutdown.

What that mode changes in the calling process, and what `in_process_engine` restores once the engine is built:
  * the global RNGs (torch, `random`, numpy): the worker seeds them with the engine seed; restored, so a caller's
    seeded draws do not depend on whether an engine was started between them;
  * `torch.set_num_threads`: the CPU worker replaces it process-wide by a no-op that warns; restored (the
    engine then computes with whatever thread count this process sets, as the HF model does);
  * vLLM's environment cache, which the engine core switches on: switched off again, so a later engine of this
    process reads `VLLM_ENABLE_V1_MULTIPROCESSING` (and the rest) afresh;
  * `VLLM_ENABLE_V1_MULTIPROCESSING` itself: set only while the engine is built.
Left as vLLM sets it: the NUMA memory binding of this process to the worker's node (one node on most machines).

Invariant: the worker, its model and its kernels are vLLM's, so an in-process engine computes the same logits
as a spawned one given the same thread count (tests/test_vllm_backend.py checks the tokens against HF's; the
bench compares the two modes' log-probabilities bit for bit on SmolLM2). Only one in-process engine may be alive
at a time (vLLM keeps one distributed state per process): `live` counts them, and callers start a second engine
in its own processes instead.
"""

from __future__ import annotations

import contextlib
import os
import random

import torch

_ENV = "VLLM_ENABLE_V1_MULTIPROCESSING"
live = 0  # in-process engines of this process that are not closed yet


@contextlib.contextmanager
def environ(name: str, value: str):
    """The environment variable `name` set to `value` inside the block, and as it was after it (vLLM reads its
    settings while an engine is built, so an engine's setting need not outlive the build)."""
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


@contextlib.contextmanager
def in_process_engine():
    """Build a `vllm.LLM` inside the block in this process (see the module docstring)."""
    import numpy as np
    import vllm.envs

    states = torch.get_rng_state(), random.getstate(), np.random.get_state()
    set_threads = torch.set_num_threads
    with environ(_ENV, "0"):
        try:
            yield
        finally:
            torch.set_rng_state(states[0])
            random.setstate(states[1])
            np.random.set_state(states[2])
            torch.set_num_threads = set_threads
            vllm.envs.disable_envs_cache()
