"""Battery task with the flat (single-policy) GFlowNet baseline of papers 000/002; see ``_hierarchical.py``."""

from experiments.configs._hierarchical import battery_config


def get_config(preset: str = "default"):
    return battery_config("flat", preset)
