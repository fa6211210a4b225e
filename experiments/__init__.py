"""Experiments: one config module per experiment (`experiments/configs/<name>.py`), the train entry point
(`python -m experiments.train --exp <name>`), and the sweep (`python -m experiments.sweep`)."""
