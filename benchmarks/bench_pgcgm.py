"""PGCGM generation throughput: structures per second of generator + Algorithm 1 (the jitted orbit expansion
to full cells of up to 576 sites), untrained weights, paper-size (width 1) and default-preset (width 0.25)
generators, batch 1..4096. Compile time apart. The issue's target: 500,000 generated and expanded in under a
minute on the 2-core CPU (``seconds_for_500k`` in each record).

Where the time goes: ``pgcgm_generator`` (the generator alone) and ``pgcgm_expand`` (the expansion alone, of
that generator's output) are timed apart at the same batches. Every record carries the 1-minute load average
when it was taken (``load_1min``): on a shared machine it says how much of the CPU the numbers had. The
expansion is one jitted function for both widths (same shapes), so its ``compile_s`` is real only at width 1.

Run: ``python -m benchmarks.bench_pgcgm`` (``main(quick=True)``: fewer batch sizes). Writes
``benchmarks/results/pgcgm.json``.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import record, time_jax, write_results
from hgfn_jax.gan.generate import expand, make_sampler
from hgfn_jax.gan.models import Generator
from hgfn_jax.gan.train import make_tables


def _generate_fn(width: float, tables, nz: int = 128):
    gen = Generator(width=width, length_range=(2.0, 42.0))
    props, o, mask, tie = (jnp.asarray(x) for x in (tables.props, tables.o, tables.op_mask, tables.tie))

    def generate(g_params, g_stats, key, gi, el):
        z = jax.random.normal(key, (gi.shape[0], nz))
        return gen.apply({"params": g_params, "batch_stats": g_stats}, z, props[el], o[gi], mask[gi], tie[gi],
                         train=False)

    gi, el = jnp.zeros((2,), jnp.int32), jnp.full((2, 3), 8, jnp.int32)
    v = gen.init(jax.random.PRNGKey(0), jnp.zeros((2, nz)), props[el], o[gi], mask[gi], tie[gi], train=False)
    return generate, v["params"], v["batch_stats"]


def main(quick: bool = False):
    tables = make_tables()
    rng = np.random.default_rng(0)
    records = []
    batches = (1, 256, 4096) if quick else (1, 64, 256, 1024, 4096)
    min_time = 0.5 if quick else 1.5
    sg_t, ang_t = jnp.asarray(tables.spacegroups), jnp.asarray(tables.angles)
    expand_only = jax.jit(lambda sets, lengths, gi, el: expand(
        sets[:, 0], el, sg_t[gi], jnp.concatenate([lengths, ang_t[gi]], axis=1)).frac)
    for width in (1.0, 0.25):
        generate, params, stats = _generate_fn(width, tables)
        sampler = make_sampler(generate, tables)
        gen_only = jax.jit(generate)
        for b in batches:
            gi = jnp.asarray(rng.integers(0, len(tables.spacegroups), b), jnp.int32)
            el = jnp.asarray(np.sort(rng.choice(np.arange(1, 84), (b, 3)), axis=1), jnp.int32)
            key = jax.random.PRNGKey(1)
            both = lambda k, f=sampler, p=params, s=stats, gi=gi, el=el: f(p, s, k, gi, el)[0].frac  # noqa: E731
            alone = lambda k, f=gen_only, p=params, s=stats, gi=gi, el=el: f(p, s, k, gi, el)  # noqa: E731
            exp = lambda out, gi=gi, el=el: expand_only(out[0], out[1], gi, el)  # noqa: E731
            # the expansion's input is the generator's output, made after the generator's compile was timed
            for name, fn in (("pgcgm_generate_expand", both), ("pgcgm_generator", alone), ("pgcgm_expand", exp)):
                arg = gen_only(params, stats, key, gi, el) if name == "pgcgm_expand" else key
                compile_s, sec = time_jax(fn, arg, min_time=min_time)
                records.append(record(name, b, sec, compile_s, width=width, seconds_for_500k=500_000 * sec / b,
                                      load_1min=os.getloadavg()[0]))
    write_results("pgcgm", records)
    return records


if __name__ == "__main__":
    main()
