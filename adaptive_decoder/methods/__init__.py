"""Decoding methods the harness compares: the policy interface and registry (`base`), the policies that decide
without a fit (`policies`), the dev-fitted ones (`fitted`) and the tuned training-free samplers (`samplers`).

Importing any module of this package imports the three that register the built-in methods, so the registry
(`base.POLICIES`, `base.TRAITS`) holds every built-in method before a caller reads it."""

from . import fitted, policies, samplers  # noqa: F401  (register the built-in methods)
