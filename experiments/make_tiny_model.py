"""Save the tiny random Llama (SmolLM2 tokenizer) that configs/experiments/tiny.yaml runs on.

    python experiments/make_tiny_model.py runs/tiny_llama
    python experiments/run.py --config configs/experiments/tiny.yaml
"""

import sys

from adaptive_decoder.modeling.tiny_model import save_tiny_model

if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else "runs/tiny_llama"
    print(f"saved a tiny random Llama to {save_tiny_model(out)}")
