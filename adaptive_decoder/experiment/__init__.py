"""The experiment pipeline: collect -> pairs -> train -> evaluate -> aggregate, per seed and level."""
