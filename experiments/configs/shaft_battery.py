"""Battery task with SHAFT (paper 002); see ``_hierarchical.py``."""

from experiments.configs._hierarchical import battery_config


def get_config(preset: str = "default"):
    return battery_config("shaft", preset)
