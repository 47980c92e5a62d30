"""Every command docs/guide.md, docs/serving.md, docs/cluster.md and docs/lmeval.md show (README.md's commands:
tests/test_readme.py) is run by a test or by CI, or cannot run on a CPU machine without network and its page says
so; and what of a command can be checked here without running it is checked: the repository files it names
exist, a recipe's config and every flag parse as written, launcher and lm-eval flags are theirs, `make` targets
exist. The Python and YAML snippets are run or validated the same way.

RUN_BY maps each command (by prefix) to where it runs: "tests/FILE::TEST" (that test runs it, on the tiny model or
a local task where the page names a real model or a Hub dataset), "Makefile::TARGET" or ".ci/run::LINE" (CI runs
it), or None; `says` is the page's own words for why the command as written cannot run here (a GPU, the Hub, a
wandb server) or is a hand-run benchmark, and must be on the page. A command added to a page without an entry
fails here.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import re
import shlex
import sys
from pathlib import Path
from typing import NamedTuple

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCS = ("docs/guide.md", "docs/serving.md", "docs/cluster.md", "docs/lmeval.md")


class Run(NamedTuple):
    by: str | None          # "tests/FILE::TEST", "Makefile::TARGET", ".ci/run::LINE", or None: no test runs it
    says: str | None = None  # the page's words saying why it cannot run here as written (GPU, Hub, server)


CUSTOM = "tests/test_custom_task_example.py::test_headroom_then_experiment_on_a_tiny_model"
SERVE = "tests/test_vllm_serve.py::test_completions_with_several_samples"
LOCAL_COMPLETIONS = "tests/test_vllm_serve.py::test_lm_eval_local_completions_recipe"
EXPORT = "tests/test_docs_commands.py::test_export_of_an_embedded_base_by_name"
SLURM_PIPELINE = "tests/test_slurm.py::test_collect_train_eval_pipeline"
CLI_TINY = "tests/test_cli.py::test_collect_then_train_subcommands_on_the_tiny_model"
SUITE_TINY = "tests/test_harness.py::test_end_to_end_every_method"
GUIDE_SNIPPETS = "tests/test_custom_task_example.py::test_the_guides_snippets_are_the_example_files_and_valid_options"
REUSE = "tests/test_experiment.py::test_reuse_from_gives_the_results_of_a_run_from_scratch"
GPU = "except the GPU ones"  # cluster.md's opening: every step was run on the CI machine except these
RUN_BY = {
    "docs/guide.md": {
        "PYTHONPATH=examples/custom_task adaptive-decoder headroom": Run(CUSTOM),
        "PYTHONPATH=examples/custom_task adaptive-decoder experiment": Run(CUSTOM),
        # section 7's ablation: the same pipeline and reuse path on the tiny model, then the comparison's command
        "adaptive-decoder experiment --config configs/experiments/control.yaml": Run(REUSE),
        "adaptive-decoder experiment --config configs/experiments/control_expected_reward.yaml": Run(REUSE),
        "adaptive-decoder compare": Run("tests/test_compare.py::test_command_prints_the_table_and_writes_the_json"),
    },
    "docs/serving.md": {
        "adaptive-decoder export --base smollm2": Run(EXPORT),
        "adaptive-decoder serve": Run(SERVE),
        "curl -s localhost:8000/v1/completions": Run(SERVE),
        "export VLLM_CPU_KVCACHE_SPACE=": Run("Makefile::VLLM_ENV"),
        ".venv-vllm/bin/python eval/run_suite.py": Run("tests/test_vllm_backend.py::test_eval_suite_backend_vllm"),
        ".venv-vllm/bin/python training/collect.py": Run("tests/test_vllm_backend.py::test_collection_backend_vllm"),
        "make bench-vllm-suite": Run(None, "wall time of each"),
        "make bench-vllm-natural-copy": Run(None, "side by side (bench/vllm_natural_copy.md)"),
    },
    "docs/cluster.md": {
        "make setup-dev": Run(".ci/run::make test"),
        ". .venv/bin/activate": Run("Makefile::$(VENV)/.installed"),
        "python training/train_lpo.py --config configs/lpo/train_tiny.yaml":
            Run("tests/test_slurm.py::test_outside_slurm_single_node_fallback_and_errors"),
        "python eval/run_suite.py --config configs/eval/quick.yaml": Run(SUITE_TINY),
        "accelerate launch --config_file configs/accelerate/cpu_ddp.yaml":
            Run("tests/test_multiprocess.py::test_two_process_training_matches_one_process_with_the_same_global_batch"),
        "python training/collect.py --config configs/models/": Run(CLI_TINY, GPU),
        "python training/train_lpo.py --config configs/models/": Run(CLI_TINY, GPU),
        "python eval/run_suite.py --config configs/models/": Run(SUITE_TINY, GPU),
        "accelerate launch --config_file configs/accelerate/multi_gpu.yaml":
            Run("tests/test_multiprocess.py::test_two_process_training_matches_one_process_with_the_same_global_batch", GPU),
        "torchrun --nproc_per_node 8":
            Run("tests/test_multiprocess.py::test_torchrun_deepspeed_stop_and_resume_equals_the_uninterrupted_run", GPU),
        "read CJ CDIR": Run(SLURM_PIPELINE, GPU),
        "read LJ LDIR": Run(SLURM_PIPELINE, GPU),
        "slurm/submit.sh slurm/eval_suite.sbatch -p gpu": Run(SLURM_PIPELINE, GPU),
        "read AJ ADIR": Run("tests/test_slurm.py::test_collect_array_shards_then_merge", GPU),
        "read MJ MDIR": Run("tests/test_slurm.py::test_collect_array_shards_then_merge", GPU),
        "slurm/submit.sh slurm/train_lpo.sbatch -p gpu": Run(SLURM_PIPELINE, GPU),  # LPO on a collection, after it
        "RUN_DIR=runs/slurm/lpo-1234": Run("tests/test_slurm.py::test_scancel_then_resubmit_same_run_dir_resumes"),
        "LAUNCHER=python bash slurm/train_lpo.sbatch":
            Run("tests/test_slurm.py::test_outside_slurm_single_node_fallback_and_errors"),
        "wandb sweep": Run(None, "online (wandb server reachable from the compute nodes)"),
        "SWEEP_COUNT=5 slurm/submit.sh slurm/sweep_agent.sbatch": Run(None, "online (wandb server reachable"),
        "python eval/sweep_report.py --wandb_sweep": Run("tests/test_sweep_report.py::test_wandb_api_runs_and_errors",
                                                         "online (wandb server reachable"),
        "python slurm/sweep_grid.py configs/sweeps/lpo_tiny_grid.yaml --list":
            Run("tests/test_docs_commands.py::test_sweep_grid_lists_the_points_the_agent_runs"),
        "read J D": Run("tests/test_slurm.py::test_offline_sweep_agent_array"),
        "python eval/sweep_report.py $D/out": Run("tests/test_sweep_report.py::test_local_2x2_sweep_report"),
        "for i in 0 1 2 3; do python slurm/sweep_grid.py": Run("tests/test_sweep_report.py::sweep_dir"),
        "python eval/sweep_report.py runs/sweeps/lpo_tiny_grid": Run("tests/test_sweep_report.py::test_local_2x2_sweep_report"),
        "slurm/local_cluster.sh start": Run("tests/test_slurm.py::cluster"),
        'eval "$(slurm/local_cluster.sh env': Run("tests/test_slurm.py::cluster"),
        "NPROC_PER_NODE=2 ACCELERATE_CONFIG=configs/accelerate/cpu_ddp.yaml": Run(SLURM_PIPELINE),
        "squeue; slurm/local_cluster.sh stop": Run("tests/test_slurm.py::cluster"),
    },
    "docs/lmeval.md": {
        "python -m adaptive_decoder.integrations.lmeval run --model adaptive-decoder":
            Run("tests/test_lmeval.py::test_command_line_registers_the_model_and_logs_choices", "from the Hub"),
        "python -m adaptive_decoder.integrations.lmeval run --model hf":
            Run("tests/test_lmeval.py::test_chat_template_never_applied_twice", "from the Hub"),
        "adaptive-decoder export --base smollm2": Run(EXPORT),
        "adaptive-decoder serve served": Run(LOCAL_COMPLETIONS),
        "lm_eval run --model local-completions": Run(LOCAL_COMPLETIONS, "from the Hub"),
    },
}
# the other code blocks, by their first line that is not a comment
SNIPPETS = {
    "README.md": {
        "from adaptive_decoder import AdaptiveDecoderConfig": Run("tests/test_docs_commands.py::test_readme_python_example_runs"),
    },
    "docs/guide.md": {
        "task: letter_words": Run(GUIDE_SNIPPETS),
        "dataset:": Run(GUIDE_SNIPPETS),
        "tasks:": Run("tests/test_docs_commands.py::test_the_guides_local_copy_override_reads_the_given_file"),
        "def letter_answer(": Run("tests/test_docs_commands.py::test_the_guides_reward_sketch_has_the_examples_signatures"),
        '[project.entry-points."adaptive_decoder.rewards"]':
            Run("tests/test_reward_plugins.py::test_entry_point_rewards_load_by_name"),
        "reward: {letter_answer: {weight: 1.0}}":
            Run("tests/test_reward_plugins.py::test_task_file_rewards_by_import_path_and_entry_point"),
        "reward:": Run(GUIDE_SNIPPETS, "Give `device:` (or `device_map:`) and `dtype:` on a GPU"),
        "model: Qwen/Qwen2.5-7B-Instruct": Run(GUIDE_SNIPPETS, "bitsandbytes on CUDA"),
        "model: smollm2": Run(CUSTOM),
        "push_to_hub: true": Run("tests/test_model_card.py::test_push_to_hub_uploads_the_head_and_its_card_in_one_commit"),
    },
    "docs/lmeval.md": {
        "import lm_eval": Run("tests/test_lmeval.py::test_greedy_bin_head_equals_hf_greedy", "from the Hub"),
    },
}


# ---------------------------------------------------------------------------------------------------- reading
def doc_commands(doc: str) -> list[str]:
    """The commands of a page's bash blocks: continuation lines joined, a quote left open goes on to the next
    line, trailing `  # comments` and comment lines dropped, whitespace collapsed."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", (REPO / doc).read_text(), flags=re.S):
        pending = ""
        for line in block.replace("\\\n", " ").splitlines():
            line = f"{pending} {line.strip()}".strip()
            try:
                shlex.split(line, comments=True)
            except ValueError:  # an open quote (curl's JSON body over two lines)
                pending = line
                continue
            pending = ""
            cmd = line.split("  #")[0].strip()
            if cmd and not cmd.startswith("#"):
                out.append(" ".join(cmd.split()))
    return out


