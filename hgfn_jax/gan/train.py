"""PGCGM training: a pure jitted WGAN-GP update (``n_critic`` critic steps, one generator step) and the host loop.

Conventions as in ``hgfn_jax.gflownet.train`` (the GFlowNet loop): ``make_gan_train(config, data)`` returns pure
``init(rng) -> GANState`` and ``update(ts) -> (ts, metrics)``; ``train_gan(config, workdir, data)`` runs
``update`` in jitted ``lax.scan`` chunks with a tqdm bar, ``metrics.csv`` + TensorBoard, orbax checkpoints and
exact resume (a killed run continued with the same command reaches the same parameters and the same
``metrics.csv``), refuses a work directory trained with another config, and skips (flags in
``nonfinite_skipped``) an update with a non-finite loss or gradient.

Optimisation (our choice where the paper's copy is silent): Adam (lr 1e-4, betas 0.5 / 0.9, the WGAN-GP
paper's settings) for both networks, 5 critic steps per generator step, lambda_d = 10 (paper).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from hgfn_jax.crystal import spacegroup as sgm
from hgfn_jax.data import pgcgm as pdata
from hgfn_jax.gan import losses as L
from hgfn_jax.gan import representation as R
from hgfn_jax.gan.models import Discriminator, Generator

VARIANT_LAMBDAS = {"pgcgm": (0.0, 0.0, 0.0, 0.0), "dist": (1.0, 1.0, 0.0, 0.0), "dist_coor": (1.0, 1.0, 1.0, 1.0)}


@struct.dataclass
class GANState:
    g_params: Any
    g_stats: Any  # generator BatchNorm running statistics
    d_params: Any
    g_opt: Any
    d_opt: Any
    key: jax.Array  # [2] uint32
    step: jnp.ndarray  # [] int32: completed generator updates


@dataclass(frozen=True)
class Tables:
    """Per-group and per-element constants (numpy; closed over as jit constants)."""

    o: np.ndarray  # [G, 192, 4, 4]
    op_mask: np.ndarray  # [G, 192]
    tie: np.ndarray  # [G, 3] int32: the length each length is tied to
    angles: np.ndarray  # [G, 3] degrees
    spacegroups: np.ndarray  # [G]
    props: np.ndarray  # [104, 23]
    radii: np.ndarray  # [104] A


def make_tables(groups=pdata.PGCGM_SPACEGROUPS) -> Tables:
    o, mask = pdata.affine_tables(groups)
    systems = [sgm.CRYSTAL_SYSTEMS[int(sgm.host_tables()["crystal_system"][g])] for g in groups]
    tie = np.asarray([(0, 0, 0) if s == "cubic" else (0, 0, 2) if s in ("tetragonal", "trigonal", "hexagonal")
                      else (0, 1, 2) for s in systems], np.int32)
    angles = np.asarray([pdata.fixed_angles(g) for g in groups], np.float32)
    return Tables(o, mask, tie, angles, np.asarray(groups, np.int32), pdata.element_properties(),
                  pdata.atomic_radii())


def lambdas_of(lc) -> tuple[float, ...]:
    if lc.variant not in VARIANT_LAMBDAS:
        raise ValueError(f"loss.variant must be one of {sorted(VARIANT_LAMBDAS)}, got {lc.variant!r}")
    on = VARIANT_LAMBDAS[lc.variant]
    return tuple(float(a) * float(b) for a, b in zip(on, lc.lambdas, strict=True))


def make_gan_train(config, data: pdata.PGCGMData, tables: Tables | None = None):
    """Pure functions ``(init, update, run_chunk, generate, models, g_loss)`` of a run on the crystals ``data``;
    ``g_loss(g_params, g_stats, d_params, key) -> (loss, (g_stats, metrics))`` is the generator objective the
    update differentiates (eq. 7 with the variant's weights), exposed so that it can be checked without
    compiling the whole update."""
    tc, lc, mc = config.train, config.loss, config.model
    t = make_tables() if tables is None else tables
    gen = Generator(width=float(mc.width), length_range=tuple(mc.length_range))
    dis = Discriminator(width=float(mc.width))
    nz, batch = int(mc.noise_dim), int(tc.batch_size)
    n_aug = int(config.data.n_aug)
    lam = lambdas_of(lc)
    phi = tuple(float(x) for x in lc.phi)
    scale = float(lc.length_scale)
    aug = jnp.asarray(data.aug[:, :n_aug])
    elements, gidx, lengths = jnp.asarray(data.elements), jnp.asarray(data.group_index), jnp.asarray(data.lengths)
    counts = np.bincount(data.group_index, minlength=len(t.spacegroups)).astype(np.float64)
    w = counts[data.group_index] ** (-float(config.data.group_balance))
    logits = jnp.asarray(np.log(w / w.sum()), jnp.float32)
    o_t, mask_t, tie_t, ang_t = (jnp.asarray(x) for x in (t.o, t.op_mask, t.tie, t.angles))
    props_t, radii_t = jnp.asarray(t.props), jnp.asarray(t.radii)
    adam = lambda lr: optax.adam(float(lr), b1=float(tc.beta1), b2=float(tc.beta2))  # noqa: E731
    tx_g, tx_d = adam(tc.lr_g), adam(tc.lr_d)

    def cond(g, el):
        """Conditioning arrays of groups ``g [B]`` (index into the 20) and element triples ``el [B, 3]``."""
        return dict(props=props_t[el], o=o_t[g], op_mask=mask_t[g], tie=tie_t[g], angles=ang_t[g],
                    radii=radii_t[el])

    def real_batch(key):
        k1, k2 = jax.random.split(key)
        idx = jax.random.categorical(k1, logits, shape=(batch,))
        k = jax.random.randint(k2, (batch,), 0, n_aug)
        return aug[idx, k], lengths[idx], cond(gidx[idx], elements[idx])

    def matrices(sets, lens, c):
        return jax.vmap(lambda s, ln, a, p, o, m: R.crystal_matrix(s, ln, a, p, o, m, scale))(
            sets, lens, c["angles"], c["props"], c["o"], c["op_mask"])

    def physics(sets, lens, c):
        mats = jax.vmap(lambda ln, a: R.params_to_matrix(R.lattice_params(ln, a)))(lens, c["angles"])
        h_inter, h_intra = jax.vmap(R.distance_matrices)(sets, mats)
        s_inter, s_intra = jax.vmap(R.radius_sums)(c["radii"])
        l_inter, l_intra = L.distance_losses(h_inter, h_intra, s_inter, s_intra, phi)
        f = jax.vmap(R.full_average)(sets, c["o"], c["op_mask"])
        return l_inter, l_intra, L.full_coordinate_loss(f), L.base_coordinate_loss(sets)

    def g_apply(g_params, g_stats, z, c, train=True):
        out = gen.apply({"params": g_params, "batch_stats": g_stats}, z, c["props"], c["o"], c["op_mask"],
                        c["tie"], train=train, mutable=["batch_stats"] if train else False)
        return (out[0], out[1]["batch_stats"]) if train else (out, g_stats)

    def init(rng):
        kg, kd, krun = jax.random.split(rng, 3)
        sets, lens, c = real_batch(kg)
        z = jnp.zeros((batch, nz))
        gv = gen.init(kg, z, c["props"], c["o"], c["op_mask"], c["tie"], train=False)
        dv = dis.init(kd, matrices(sets, lens, c), c["o"], c["op_mask"])
        return GANState(g_params=gv["params"], g_stats=gv["batch_stats"], d_params=dv["params"],
                        g_opt=tx_g.init(gv["params"]), d_opt=tx_d.init(dv["params"]), key=krun,
                        step=jnp.asarray(0, jnp.int32))

    def critic(d_params, c):
        return lambda x: dis.apply({"params": d_params}, x, c["o"], c["op_mask"])

    def d_loss_fn(d_params, x_real, x_fake, c, eps):
        f = critic(d_params, c)
        d_real, d_fake = f(x_real), f(x_fake)
        gp = L.gradient_penalty(f, x_real, x_fake, eps)
        loss = L.critic_loss(d_real, d_fake, gp, float(lc.lambda_gp))
        return loss, {"d_loss": loss, "gp": gp, "w_dist": jnp.mean(d_real) - jnp.mean(d_fake)}

    def d_step(carry, key):
        d_params, d_opt, g_stats, g_params = carry
        kb, kz, ke = jax.random.split(key, 3)
        sets, lens, c = real_batch(kb)
        (fs, fl), g_stats = g_apply(g_params, g_stats, jax.random.normal(kz, (batch, nz)), c)
        x_real, x_fake = matrices(sets, lens, c), jax.lax.stop_gradient(matrices(fs, fl, c))
        eps = jax.random.uniform(ke, (batch,))  # eq. 4: U(0, 1)
        (_, m), grads = jax.value_and_grad(d_loss_fn, has_aux=True)(d_params, x_real, x_fake, c, eps)
        upd, d_opt_new = tx_d.update(grads, d_opt, d_params)
        new = optax.apply_updates(d_params, upd)
        ok = jnp.isfinite(m["d_loss"]) & jnp.all(jnp.stack([jnp.all(jnp.isfinite(g)) for g in
                                                             jax.tree.leaves(grads)]))
        keep = lambda a, b: jax.tree.map(lambda x, y: jnp.where(ok, x, y), a, b)  # noqa: E731
        m["nonfinite"] = (~ok).astype(jnp.float32)
        return (keep(new, d_params), keep(d_opt_new, d_opt), g_stats, g_params), m

    def g_loss_fn(g_params, g_stats, d_params, key):
        kb, kz = jax.random.split(key)
        _, _, c = real_batch(kb)
        (fs, fl), g_stats = g_apply(g_params, g_stats, jax.random.normal(kz, (batch, nz)), c)
        d_fake = critic(d_params, c)(matrices(fs, fl, c))
        l_inter, l_intra, l_full, l_base = physics(fs, fl, c)
        loss = L.generator_loss(d_fake, l_inter, l_intra, l_full, l_base, lam)
        return loss, (g_stats, {"g_loss": loss, "g_adv": -jnp.mean(d_fake), "l_inter": l_inter,
                                "l_intra": l_intra, "l_full": l_full, "l_base": l_base,
                                "length_mean": jnp.mean(fl)})

    def update(ts: GANState):
        key, kd, kg = jax.random.split(ts.key, 3)
        (d_params, d_opt, g_stats, _), dm = jax.lax.scan(
            d_step, (ts.d_params, ts.d_opt, ts.g_stats, ts.g_params), jax.random.split(kd, int(tc.n_critic)))
        (loss, (g_stats, gm)), grads = jax.value_and_grad(g_loss_fn, has_aux=True)(
            ts.g_params, g_stats, d_params, kg)
        upd, g_opt = tx_g.update(grads, ts.g_opt, ts.g_params)
        g_params = optax.apply_updates(ts.g_params, upd)
        ok = jnp.isfinite(loss) & jnp.all(jnp.stack([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]))
        keep = lambda a, b: jax.tree.map(lambda x, y: jnp.where(ok, x, y), a, b)  # noqa: E731
        metrics = {k: v[-1] for k, v in dm.items() if k != "nonfinite"}
        metrics.update(gm)
        metrics["nonfinite_skipped"] = jnp.maximum((~ok).astype(jnp.float32), jnp.max(dm["nonfinite"]))
        metrics["loss"] = loss
        return GANState(g_params=keep(g_params, ts.g_params), g_stats=keep(g_stats, ts.g_stats),
                        d_params=d_params, g_opt=keep(g_opt, ts.g_opt), d_opt=d_opt, key=key,
                        step=ts.step + 1), metrics

    def run_chunk(ts: GANState, n: int):
        return jax.lax.scan(lambda s, _: update(s), ts, None, length=n)

    def generate(g_params, g_stats, key, g, el):
        """Base-site sets [B, 3, 3, 3] and lengths [B, 3] for groups ``g [B]`` (index into the 20 groups) and
        element triples ``el [B, 3]`` (inference mode: running BatchNorm statistics)."""
        c = cond(g, el)
        (sets, lens), _ = g_apply(g_params, g_stats, jax.random.normal(key, (g.shape[0], nz)), c, train=False)
        return sets, lens

    return init, update, run_chunk, generate, (gen, dis), g_loss_fn


_COMPILED: dict = {}
_HOST_ONLY = ("num_iterations", "steps_per_call", "checkpoint_every")


def _compiled(config, data):
    """``(init, jit(run_chunk), generate)`` memoised per compiled-relevant config and data object, so a resumed
    run in the same process (or a test, or runs of several seeds) does not recompile the update. The seed only
    picks ``init``'s key (``make_gan_train`` never reads it), so it is not part of the key."""
    cfg = config.to_dict()
    cfg["train"] = {k: v for k, v in cfg["train"].items() if k not in _HOST_ONLY}
    cfg.pop("eval", None)
    cfg.pop("seed", None)
    key = (json.dumps(cfg, sort_keys=True, default=str), id(data))
    if key not in _COMPILED:
        if len(_COMPILED) > 8:
            _COMPILED.clear()
        init, _, run_chunk, generate, *_ = make_gan_train(config, data)
        _COMPILED[key] = (init, jax.jit(run_chunk, static_argnums=1), generate, data)
    return _COMPILED[key][:3]


def train_gan(config, workdir: str | Path, data: pdata.PGCGMData, stop_after: int | None = None,
              progress: bool = True) -> dict:
    """Trains in ``workdir`` (resuming from its latest good checkpoint); returns ``{"state", "summary"}``."""
    from tqdm.auto import tqdm

    from hgfn_jax.rundir.checkpoint import check_resume_config, config_json, restore_latest_good, save_checkpoint
    from hgfn_jax.rundir.metrics_log import MetricsLog

    workdir = Path(workdir)
    tc = config.train
    chunk, ckpt_every, total = int(tc.steps_per_call), int(tc.checkpoint_every), int(tc.num_iterations)
    if chunk < 1 or ckpt_every < 1 or ckpt_every % chunk:
        raise ValueError(f"train.checkpoint_every={ckpt_every} must be a positive multiple of "
                         f"train.steps_per_call={chunk}")
    check_resume_config(config, workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    init, jit_chunk, generate = _compiled(config, data)
    ts = jax.jit(init)(jax.random.PRNGKey(int(config.seed)))
    mngr, ts, start = restore_latest_good(workdir, ts)
    if start:
        print(f"resumed {workdir} from step {start}")
    (workdir / "config.json").write_text(config_json(config))
    log = MetricsLog(workdir, start)
    t0 = time.perf_counter()
    end = total if stop_after is None else min(total, start + stop_after)
    bar = tqdm(total=total, initial=start, desc="train pgcgm", disable=not progress, dynamic_ncols=True)
    step = start
    while step < end:
        n = min(chunk, end - step, ckpt_every - step % ckpt_every)
        ts, metrics = jit_chunk(ts, n)
        metrics = jax.device_get(metrics)
        for i in range(n):
            log.add(step + i + 1, {k: v[i] for k, v in metrics.items()})
        step += n
        bar.update(n)
        bar.set_postfix(d=f"{metrics['d_loss'][-1]:.3g}", w=f"{metrics['w_dist'][-1]:.3g}",
                        inter=f"{metrics['l_inter'][-1]:.3g}")
        if step % ckpt_every == 0 or step == total:
            save_checkpoint(mngr, ts)
    bar.close()
    log.close()
    summary = {"task": "pgcgm", "iterations": step, "train_seconds_this_call": time.perf_counter() - t0,
               "finished": step >= total}
    (workdir / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return {"state": ts, "summary": summary, "generate": generate}
