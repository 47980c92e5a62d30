"""Integrations with serving engines. Each subpackage imports its engine lazily, so this package imports
without any of them installed."""
