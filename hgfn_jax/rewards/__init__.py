"""Reward functions: physics-informed terms, composition validity, proxies and composite rewards."""
