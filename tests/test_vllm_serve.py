"""`adaptive-decoder serve OUT` (`integrations.vllm.serve`): the OpenAI-compatible server on a free loopback port,
asked for completions (n > 1) and a streamed chat with the `openai` client, and evaluated by lm-eval's
`local-completions` client as docs/lmeval.md says, then stopped (`make test-vllm`)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

pytest.importorskip("vllm", reason="vLLM is not installed here; `make test-vllm` builds its own venv")
openai = pytest.importorskip("openai", reason="the openai client comes with vLLM")

from adaptive_decoder.integrations.vllm.export import export_servable  # noqa: E402
from conftest import tiny_tokenizer  # noqa: E402
from test_vllm_plugin import make_head, tiny_base  # noqa: E402

CHAT = ("{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}"
        "{% if add_generation_prompt %}<s>assistant: {% endif %}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    d = tmp_path_factory.mktemp("serve")
    tiny_base(d / "base", vocab=259)
    tok = tiny_tokenizer()
    tok.chat_template = CHAT
    tok.save_pretrained(d / "base")
    make_head(d / "head", level="sequence", weight_scale=0.5, temperature_bins=[0.5, 1.0], top_k_bins=[0, 20])
    served = export_servable(d / "base", d / "head", d / "served")
    port = free_port()
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    log = open(d / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "adaptive_decoder.integrations.vllm.serve", str(served),
                             "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32", "--enforce-eager",
                             "--max-model-len", "256", "--max-num-seqs", "8"], stdout=log, stderr=subprocess.STDOUT,
                            env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 300
    while True:
        try:
            if urllib.request.urlopen(url + "/health", timeout=2).status == 200:
                break
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(f"the server did not come up: {(d / 'server.log').read_text()[-3000:]}")
        time.sleep(1)
    yield openai.OpenAI(base_url=url + "/v1", api_key="none"), str(served), url, d / "server.log"
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    log.close()


def test_completions_with_several_samples(server):
    client, model, *_ = server
    out = client.completions.create(model=model, prompt="Hello there", max_tokens=6, n=3, temperature=1.0,
                                    top_p=1.0, extra_body={"top_k": 0})
    assert len(out.choices) == 3 and all(c.text is not None for c in out.choices)
    assert 3 <= out.usage.completion_tokens <= 18  # each sample at least one token, at most max_tokens


def test_streamed_chat_and_a_request_control(server):
    client, model, *_ = server
    stream = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Say hi"}],
                                            max_tokens=5, temperature=1.0, top_p=1.0, stream=True)
    chunks = [c for c in stream]
    assert len(chunks) >= 2 and any(c.choices and c.choices[0].delta.content for c in chunks)
    # a control the head does not have is refused at admission, with the one-line message
    with pytest.raises(openai.BadRequestError, match="adaptive_temperature_bin is 5"):
        client.completions.create(model=model, prompt="x", max_tokens=2, extra_body={"vllm_xargs": {
            "adaptive_temperature_bin": 5}})


def test_a_directory_that_is_not_an_export_is_refused(tmp_path):
    res = subprocess.run([sys.executable, "-m", "adaptive_decoder.integrations.vllm.serve", str(tmp_path)],
                         capture_output=True, text=True)
    assert res.returncode != 0 and "not an exported adaptive-decoder directory" in res.stderr


def lm_eval_run(model, url, tmp_path, *extra) -> list:
    """lm-eval's own command line (no adaptive_decoder import) over a 3-question local task against the server; the
    completions in doc order."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    data = tmp_path / "add3.jsonl"
    data.write_text("".join(json.dumps({"question": f"What is {a} plus {b}?", "answer": str(a + b)}) + "\n"
                            for a, b in ((2, 3), (10, 7), (21, 21))))
    (tmp_path / "add3.yaml").write_text(
        f"task: add3\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\ntest_split: test\n"
        "output_type: generate_until\ndoc_to_text: '{{question}}'\ndoc_to_target: '{{answer}}'\n"
        "generation_kwargs:\n  until: []\n  do_sample: false\n  temperature: 0.0\n  max_gen_toks: 12\n"
        "metric_list:\n  - metric: exact_match\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "lm_eval", "run", "--model", "local-completions", "--model_args",
           f"model={model},base_url={url}/v1/completions,tokenizer_backend=huggingface,tokenizer={model}",
           "--tasks", "add3", "--include_path", str(tmp_path), "--apply_chat_template", "--log_samples",
           "--output_path", str(tmp_path / "out"), *extra]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    (samples,) = list((tmp_path / "out").rglob("samples_add3_*.jsonl"))
    rows = sorted((json.loads(line) for line in samples.read_text().splitlines()), key=lambda r: r["doc_id"])
    assert len(rows) == 3
    return [r["resps"][0][0] for r in rows]


def test_lm_eval_local_completions_recipe(server, tmp_path):
    """The docs/lmeval.md recipe: with its neutral values the head alone warps (no warning in the server log) and
    samples; with the task's own greedy values every completion is the plain model's greedy, and the server says
    so once."""
    pytest.importorskip("lm_eval", reason="lm-eval is not installed in this venv: make setup-vllm installs it")
    _, model, url, log = server
    before = log.read_text()
    sampled = lm_eval_run(model, url, tmp_path / "neutral", "--gen_kwargs", "temperature=1,top_p=1")
    during = log.read_text()[len(before):]
    assert "applied on top" not in during and "a greedy request" not in during, during[-3000:]
    greedy = lm_eval_run(model, url, tmp_path / "greedy")
    after = log.read_text()[len(before) + len(during):]
    assert after.count("adaptive-decoder: a greedy request (temperature 0) decodes as the plain model's greedy") == 1
    # lm-eval sends seed 1234 with every request, so the sampled completions are reproducible
    assert all(isinstance(t, str) for t in sampled) and sampled != greedy
