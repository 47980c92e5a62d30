"""Decoding methods the harness compares: the policy interface and registry (`base`), the policies that decide
without a fit (`policies`), the dev-fitted ones (`fitted`), the tuned training-free samplers (`samplers`) and the
one joint config tuned for the whole mix (`joint`).

Importing any module of this package imports the four that register the built-in methods, so the registry
(`base.POLICIES`, `base.TRAITS`) holds every built-in method before a caller reads it."""

from . import fitted, joint, policies, samplers  # noqa: F401  (register the built-in methods)
