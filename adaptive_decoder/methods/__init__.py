"""Decoding methods the harness compares: the policy interface and registry, fixed / random / oracle / adaptive policies."""
