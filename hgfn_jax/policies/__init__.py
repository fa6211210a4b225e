"""Policies: Flax modules mapping a batch of environment states to flat forward/backward outputs."""