def doc_snippets(doc: str) -> list[tuple[str, str]]:
    """(language, text) of a page's python / yaml / toml blocks."""
    return re.findall(r"```(python|yaml|toml)\n(.*?)```", (REPO / doc).read_text(), flags=re.S)


def first_line(text: str) -> str:
    return next(ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#"))


def owner(table: dict, line: str) -> Run | None:
    """The entry of the longest prefix of `line` (the most specific one)."""
    keys = sorted((k for k in table if line.startswith(k)), key=len, reverse=True)
    return table[keys[0]] if keys else None


def check_owner(run: Run, doc: str, what: str):
    if run.by is not None:
        where, name = run.by.split("::")
        text = (REPO / where).read_text()
        if where.startswith("tests/"):
            assert re.search(rf"^def {re.escape(name)}\(", text, re.M), f"{doc}: {what!r} -> {run.by}: no such test"
        else:
            assert name in text, f"{doc}: {what!r} -> {run.by}: not in {where}"
    if run.says is not None:
        assert run.says in (REPO / doc).read_text(), f"{doc} should say why {what!r} cannot run here ({run.says!r})"
    assert run.by or run.says, f"{doc}: {what!r} is neither run nor said to be unrunnable"


def test_every_command_is_run_by_a_test_or_ci_or_the_page_says_why_not():
    for doc in DOCS:
        cmds = doc_commands(doc)
        assert cmds, doc
        for cmd in cmds:
            run = owner(RUN_BY[doc], cmd)
            assert run, f"{doc}: command without an entry in RUN_BY (a test that runs it, or why not): {cmd!r}"
            check_owner(run, doc, cmd)
        unused = [k for k in RUN_BY[doc] if not any(c.startswith(k) for c in cmds)]
        assert not unused, f"{doc}: RUN_BY entries for commands the page no longer shows: {unused}"


def test_every_snippet_is_run_or_validated():
    for doc in ("README.md", *DOCS):
        for lang, text in doc_snippets(doc):
            head = first_line(text)
            run = owner(SNIPPETS.get(doc, {}), head)
            assert run, f"{doc}: {lang} block without an entry in SNIPPETS: {head!r}"
            check_owner(run, doc, head)


# ---------------------------------------------------------------------------------------------------- files
def _words(cmd: str) -> list[str]:
    """The words of a command, with the shell's grouping ($(...), <(...), ;, double quotes) taken apart."""
    return shlex.split(re.sub(r'\$\(|<\(|\)|;|"', " ", cmd))


def test_the_files_a_command_names_exist():
    names = []
    for doc in ("README.md", *DOCS):
        for cmd in doc_commands(doc):
            names += [(doc, w.split("=", 1)[-1]) for w in _words(_unwrap(cmd))]
    repo_paths = [(d, w) for d, w in names if re.match(r"(configs|slurm|training|eval|examples|experiments|bench)/", w)
                  and "$" not in w]
    assert len(repo_paths) > 30
    missing = [(d, w) for d, w in repo_paths if not (REPO / w).exists()]
    assert not missing, f"commands name files that do not exist: {missing}"


def test_make_targets_in_the_pages_exist():
    makefile = (REPO / "Makefile").read_text()
    targets = set(re.findall(r"^([\w.-]+):", makefile, re.M))
    named = set()
    for doc in ("README.md", *DOCS):
        text = (REPO / doc).read_text()
        named |= set(re.findall(r"(?:^|`)make ([\w-]+)", text, re.M))
    assert {"demo", "test", "setup-vllm", "test-vllm", "bench-vllm-suite"} <= named
    assert named <= targets, f"make targets the pages name but the Makefile lacks: {sorted(named - targets)}"


def test_the_slurm_knobs_table_names_variables_the_scripts_read():
    text = (REPO / "docs/cluster.md").read_text()
    knobs = re.findall(r"^\| `([A-Z_]+)` \|", text, re.M)
    assert len(knobs) >= 8
    scripts = "".join(p.read_text() for p in (REPO / "slurm").iterdir() if p.suffix in (".sh", ".sbatch"))
    unread = [k for k in knobs if not re.search(rf"\${{?{k}\b", scripts)]
    assert not unread, f"docs/cluster.md lists variables no slurm script reads: {unread}"


# ---------------------------------------------------------------------------------------------------- parsing
class _Parsed(Exception):
    """Raised right after a script's argument parsing, so that nothing after it runs."""


@pytest.fixture
def restore_environ():
    """Parsing a config sets the environment variables of its `env:` key; they must not reach the next test."""
    before = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(before)


def _load_script(rel: str):
    import importlib.util

    name = "docs_script_" + re.sub(r"\W", "_", rel)
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / rel)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


