"""Batched FIRE relaxation of positions and cell in JAX with the M3GNet PES potential (one ``lax.while_loop``).

The same algorithm as the evaluation suite's host relaxer (:mod:`hgfn_jax.metrics.relax`: ASE ``FIRE`` on ASE's
``FrechetCellFilter``, stop at fmax), step for step, for a fixed-shape batch of padded structures:

- degrees of freedom (ASE ``FrechetCellFilter``, chosen over a simpler UnitCellFilter-style cell because it is
  what the host relaxer uses, so both stop on the same criterion and follow the same path): with ``F`` the
  deformation gradient of the current cell from the initial one (``cell = cell0 @ F^T``, rows), the atoms'
  DOF are ``u = positions @ F^-T`` and the cell's DOF ``X = logm(F) * n_atoms`` (3 extra rows).
  ``F = expm(X / n_atoms)`` with a fixed-order scaled Taylor series (differentiable, exact to float32 for
  ``|log F| < 4``). Generalised forces: ``forces @ F`` on the atoms and, on the cell,
  ``d/dL <expm(L), virial F^-T> / n_atoms`` (``virial = -V sigma``, the VJP of ``expm`` replaces ASE's
  ``expm_frechet`` loop): exactly ``-dE/dX``;
- ASE's FIRE (ase 3.29 defaults, checked in tests): dt 0.1, maxstep 0.2 A (on the norm of the whole step
  vector, atoms and cell rows together), dtmax 1.0, Nmin 5, finc 1.1, fdec 0.5, astart 0.1, fa 0.99; the
  first step starts from zero velocity;
- per structure and per iteration, in the host relaxer's order: evaluate, then stop with ``CONVERGED`` when
  fmax (the largest row norm of the generalised forces, the cell rows included, as ``Relaxer`` measures on the
  filter) < ``fmax``, ``STEP_CAP`` after ``max_steps`` steps, ``NONFINITE`` (energy, forces or stress NaN/inf:
  the structure is frozen where it was), ``GRAPH`` (its graph no longer fits the capacities or image window:
  a collapsing cell), ``DIVERGED`` (volume per atom outside [0.5, 500] A^3 or E < -50 eV/atom); else one step.
  Finished structures stay frozen (their rows are still evaluated: fixed shapes); the loop ends when none runs.

Units: A, eV, GPa (stress as :mod:`hgfn_jax.models.m3gnet_pes`). Pure and jit-able (``jax.jit(relax,
static_argnames=...)``); ``params`` from :func:`hgfn_jax.models.m3gnet_pes.load_params`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from hgfn_jax.crystal.lattice import params_to_matrix
from hgfn_jax.crystal.types import Crystal
from hgfn_jax.models import m3gnet_pes, m3gnet_pes_packed

# status codes
RUNNING, CONVERGED, STEP_CAP, NONFINITE, GRAPH, DIVERGED, SKIPPED = range(7)
STATUS_NAMES = ("running", "converged", "step_cap", "nonfinite", "graph_error", "diverged", "skipped")

FIRE_DEFAULTS = dict(dt=0.1, maxstep=0.2, dtmax=1.0, nmin=5, finc=1.1, fdec=0.5, astart=0.1, fa=0.99)
_EXPM_SQUARINGS = 6
_EXPM_ORDER = 10


def expm(a: jnp.ndarray) -> jnp.ndarray:
    """Matrix exponential of a [3, 3] matrix: Taylor series of order 10 on a / 2^6, squared 6 times."""
    a = a / float(2**_EXPM_SQUARINGS)
    eye = jnp.eye(a.shape[-1], dtype=a.dtype)
    term, out = eye, eye
    for k in range(1, _EXPM_ORDER + 1):
        term = term @ a / float(k)
        out = out + term
    for _ in range(_EXPM_SQUARINGS):
        out = out @ out
    return out


class RelaxState(NamedTuple):
    """Loop state, [B] leading axis on every field."""

    u: jnp.ndarray  # [B, N, 3] positions in the undeformed frame (A)
    x: jnp.ndarray  # [B, 3, 3] cell DOF: logm(F) * n_atoms
    vel: jnp.ndarray  # [B, N + 3, 3] FIRE velocity
    dt: jnp.ndarray  # [B]
    a: jnp.ndarray  # [B] FIRE mixing
    n_pos: jnp.ndarray  # [B] int32: FIRE's steps since the last uphill move (ASE ``Nsteps``)
    steps: jnp.ndarray  # [B] int32: optimizer steps taken
    energy: jnp.ndarray  # [B] eV: total energy at the last evaluation of a running structure
    fmax: jnp.ndarray  # [B] eV/A: generalised fmax at that evaluation
    status: jnp.ndarray  # [B] int32: RUNNING, CONVERGED, ...


class RelaxOutput(NamedTuple):
    cell: jnp.ndarray  # [B, 3, 3] final cell (rows, A), frame of the input cell
    positions: jnp.ndarray  # [B, N, 3] final Cartesian positions (A)
    energy: jnp.ndarray  # [B] eV total, of the final structure
    energy_per_atom: jnp.ndarray  # [B] eV/atom
    fmax: jnp.ndarray  # [B] eV/A
    steps: jnp.ndarray  # [B] int32
    status: jnp.ndarray  # [B] int32 (STATUS_NAMES)


def _deform(orig, u, x, alpha):
    f = expm(x / alpha)
    return f, orig @ f.T, u @ f.T


def _evaluate(params, orig, u, x, species, mask, alpha, k, k3, max_images, edge_capacity):
    """(energy [B], generalised forces [B, N + 3, 3], graph ok [B], finite [B], volume [B]) of the batch.

    ``edge_capacity`` None: the padded potential (``vmap`` of :func:`hgfn_jax.models.m3gnet_pes._efs`, K slots
    per atom); an int: the packed one (:func:`hgfn_jax.models.m3gnet_pes_packed.efs_batch`, that many bond slots
    per structure). Same numbers; the graph is rebuilt from the current geometry at every evaluation.
    """
    f_mat, vjp = jax.vjp(jax.vmap(expm), x / alpha[:, None, None])
    cell = jnp.einsum("bij,bkj->bik", orig, f_mat)
    pos = jnp.einsum("bnj,bkj->bnk", u, f_mat)
    if edge_capacity is None:
        e, forces, stress, ok, finite = jax.vmap(
            lambda c, p, z, m: m3gnet_pes._efs(params, c, p, z, m, k, k3, max_images, False)
        )(cell, pos, species, mask)
    else:
        e, forces, stress, ok, finite = m3gnet_pes_packed.efs_batch(
            params, cell, pos, species, mask, edge_capacity, k, k3, max_images
        )
    volume = jnp.abs(jnp.linalg.det(cell))
    virial = -volume[:, None, None] * stress / m3gnet_pes.EV_PER_ANG3_TO_GPA  # eV: -V sigma (ASE's virial)
    (cell_force,) = vjp(virial @ jnp.linalg.inv(jnp.swapaxes(f_mat, 1, 2)))
    gen = jnp.concatenate([jnp.einsum("bnj,bjk->bnk", forces, f_mat), cell_force / alpha[:, None, None]], axis=1)
    return e, gen, ok, finite, volume


def _check(cell, positions, species, mask):
    return m3gnet_pes_packed.check_batch_inputs(cell, positions, species, mask, "relax")


def _constants(fire: dict) -> dict:
    unknown = set(fire) - set(FIRE_DEFAULTS)
    if unknown:
        raise TypeError(f"unknown FIRE parameters {sorted(unknown)}; known: {sorted(FIRE_DEFAULTS)}")
    return {**FIRE_DEFAULTS, **fire}


def init(positions: jnp.ndarray, mask: jnp.ndarray, skip: jnp.ndarray | None = None, **fire) -> RelaxState:
    """Initial FIRE state of a batch (``positions`` [B, N, 3] A, ``mask`` [B, N]; ``skip`` [B]: padding)."""
    c = _constants(fire)
    positions = jnp.asarray(positions, jnp.float32)
    mask = jnp.asarray(mask, bool)
    b, n = mask.shape
    skip = jnp.zeros(b, bool) if skip is None else jnp.asarray(skip, bool)
    return RelaxState(
        u=jnp.where(mask[..., None], positions, 0.0),
        x=jnp.zeros((b, 3, 3), jnp.float32),
        vel=jnp.zeros((b, n + 3, 3), jnp.float32),
        dt=jnp.full(b, c["dt"], jnp.float32),
        a=jnp.full(b, c["astart"], jnp.float32),
        n_pos=jnp.zeros(b, jnp.int32),
        steps=jnp.zeros(b, jnp.int32),
        energy=jnp.full(b, jnp.nan, jnp.float32),
        fmax=jnp.full(b, jnp.nan, jnp.float32),
        status=jnp.where(skip | ~jnp.any(mask, axis=1), SKIPPED, RUNNING).astype(jnp.int32),
    )


def run(
    params: dict,
    state: RelaxState,
    cell: jnp.ndarray,
    species: jnp.ndarray,
    mask: jnp.ndarray,
    fmax: float = 0.1,
    max_steps: int = 500,
    max_iters: int | None = None,
    k: int = m3gnet_pes.DEFAULT_K,
    k3: int = m3gnet_pes.DEFAULT_K3,
    max_images: int = 2,
    edge_capacity: int | None = None,
    **fire,
) -> RelaxState:
    """Advance ``state`` (from :func:`init`, ``cell`` [B, 3, 3] the INITIAL cells) until no structure runs, or for
    at most ``max_iters`` loop iterations (evaluate + step each; ``None``: until done). Chunks of a few tens of
    iterations let a host loop replace finished structures by new ones (continuous batching)."""
    c = _constants(fire)
    cell = jnp.asarray(cell, jnp.float32)
    mask = jnp.asarray(mask, bool)
    species = jnp.asarray(species, jnp.int32)
    n = mask.shape[1]
    alpha = jnp.maximum(jnp.sum(mask, axis=1), 1).astype(jnp.float32)  # exp_cell_factor = number of atoms

    def body(carry):
        it, s = carry
        e, gen, ok, finite, volume = _evaluate(params, cell, s.u, s.x, species, mask, alpha, k, k3, max_images,
                                               edge_capacity)
        gen = jnp.where(jnp.isfinite(gen), gen, 0.0)
        fm = jnp.sqrt(jnp.max(jnp.sum(gen * gen, axis=-1), axis=-1))
        running = s.status == RUNNING
        vpa = volume / alpha
        diverged = (vpa < 0.5) | (vpa > 500.0) | (e / alpha < -50.0)
        new = jnp.select(
            [~ok, ~finite, diverged, fm < fmax, s.steps >= max_steps],
            [GRAPH, NONFINITE, DIVERGED, CONVERGED, STEP_CAP],
            RUNNING,
        ).astype(jnp.int32)
        status = jnp.where(running, new, s.status)
        energy = jnp.where(running, e, s.energy)
        fmax_out = jnp.where(running, fm, s.fmax)
        move = status == RUNNING

        # ASE FIRE.step with gradient = generalised forces (the velocity starts at zero on the first step).
        def vdot(p, q):
            return jnp.sum(p * q, axis=(1, 2))

        vf, g2, v2 = vdot(gen, s.vel), vdot(gen, gen), vdot(s.vel, s.vel)
        started = s.steps > 0
        downhill = started & (vf > 0.0)
        reset = started & ~(vf > 0.0)
        scale = s.a * jnp.sqrt(v2) / jnp.sqrt(jnp.maximum(g2, 1e-30))
        mixed = (1.0 - s.a)[:, None, None] * s.vel + scale[:, None, None] * gen
        vel = jnp.where(downhill[:, None, None], mixed, jnp.where(reset[:, None, None], 0.0, s.vel))
        grow = downhill & (s.n_pos > c["nmin"])
        dt = jnp.where(grow, jnp.minimum(s.dt * c["finc"], c["dtmax"]), s.dt)
        a = jnp.where(grow, s.a * c["fa"], s.a)
        n_pos = jnp.where(downhill, s.n_pos + 1, s.n_pos)
        dt = jnp.where(reset, dt * c["fdec"], dt)
        a = jnp.where(reset, c["astart"], a)
        n_pos = jnp.where(reset, 0, n_pos)
        vel = vel + dt[:, None, None] * gen
        dr = dt[:, None, None] * vel
        norm = jnp.sqrt(vdot(dr, dr))
        dr = dr * jnp.where(norm > c["maxstep"], c["maxstep"] / jnp.maximum(norm, 1e-30), 1.0)[:, None, None]

        m3 = move[:, None, None]
        return it + 1, RelaxState(
            u=jnp.where(m3, s.u + dr[:, :n], s.u),
            x=jnp.where(m3, s.x + dr[:, n:], s.x),
            vel=jnp.where(m3, vel, s.vel),
            dt=jnp.where(move, dt, s.dt),
            a=jnp.where(move, a, s.a),
            n_pos=jnp.where(move, n_pos, s.n_pos),
            steps=jnp.where(move, s.steps + 1, s.steps),
            energy=energy,
            fmax=fmax_out,
            status=status,
        )

    limit = max_steps + 1 if max_iters is None else max_iters  # fmax, max_steps, max_iters may be traced

    def cond(carry):
        it, s = carry
        return (it < limit) & jnp.any(s.status == RUNNING)

    return jax.lax.while_loop(cond, body, (jnp.zeros((), jnp.int32), state))[1]


def finalize(state: RelaxState, cell: jnp.ndarray, mask: jnp.ndarray) -> RelaxOutput:
    """Final cells and positions (frame of the initial ``cell`` [B, 3, 3]) of a state."""
    mask = jnp.asarray(mask, bool)
    alpha = jnp.maximum(jnp.sum(mask, axis=1), 1).astype(jnp.float32)
    f_mat = jax.vmap(expm)(state.x / alpha[:, None, None])
    final_cell = jnp.einsum("bij,bkj->bik", jnp.asarray(cell, jnp.float32), f_mat)
    final_pos = jnp.einsum("bnj,bkj->bnk", state.u, f_mat)
    return RelaxOutput(
        cell=final_cell,
        positions=jnp.where(mask[..., None], final_pos, 0.0),
        energy=state.energy,
        energy_per_atom=state.energy / alpha,
        fmax=state.fmax,
        steps=state.steps,
        status=state.status,
    )


def relax(
    params: dict,
    cell: jnp.ndarray,
    positions: jnp.ndarray,
    species: jnp.ndarray,
    mask: jnp.ndarray,
    fmax: float = 0.1,
    max_steps: int = 500,
    skip: jnp.ndarray | None = None,
    k: int = m3gnet_pes.DEFAULT_K,
    k3: int = m3gnet_pes.DEFAULT_K3,
    max_images: int = 2,
    edge_capacity: int | None = None,
    **fire,
) -> RelaxOutput:
    """Relax a batch to the end: ``cell`` [B, 3, 3] rows (A), ``positions`` [B, N, 3] Cartesian (A), ``species``
    [B, N] atomic numbers, ``mask`` [B, N] real sites; ``skip`` [B] bool: padding entries (status SKIPPED).
    ``fire``: overrides of :data:`FIRE_DEFAULTS`. ``edge_capacity``: None for the padded potential (K bond slots
    per atom), an int for the packed one (that many bond slots per structure; more bonds -> status GRAPH).
    ``k``, ``k3``, ``max_images``, ``edge_capacity``, ``max_steps`` and the FIRE constants are static under jit."""
    _constants(fire)
    cell, positions, species, mask = _check(cell, positions, species, mask)
    state = init(positions, mask, skip, **fire)
    state = run(params, state, cell, species, mask, fmax, max_steps, None, k, k3, max_images, edge_capacity, **fire)
    return finalize(state, cell, mask)


def relax_crystals(params: dict, crystals: Crystal, **kwargs) -> RelaxOutput:
    """:func:`relax` of a batched padded Crystal (cell in pymatgen's orientation of its lattice parameters);
    overflowed crystals are skipped (status SKIPPED)."""
    cell = jax.vmap(params_to_matrix)(jnp.asarray(crystals.lattice, jnp.float32))
    mask = jnp.asarray(crystals.mask, bool)
    pos = jnp.einsum("bni,bij->bnj", jnp.asarray(crystals.frac, jnp.float32), cell)
    skip = jnp.asarray(crystals.overflow, bool)
    if kwargs.get("skip") is not None:
        skip = skip | jnp.asarray(kwargs.pop("skip"), bool)
    kwargs.pop("skip", None)
    return relax(params, cell, pos, crystals.species, mask, skip=skip, **kwargs)
