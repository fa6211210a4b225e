"""The run directory every training loop of the library writes (GFlowNet and PGCGM alike): orbax checkpoints
with the corrupt-checkpoint fallback and the resume-config check (``checkpoint``), ``metrics.csv`` + TensorBoard
truncatable to a restored step and the host counters (``metrics_log``). Knows no model, environment or loss."""
