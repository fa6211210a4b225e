"""How much of the valid composition space the Crystal-GFN ``chain`` composition mask reaches.

With the paper's 22 elements the exact mask (``exact`` mode: validity tabulated on the whole composition lattice)
is too large, so the environment uses ``chain`` mode: an element may be added only if the resulting composition is
itself valid (``composition_subspace`` docstring). A valid composition is then reachable iff some ordering of its
elements passes only through valid sub-compositions (same counts). This script samples valid compositions (random
space group of the configured list, 2-5 random elements with random counts 1..16, <= 80 atoms, kept if valid by
the environment's rule, which the tests check against SMACT and pyxtal) and reports the reachable fraction, by
number of elements.

    python -m experiments.composition_coverage [--groups 400] [--per-group 5] [--seed 0]
"""

from __future__ import annotations

import argparse
import json

import numpy as np


def reachable(valid_of_subset: dict[int, bool], k: int) -> bool:
    """Some ordering of the k elements passes only through valid sub-compositions (bitmask DP)."""
    reach = {0: True}
    for m in sorted(range(1, 1 << k), key=lambda m: bin(m).count("1")):
        reach[m] = valid_of_subset[m] and any(reach[m & ~(1 << b)] for b in range(k) if m >> b & 1)
    return reach[(1 << k) - 1]


def coverage(env, n_groups: int = 400, per_group: int = 5, seed: int = 0) -> dict:
    from hgfn_jax.envs.crystal_gfn import composition_subspace as comp

    cfg, wtab = env.comp_config, env.wyckoff
    ox = comp.oxidation_states(env.elements, cfg.oxidation_set)
    rng = np.random.default_rng(seed)
    n_el = len(env.elements)
    by_k: dict[int, list[int]] = {}
    for _ in range(n_groups):
        row = int(rng.integers(len(env.spacegroups)))
        cands = np.zeros((2000, n_el), np.int64)
        for i in range(len(cands)):
            k = int(rng.integers(2, min(cfg.max_distinct, n_el) + 1))
            cands[i, rng.choice(n_el, k, replace=False)] = rng.integers(1, cfg.cap + 1, size=k)
        cands = cands[cands.sum(1) <= cfg.max_atoms]
        for c in cands[comp.valid_host(cfg, wtab, row, cands, ox)][:per_group]:
            els = np.nonzero(c)[0]
            k = len(els)
            subs = np.zeros(((1 << k) - 1, n_el), np.int64)
            for m in range(1, 1 << k):
                for b in range(k):
                    if m >> b & 1:
                        subs[m - 1, els[b]] = c[els[b]]
            valid = dict(zip(range(1, 1 << k), comp.valid_host(cfg, wtab, row, subs, ox).tolist(), strict=True))
            by_k.setdefault(k, [0, 0])
            by_k[k][0] += 1
            by_k[k][1] += int(reachable(valid, k))
    total = sum(v[0] for v in by_k.values())
    hit = sum(v[1] for v in by_k.values())
    return {"sampled_valid": total, "reachable": hit, "reachable_frac": hit / max(total, 1),
            "by_num_elements": {k: {"sampled": a, "reachable": b, "frac": b / a} for k, (a, b) in sorted(by_k.items())}}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--groups", type=int, default=400)
    ap.add_argument("--per-group", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    from hgfn_jax.envs.crystal_gfn.env import CrystalGFN

    print(json.dumps(coverage(CrystalGFN(), args.groups, args.per_group, args.seed), indent=2))


if __name__ == "__main__":
    main()
