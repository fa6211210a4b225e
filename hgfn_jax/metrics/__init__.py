"""The evaluation suite: host-side metrics over pymatgen Structures / compositions (issue 12).

Modules: ``samples`` (the :class:`Sample` record, readers for CIFs and ``samples.jsonl``), ``reference`` (the
shared data set as the reference), ``validity``, ``novelty`` (uniqueness, novelty), ``diversity``, ``hull``
(energy above hull, S.U.N.), ``relax`` (batched relaxation, match rate, RMS), ``properties`` (property distribution
distances), ``modes`` (modes vs states visited), ``cost`` (parameters, seconds per sample), ``plots`` (eval/*.png),
``report`` (metrics.json + report.md). ``experiments/evaluate.py`` runs them on a run directory.
"""
