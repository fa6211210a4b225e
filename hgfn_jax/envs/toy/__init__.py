"""Enumerable toy environments for checking the GFlowNet machinery against exact target distributions."""
