"""Crystal-GFN with the band gap reward (paper 001). Presets: default (minutes on a CPU), paper, test."""

from experiments.configs._crystal_gfn import crystal_gfn_config


def get_config(preset: str = "default"):
    return crystal_gfn_config("band_gap", preset)
