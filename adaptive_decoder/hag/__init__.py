"""HAG: the LM writes its own decoding config as text, then answers (format, parser, policy, search)."""