# flags whose value is acted on while the config is built, which only works in a launched process (`--deepspeed`
# builds DeepSpeed's config, which needs torch.distributed initialised): checked to be the recipe's, then left out
LAUNCHED_ONLY = ("--deepspeed",)


def parse_recipe_only(script: str, argv: list[str], monkeypatch):
    """`main(argv)` of a recipe script (training/*.py, eval/run_suite.py, ...) stopped once its config and flags
    are parsed: an unknown key or flag raises ConfigError as the script would report it."""
    from adaptive_decoder.configs import recipe_parser

    main = _load_script(script).main
    home = sys.modules[main.__module__]
    real = home.parse_recipe_config

    def parse(types, args, *a, **kw):
        args = list(args)
        flags = {s for action in recipe_parser(types)._actions for s in action.option_strings}
        for flag in LAUNCHED_ONLY:
            if flag in args:
                assert flag in flags, f"{script} has no flag {flag}"
                del args[args.index(flag):args.index(flag) + 2]
        raise _Parsed(real(types, args, *a, **kw))

    monkeypatch.setattr(home, "parse_recipe_config", parse)
    with pytest.raises(_Parsed) as e:
        main(argv)
    return e.value.args[0]


def parse_argparse_only(main, argv, monkeypatch):
    """`main(argv)` of an argparse script stopped once its parser has read argv (an unknown flag: SystemExit 2)."""
    real_args, real_known = argparse.ArgumentParser.parse_args, argparse.ArgumentParser.parse_known_args
    inside = []

    def stop(real):
        def parse(self, args=None, namespace=None):
            if inside:  # parse_args calls parse_known_args, and a subcommand's parser is called inside
                return real(self, args, namespace)
            inside.append(1)
            try:
                result = real(self, args, namespace)
            finally:
                inside.pop()
            raise _Parsed(result)
        return parse

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", stop(real_args))
    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", stop(real_known))
    with pytest.raises(_Parsed) as e:
        main(argv)
    return e.value.args[0]


