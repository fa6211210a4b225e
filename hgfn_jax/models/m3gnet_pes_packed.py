"""M3GNet-MP-2021.2.8-PES for a BATCH with the real bonds packed into one list: energy, forces, stress.

Same function as :mod:`hgfn_jax.models.m3gnet_pes` (same graph, same three-body semantics, same units and
conventions: total energy eV, forces ``-dE/dr`` eV/A, stress ``(1/V) dE/d eps`` GPa, positive = tensile), laid out
as :func:`hgfn_jax.models.m3gnet.energy_batch`: the padded radius graph of each crystal (``[N, K]`` rows,
:func:`hgfn_jax.models.m3gnet_pes.build_graph`) is only an index table; the bonds that exist are packed and every
per-bond layer (edge embedding, three-body bond update, the two gated convolutions: by flop count nearly all of
the work) runs on real bonds only, not on ``N * K`` padded slots. The three-body angular sums stay on the padded
rows (the first ``k3`` bonds of each atom; ``[N, k3, k3]`` triples, a small part of the flops) and are gathered
onto the packed bonds.

Capacity: the batch shares one pool of ``B * edge_capacity`` bond slots (static; default ``edge_capacity = N *
EDGES_PER_SITE``), filled in crystal order; a crystal whose bonds do not all fit is refused (``valid`` False,
energy/forces/stress NaN), as for a capacity ``k`` or ``k3`` overflow: never a silently truncated graph. A shared
pool (not a fixed share per crystal) is what makes packing pay: its size follows the batch's MEAN bond count
(data-set cells: median ~33 bonds per atom within 5 A, max 80) and the padding sites of small cells cost nothing;
with a fixed share per crystal every share must hold the densest cell, which is as many slots as ``N * K``
padded rows (measured: no faster than padded). The price: when the pool overflows, the crystals after the
overflow point are refused even if another one grew (the relaxer retries them, see below). The numbers of a
crystal that fits do not depend on its batch mates (a NaN crystal has no bonds at all).

Geometry changes under relaxation: the graph is rebuilt from the positions at every evaluation (this module is
called once per FIRE step inside the relaxation loop; :mod:`hgfn_jax.models.fire`), so there is no skin and no
stale neighbour list; a crystal whose bonds outgrow the pool mid-relaxation is stopped by the relaxer with
status ``GRAPH`` (:class:`hgfn_jax.metrics.relax_jax.JaxRelaxer` then retries it from its input with the
largest capacities). Rebuilding costs an ``N^2 (2 max_images + 1)^3`` distance table per step, ~1 % of an
energy+forces+stress call (20 sites, batch 32, CPU): a Verlet skin would save little and cost a larger capacity.

Forces and stress are exact derivatives of the energy on the packed graph (bond vectors rebuilt from positions,
integer image offsets and the cell; a per-crystal symmetric strain ``eps`` applied as ``r -> r (I + eps)``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from hgfn_jax.models.layers import dense
from hgfn_jax.models.m3gnet import MAX_N, _gated_mlp, _spherical_bessel, conv_gated_packed
from hgfn_jax.models.m3gnet_pes import (
    CUTOFF,
    DEFAULT_K,
    DEFAULT_K3,
    EV_PER_ANG3_TO_GPA,
    _three_body_geometry,
    build_graph,
)

EDGES_PER_SITE = 48  # default bond slots per padded site (data set: median ~33 bonds per atom within 5 A)


def _pack(edge_mask: jnp.ndarray, pool: int):
    """Flat slots [P] (into the [B * N * K] table) of the first ``pool`` real bonds of the batch, in crystal order;
    which slots are real; which crystals fit entirely."""
    flat = edge_mask.reshape(-1)
    (slot,) = jnp.nonzero(flat, size=pool, fill_value=0)
    real = jnp.arange(pool) < jnp.sum(flat)
    fits = jnp.cumsum(jnp.sum(edge_mask, axis=(1, 2))) <= pool
    return slot.astype(jnp.int32), real, fits


def _energies(params, index, mask, g, slot, real, pos, cell, strain, k3):
    """[B] total energies (eV) from positions [B, N, 3] (differentiable) on the packed graph."""
    b, n, kk = g.nbr.shape
    k3 = min(k3, kk)
    bi = jnp.arange(b)[:, None]
    far = jnp.array([0.5 * CUTOFF, 0.0, 0.0], pos.dtype)  # masked slots: a harmless bond (no 0/0)

    # three-body geometry on the padded rows (first k3 bonds of each atom)
    nbr3, em3 = g.nbr[:, :, :k3], g.edge_mask[:, :, :k3]
    vec3 = pos[bi[:, :, None], nbr3] + jnp.einsum("bnkd,bde->bnke", g.offset[:, :, :k3], cell) - pos[:, :, None]
    vec3 = jnp.einsum("bnkd,bde->bnke", vec3, strain)
    safe3 = jnp.where(em3[..., None], vec3, far)
    r3 = jnp.sqrt(jnp.sum(safe3 * safe3, axis=-1))
    ylm, sbf3, fc3 = jax.vmap(lambda s, r, m: _three_body_geometry(params, s, r, m))(safe3, r3, em3)

    # packed bonds src -> dst (flat atom index b * N + i), their vectors and lengths
    graph, src, rank = slot // (n * kk), slot // kk, slot % kk  # [E]
    dst = graph * n + g.nbr.reshape(-1)[slot]
    off = g.offset.reshape(-1, 3)[slot]
    flat_pos = pos.reshape(-1, 3)
    vec = flat_pos[dst] + jnp.einsum("ed,edf->ef", off, cell[graph]) - flat_pos[src]
    vec = jnp.einsum("ed,edf->ef", vec, strain[graph])
    em = real  # [E]
    safe = jnp.where(em[:, None], vec, far)
    r = jnp.sqrt(jnp.sum(safe * safe, axis=-1))  # [E]
    in3 = (rank < k3) & em  # the bond's three-body message (0 beyond the first k3 slots)
    slot3 = src * k3 + jnp.minimum(rank, k3 - 1)

    nv = b * n
    rbf = _spherical_bessel(r, params["rbf_roots"], params["rbf_inv_norm"], CUTOFF)  # [E, 9]
    v = params["node_embedding"][jnp.maximum(index, 0)]  # [V, 64]
    e = jax.nn.silu(dense(params["edge_embedding"], rbf))  # [E, 64]
    emf = em[:, None].astype(e.dtype)

    def conv_gated(p, v, e):  # gated MLP of [v_src, v_dst, e], first layer split per atom
        return conv_gated_packed(p, v, e, src, dst)

    for block in params["blocks"]:
        atom = jax.nn.sigmoid(dense(block["atom"], v)).reshape(b, n, -1)  # [B, N, 9]
        t = (sbf3 * atom[bi[:, :, None], nbr3]).reshape(b, n, k3, 3, MAX_N)  # bond i -> k: SBF f_c sigma(v_k)
        m = jnp.einsum("bnxyl,bnylm->bnxlm", ylm, t).reshape(b, n, k3, 3 * MAX_N) * fc3[..., None]
        m = jnp.where(in3[:, None], m.reshape(-1, 3 * MAX_N)[slot3], 0.0)  # [E, 9]
        e = e + _gated_mlp(block["bond"], m)  # bias-free gated MLP: 0 where no triple
        e = e + conv_gated(block["edge"], v, e) * (rbf @ block["edge_weight"]["w"])
        mess = conv_gated(block["node"], v, e) * (rbf @ block["node_weight"]["w"]) * emf
        v = v + jax.ops.segment_sum(mess, dst, num_segments=nv)

    atomic = _gated_mlp(params["readout"], v, activate_last=False)[:, 0]  # [V]
    per_atom = (params["data_std"] * atomic + params["element_refs"][jnp.maximum(index, 0)]).reshape(b, n)
    return jnp.sum(jnp.where(mask, per_atom, 0.0), axis=1) + params["data_mean"]


def check_batch_inputs(cell, positions, species, mask, what: str):
    """``(cell [B, 3, 3] f32, positions [B, N, 3] f32, species [B, N] i32, mask [B, N] bool)``, or one
    ValueError naming the shapes ``what`` expects."""
    cell = jnp.asarray(cell, jnp.float32)
    positions = jnp.asarray(positions, jnp.float32)
    mask = jnp.asarray(mask, bool)
    species = jnp.asarray(species, jnp.int32)
    if cell.ndim != 3 or positions.ndim != 3 or positions.shape[:2] != mask.shape or species.shape != mask.shape:
        raise ValueError(
            f"{what} expects cell [B, 3, 3], positions [B, N, 3], species and mask [B, N]; got {cell.shape}, "
            f"{positions.shape}, {species.shape}, {mask.shape}"
        )
    return cell, positions, species, mask


def efs_batch(params, cell, positions, species, mask, edge_capacity=None, k=DEFAULT_K, k3=DEFAULT_K3,
              max_images=2, overflow=None):
    """(energy [B], forces [B, N, 3], stress [B, 3, 3], graph ok [B], finite [B]), unmasked.

    ``cell`` [B, 3, 3] rows (A), ``positions`` [B, N, 3] Cartesian (A), ``species`` [B, N] atomic numbers,
    ``mask`` [B, N] real sites; ``edge_capacity`` (static): bond slots per crystal ON AVERAGE, the batch's pool
    holding ``B * edge_capacity`` (default ``N * EDGES_PER_SITE``). ``ok`` is False where the graph is
    incomplete (capacities ``k``, ``k3``, the pool (crystal order) or the image window exceeded), an element is
    unsupported, no atom, or ``overflow``. Building the graphs is ~1 % of the time (20 sites, batch 32, CPU)."""
    cell, positions, species, mask = check_batch_inputs(cell, positions, species, mask, "efs_batch")
    b, n = mask.shape
    capacity = n * EDGES_PER_SITE if edge_capacity is None else int(edge_capacity)
    if capacity < 1:
        raise ValueError(f"edge_capacity must be >= 1, got {capacity}")
    pool = b * capacity
    index = params["z_to_index"][jnp.clip(species, 0, 118)]  # [B, N]
    supported = jnp.all(~mask | (index >= 0), axis=1)
    frac = jnp.where(mask[..., None], jnp.einsum("bnd,bde->bne", positions, jnp.linalg.inv(cell)), 0.0)
    g = jax.vmap(lambda c, f, m: build_graph(c, f, m, k, k3, max_images))(cell, frac, mask)
    slot, real, fits = _pack(g.edge_mask, pool)

    def total(pos, eps):
        strain = jnp.eye(3, dtype=pos.dtype) + 0.5 * (eps + jnp.swapaxes(eps, 1, 2))
        e = _energies(params, index.reshape(-1), mask, g, slot, real, pos, cell, strain, k3)
        return jnp.sum(e), e  # crystals are independent: the gradient of the sum is each one's own

    (_, e), (d_pos, d_eps) = jax.value_and_grad(total, argnums=(0, 1), has_aux=True)(
        positions, jnp.zeros((b, 3, 3), jnp.float32)
    )
    forces = jnp.where(mask[..., None], -d_pos, 0.0)
    stress = d_eps * (EV_PER_ANG3_TO_GPA / jnp.abs(jnp.linalg.det(cell)))[:, None, None]
    ok = g.ok & fits & supported
    if overflow is not None:
        ok = ok & ~jnp.asarray(overflow, bool)
    finite = jnp.isfinite(e) & jnp.all(jnp.isfinite(forces), axis=(1, 2)) & jnp.all(jnp.isfinite(stress), axis=(1, 2))
    return e, forces, stress, ok, finite


def energy_forces_stress_batch(params, cell, positions, species, mask, edge_capacity=None, k=DEFAULT_K,
                               k3=DEFAULT_K3, max_images=2, overflow=None):
    """(energy eV [B], forces eV/A [B, N, 3], stress GPa [B, 3, 3], valid [B]) of a batch of cells; NaN where not
    valid. Same numbers as ``vmap(m3gnet_pes.energy_forces_stress_cell)`` (arguments as :func:`efs_batch`)."""
    e, f, s, ok, finite = efs_batch(params, cell, positions, species, mask, edge_capacity, k, k3, max_images, overflow)
    valid = ok & finite
    return (jnp.where(valid, e, jnp.nan), jnp.where(valid[:, None, None], f, jnp.nan),
            jnp.where(valid[:, None, None], s, jnp.nan), valid)
