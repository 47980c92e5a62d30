"""Helpers for dataclass configs loaded from YAML and overridden on the command line."""

from __future__ import annotations


def as_mapping(name: str, value) -> dict:
    """The value of a config field that holds a mapping.

    From a YAML file the field arrives as a dict; from the command line (and from `wandb agent`, which passes
    `--head={'level': 'token'}`) it arrives as text, parsed here as YAML, a superset of JSON. None means empty.
    """
    if value is None:
        return {}
    if isinstance(value, str):
        import yaml  # noqa: PLC0415

        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise ValueError(f"{name} must be a mapping (YAML/JSON text on the command line), got {value!r} ({e})") from None
        value = parsed if parsed is not None else value
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be a mapping, got {type(value).__name__}: {value!r}")
    return dict(value)