RECIPES = ("training/collect.py", "training/train_lpo.py", "training/train_hag.py", "training/build_hag_data.py",
           "eval/run_suite.py", "eval/headroom.py", "experiments/run.py")
SBATCH_RECIPE = {"collect.sbatch": "training/collect.py", "collect_array.sbatch": "training/collect.py",
                 "train_lpo.sbatch": "training/train_lpo.py", "eval_suite.sbatch": "eval/run_suite.py"}
# `--config ...` on a page: "your config"; parsed here with one of that recipe's
PLACEHOLDER = {"training/train_lpo.py": "configs/lpo/train_tiny.yaml", "training/train_hag.py": "configs/hag/sft_tiny.yaml"}


def _unwrap(cmd: str) -> str:
    """The command inside `read A B < <(...)` and after leading VAR=value assignments."""
    m = re.fullmatch(r"read \w+ \w+ < <\((.*)\)", cmd)
    cmd = m.group(1) if m else cmd
    return re.sub(r"^(?:[A-Z_]+=\S+ )+", "", cmd)


def recipe_invocations(tmp: Path) -> list[tuple[str, str, list[str]]]:
    """(the page's command, recipe script, its arguments) for every command that runs a recipe: directly, under a
    launcher, or after `--` of slurm/submit.sh (or the sbatch script run by bash); $VARIABLES become a temporary
    directory, `--config ...` one of that recipe's configs."""
    out = []
    for doc in ("README.md", *DOCS):
        for cmd in doc_commands(doc):
            words = [re.sub(r"\$\w+", str(tmp), w) for w in _words(_unwrap(cmd))]
            script, args = None, []
            for i, w in enumerate(words):
                if w in RECIPES:
                    script, args = w, words[i + 1:]
                    break
                if Path(w).name in SBATCH_RECIPE and w.startswith("slurm/"):
                    script = SBATCH_RECIPE[Path(w).name]
                    args = words[words.index("--") + 1:] if "--" in words else words[i + 1:]
                    break
            if script is None:
                continue
            if "--config" in args and args[args.index("--config") + 1] == "...":
                args[args.index("--config") + 1] = PLACEHOLDER[script]
            out.append((cmd, script, args))
    return out


