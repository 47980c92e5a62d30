"""`adaptive-decoder serve OUT` (`integrations.vllm.serve`): the OpenAI-compatible server on a free loopback port,
asked for completions (n > 1) and a streamed chat with the `openai` client, then stopped (`make test-vllm`)."""

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
    yield openai.OpenAI(base_url=url + "/v1", api_key="none"), str(served)
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    log.close()


def test_completions_with_several_samples(server):
    client, model = server
    out = client.completions.create(model=model, prompt="Hello there", max_tokens=6, n=3, temperature=1.0,
                                    top_p=1.0, extra_body={"top_k": 0})
    assert len(out.choices) == 3 and all(c.text is not None for c in out.choices)
    assert 3 <= out.usage.completion_tokens <= 18  # each sample at least one token, at most max_tokens


def test_streamed_chat_and_a_request_control(server):
    client, model = server
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
