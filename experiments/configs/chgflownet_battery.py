"""Battery task with CHGFlowNet (paper 000); see ``_hierarchical.py``."""

from experiments.configs._hierarchical import battery_config


def get_config(preset: str = "default"):
    return battery_config("chgflownet", preset)
