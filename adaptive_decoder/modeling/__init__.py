"""The head on a frozen LM and decoding with it: head, per-row sampling, generation, model loading."""