def test_recipe_commands_parse_as_written(tmp_path, monkeypatch, restore_environ, vllm_importable):
    """Each recipe command's config and flags parse exactly as the page writes them (`--backend vllm` with a
    stand-in vllm module: the config only checks that it imports); parsing writes nothing."""
    monkeypatch.chdir(REPO)
    seen = set()
    for cmd, script, args in recipe_invocations(tmp_path):
        seen.add(script)
        parsed = parse_recipe_only(script, args, monkeypatch)
        assert parsed, cmd
        if "--backend" in args:
            assert parsed[0].backend == args[args.index("--backend") + 1], cmd
        if "--head_paths" in args:
            assert parsed[0].head_paths == [args[args.index("--head_paths") + 1]], cmd
    assert {"training/collect.py", "training/train_lpo.py", "eval/run_suite.py"} <= seen


def test_a_misspelt_flag_in_a_recipe_command_would_fail_here(tmp_path, monkeypatch, restore_environ):
    from adaptive_decoder.configs import ConfigError

    monkeypatch.chdir(REPO)
    with pytest.raises(ConfigError, match="--collection_dirs"):
        parse_recipe_only("training/train_lpo.py", ["--config", "configs/lpo/train_tiny.yaml", "--collection_dirs",
                                                    str(tmp_path)], monkeypatch)


def test_inline_hag_command_parses(tmp_path, monkeypatch, restore_environ):
    """cluster.md's full fine-tuning command for HAG (in the text, not a block): its recipe flags."""
    text = " ".join((REPO / "docs/cluster.md").read_text().split())
    (cmd,) = re.findall(r"`(accelerate launch [^`]*train_hag\.py[^`]*)`", text)
    words = shlex.split(cmd)
    args = words[words.index("training/train_hag.py") + 1:]
    args[args.index("--config") + 1] = PLACEHOLDER["training/train_hag.py"]
    monkeypatch.chdir(REPO)
    args_cfg, _ = parse_recipe_only("training/train_hag.py", args, monkeypatch)
    assert args_cfg.use_lora is False and "--deepspeed" in args
    check_accelerate_launch(words)


def check_accelerate_launch(words: list[str]):
    from accelerate.commands.launch import launch_command_parser

    i = words.index("launch")
    ns = launch_command_parser().parse_args(words[i + 1:])
    assert ns.training_script in RECIPES and Path(REPO, ns.config_file).exists()
    return ns


def test_launcher_flags_are_the_launchers(tmp_path):
    """`accelerate launch` and `torchrun` options as the pages write them, read by their own parsers."""
    from torch.distributed.run import get_args_parser

    launches = [_words(_unwrap(c)) for d in DOCS for c in doc_commands(d)]
    acc = [w for w in launches if w[:2] == ["accelerate", "launch"]]
    tr = [w for w in launches if w[0] == "torchrun"]
    assert len(acc) == 2 and len(tr) == 1
    for words in acc:
        check_accelerate_launch(words)
    ns = get_args_parser().parse_args(tr[0][1:])
    assert ns.nproc_per_node == "8" and ns.training_script == "training/train_lpo.py"


def test_argparse_script_commands_parse_as_written(tmp_path, monkeypatch):
    """The sweep tools, `adaptive-decoder export` and the merge step take the flags the pages give them."""
    from adaptive_decoder.cli.merge import main as merge
    from adaptive_decoder.integrations.vllm.export import main as export

    mains = {"eval/sweep_report.py": _load_script("eval/sweep_report.py").main,
             "slurm/sweep_grid.py": _load_script("slurm/sweep_grid.py").main}
    checked = 0
    for doc in ("README.md", *DOCS):
        for cmd in doc_commands(doc):
            words = [re.sub(r"\$\w+", str(tmp_path), w) for w in _words(_unwrap(cmd))]
            if words[0] == "for":  # the loop's body, one index
                words = [w if w != tmp_path.as_posix() else "0" for w in words[words.index("do") + 1:words.index("done")]]
            for script, main in mains.items():
                if script in words:
                    ns = parse_argparse_only(main, words[words.index(script) + 1:], monkeypatch)
                    assert ns is not None, cmd
                    checked += 1
            if words[:2] == ["adaptive-decoder", "export"]:
                ns = parse_argparse_only(export, words[2:], monkeypatch)
                assert ns.base == "smollm2" and ns.out, cmd
                checked += 1
    assert checked >= 8
    # merge_collection.sbatch runs `adaptive-decoder merge OUT PART...` (cluster.md's table)
    sbatch = (REPO / "slurm/merge_collection.sbatch").read_text()
    assert "-m adaptive_decoder.cli merge" in sbatch
    ns = parse_argparse_only(merge, [str(tmp_path / "out"), str(tmp_path / "part-0")], monkeypatch)
    assert ns.parts == [str(tmp_path / "part-0")]


def test_the_bench_targets_pass_flags_bench_vllm_suite_reads(monkeypatch):
    """`make bench-vllm-suite` / `bench-vllm-natural-copy` (serving.md; run by hand, they time) call
    bench/vllm_suite.py with flags it reads, and it needs no vLLM to read them."""
    makefile = (REPO / "Makefile").read_text().replace("\\\n", " ")
    recipe = re.search(r"^bench-vllm-natural-copy:.*\n\t(.*)$", makefile, re.M).group(1)
    words = shlex.split(recipe.split("bench/vllm_suite.py", 1)[1])
    main = _load_script("bench/vllm_suite.py").main  # reads sys.argv
    monkeypatch.setattr(sys, "argv", ["bench/vllm_suite.py", *words])
    ns, rest = parse_argparse_only(lambda _argv: main(), None, monkeypatch)
    assert not rest and ns.variant == ["hf", "vllm"] and (REPO / ns.config).exists()
    assert set(yaml.safe_load(ns.head)) == {"factors", "temperature_bins", "fixed", "num_layers", "intermediate_size"}


def test_lm_eval_commands_parse_with_lm_evals_own_parser(monkeypatch):
    """The lm-eval commands of lmeval.md and the README: lm-eval's parser takes every flag, and the
    `--model_args` keys given to `adaptive-decoder` (and those its table lists) are ones the model accepts."""
    pytest.importorskip("lm_eval", reason="lm-eval is not installed: pip install -e '.[lmeval]'")
    from lm_eval.models.huggingface import HFLM

    from adaptive_decoder.integrations.lmeval import _LOADER_ONLY, AdaptiveDecoderLM
    from adaptive_decoder.integrations.lmeval.__main__ import main as lmeval_main

    accepted = set(inspect.signature(AdaptiveDecoderLM.__init__).parameters) | set(
        inspect.signature(HFLM.__init__).parameters)
    cmds = [_words(c) for d in ("README.md", "docs/lmeval.md") for c in doc_commands(d)]
    runs = [w[w.index("run"):] for w in cmds if "run" in w and w[0] in ("python", "lm_eval", "adaptive-decoder")
            and ("lmeval" in w[:3] or "adaptive_decoder.integrations.lmeval" in w or w[0] == "lm_eval")]
    assert len(runs) == 4
    for argv in runs:
        ns = parse_argparse_only(lmeval_main, argv, monkeypatch)
        assert ns.tasks and ns.model_args, argv
        if ns.model == "adaptive-decoder":
            assert set(ns.model_args) <= accepted, (argv, set(ns.model_args) - accepted)
    table = (REPO / "docs/lmeval.md").read_text().split("`--model_args`:", 1)[1].split("\n\n", 2)[1]
    listed = re.findall(r"^\| `(\w+)` \|", table, re.M)
    assert listed == ["pretrained", "head", "dtype", "chat", "seed", "max_gen_toks"]
    assert set(listed) <= set(inspect.signature(AdaptiveDecoderLM.__init__).parameters)
    refused = re.search(r"\(`peft`, `revision`, `parallelize`, `gguf_file`, \.\.\.\)", (REPO / "docs/lmeval.md").read_text())
    assert refused and {"peft", "revision", "parallelize", "gguf_file"} <= set(_LOADER_ONLY)


def test_the_vllm_options_serving_lists_are_the_engines():
    from adaptive_decoder.integrations.vllm.backend import VLLMEngine

    text = " ".join((REPO / "docs/serving.md").read_text().split())
    listed = re.search(r"`vllm_options: \{([^}]*)\}`", text).group(1).replace(" ", "").split(",")
    params = [p for p in inspect.signature(VLLMEngine.__init__).parameters if p not in ("self", "model", "tokenizer")]
    assert listed == params


# ---------------------------------------------------------------------------------------------------- running
def test_sweep_grid_lists_the_points_the_agent_runs(capsys):
    """`python slurm/sweep_grid.py configs/sweeps/lpo_tiny_grid.yaml --list` (cluster.md): the four grid points
    in wandb's order, each with its index for `--index`."""
    main = _load_script("slurm/sweep_grid.py").main
    assert main([str(REPO / "configs/sweeps/lpo_tiny_grid.yaml"), "--list"]) in (0, None)
    lines = [ln.split(" ", 2) for ln in capsys.readouterr().out.strip().splitlines()]
    assert [(i, name) for i, name, _ in lines] == [(str(i), f"lpo_tiny_grid-00{i}") for i in range(4)]
    assert [json.loads(point) for *_, point in lines] == [
        {"beta": 0.1, "learning_rate": 0.001}, {"beta": 0.1, "learning_rate": 0.03},
        {"beta": 1.0, "learning_rate": 0.001}, {"beta": 1.0, "learning_rate": 0.03}]


def test_export_of_an_embedded_base_by_name(tmp_path, monkeypatch, capsys):
    """`adaptive-decoder export --base smollm2 --head H --out O` (serving.md, lmeval.md): a base given by name is
    loaded by `load_base_model` in float32 and written as safetensors beside the head (the tiny model stands in
    for SmolLM2's ~16 s conversion); the command prints the directory."""
    import torch

    from adaptive_decoder import AdaptiveDecoderConfig, AdaptiveDecoderHead, cli
    from adaptive_decoder.modeling import models
    from conftest import tiny_llama, tiny_tokenizer

    calls = []

    def fake_load(name, dtype=None, **kw):
        calls.append((name, dtype))
        return tiny_llama(vocab_size=259, hidden_size=32), tiny_tokenizer()

    monkeypatch.setattr(models, "load_base_model", fake_load)
    AdaptiveDecoderHead(AdaptiveDecoderConfig(hidden_size=32, level="sequence")).save_pretrained(tmp_path / "head")
    cli.main(["export", "--base", "smollm2", "--head", str(tmp_path / "head"), "--out", str(tmp_path / "served")])
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(tmp_path / "served")
    assert calls == [("smollm2", torch.float32)]
    cfg = json.loads((tmp_path / "served" / "config.json").read_text())
    assert cfg["architectures"] == ["AdaptiveDecoderLlamaForCausalLM"] and cfg["model_type"] == "adaptive_decoder_llama"
    assert (tmp_path / "served" / "model.safetensors").is_file()
    assert (tmp_path / "served" / "adaptive_decoder_head" / "model.safetensors").is_file()


def test_readme_python_example_runs(tmp_path, monkeypatch, capsys):
    """README's "Use it from Python" block, as written, with the tiny model in place of SmolLM2: a token-level head
    chooses a temperature per generated token (the printed list has one entry per generated token, each one of
    the bins), the head saves and loads, and forcing values decodes through the same path."""
    import adaptive_decoder
    from conftest import tiny_llama, tiny_tokenizer

    (code,) = [t for lang, t in doc_snippets("README.md") if lang == "python"]
    monkeypatch.setattr(adaptive_decoder, "load_base_model",
                        lambda name: (tiny_llama(vocab_size=259, hidden_size=32), tiny_tokenizer()))
    monkeypatch.chdir(tmp_path)
    scope = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102  (the README's own example)
    lines = capsys.readouterr().out.strip().splitlines()
    temps = yaml.safe_load(lines[-1].split("temperature per token:", 1)[1])  # the list the example prints
    assert 1 <= len(temps) <= 64 and set(temps) <= {0.0, 0.2, 0.4, 0.6, 0.8, 1.0}
    assert (tmp_path / "my_head" / "config.json").is_file() and scope["head"].config.hidden_size == 32
    assert scope["out"].texts and scope["out"].values["temperature"][0][scope["out"].step_mask[0]].eq(0.7).all()


def test_the_guides_reward_sketch_has_the_examples_signatures():
    """The sketch of my_rewards.py in the guide names the parameters and defaults of the example's functions."""
    (code,) = [t for lang, t in doc_snippets("docs/guide.md") if lang == "python"]
    sketch = {}
    exec(compile(code, "guide.md", "exec"), sketch)  # noqa: S102  (bodies are `...`)
    sys.path.insert(0, str(REPO / "examples" / "custom_task"))
    try:
        import my_rewards
    finally:
        sys.path.pop(0)

    def shape(fn):
        return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]

    assert shape(sketch["letter_answer"]) == shape(my_rewards.letter_answer)
    for name in ("__init__", "score"):
        assert shape(getattr(sketch["OneWord"], name)) == shape(getattr(my_rewards.OneWord, name))


def test_the_guides_local_copy_override_reads_the_given_file(tmp_path, monkeypatch):
    """guide.md: a recipe's task entry `{path: FILE}` replaces the task file's dataset (same fields) with that
    file; the guide's snippet, with FILE a copy of the example's records minus one."""
    from adaptive_decoder.experiment.config import ExperimentConfig
    from adaptive_decoder.experiment.splits import make_splits

    snippet = next(yaml.safe_load(t) for lang, t in doc_snippets("docs/guide.md")
                   if lang == "yaml" and first_line(t) == "tasks:")
    ((task_file, opts),) = snippet["tasks"].items()
    assert opts == {"path": "/data/my_copy.jsonl"}
    records = (REPO / "examples/custom_task/words.jsonl").read_text().splitlines()
    copy = tmp_path / "my_copy.jsonl"
    copy.write_text("\n".join(records[1:]) + "\n")
    monkeypatch.chdir(REPO)
    monkeypatch.syspath_prepend(str(REPO / "examples" / "custom_task"))
    cfg = ExperimentConfig(run_dir=str(tmp_path / "run"), tasks={task_file: {"path": str(copy)}},
                           num_train=4, num_dev=2, num_test=2)
    task = cfg.build_task("letter_words")
    assert task.source == str(copy) and len(task.examples()) == len(records) - 1
    assert sum(len(p) for p in make_splits(cfg)["letter_words"].values()) == 8


def test_the_readmes_two_ways_to_point_a_task_at_local_data(tmp_path, monkeypatch):
    """README (Install): a public dataset is read from the first directory of $ADAPTIVE_DECODER_DATA (':'-separated)
    holding its file at the `local` path of PUBLIC_DATASETS, and a config's task entry `{path: FILE}` reads that
    file; neither touches the Hub."""
    import datasets

    from adaptive_decoder.experiment.config import ExperimentConfig
    from adaptive_decoder.tasks import get_task
    from adaptive_decoder.tasks.io import DATA_ENV, PUBLIC_DATASETS

    def refuse(*a, **kw):
        raise AssertionError("the Hub was asked although a local copy was given")

    monkeypatch.setattr(datasets, "load_dataset", refuse)
    readme = " ".join((REPO / "README.md").read_text().split())
    assert f"`{DATA_ENV}=DIR` (several directories: separated by `:`)" in readme and os.pathsep == ":"
    rows = [{"source": " ".join(["word"] * 24) + f" {i}", "reference": "x", "src_lang": "en", "tgt_lang": "de"}
            for i in range(3)]
    local = PUBLIC_DATASETS["wmt22.en-de"]["local"]  # copy_text's dataset
    (tmp_path / "second" / local).parent.mkdir(parents=True)
    (tmp_path / "second" / local).write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "first").mkdir()
    monkeypatch.setenv(DATA_ENV, f"{tmp_path / 'first'}:{tmp_path / 'second'}")
    task = get_task("copy_text")
    assert task.source == str(tmp_path / "second" / local) and len(task.examples()) == 3

    (entry,) = re.findall(r"`(tasks: \{copy_text: \{path: [^`]*\}\})`", readme)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_copy.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:2]))
    cfg = ExperimentConfig(run_dir=str(tmp_path / "run"), **yaml.safe_load(entry))
    task = cfg.build_task("copy_text")
    assert Path(task.source).resolve() == tmp_path / "my_copy.jsonl" and len(task.examples()) == 2


def test_the_login_command_the_guide_names_exists():
    """guide.md (publishing): `hf auth login` is a command of the huggingface_hub installed here (2.x ships no
    `huggingface-cli`, the name the guide used to give)."""
    import subprocess

    assert "`hf auth login`" in (REPO / "docs/guide.md").read_text()
    hf = Path(sys.executable).parent / "hf"
    if not hf.exists():
        pytest.skip(f"no `hf` command beside {sys.executable}")
    r = subprocess.run([str(hf), "auth", "login", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "--token" in r.stdout, r.stderr[-2000:]
