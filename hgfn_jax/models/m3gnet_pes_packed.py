"""M3GNet-MP-2021.2.8-PES for a BATCH with the real bonds packed into one list: energy, forces, stress.

Same function as :mod:`hgfn_jax.models.m3gnet_pes` (same graph, same three-body semantics, same units and
conventions: total energy eV, forces ``-dE/dr`` eV/A, stress ``(1/V) dE/d eps`` GPa, positive = tensile), laid out
as :func:`hgfn_jax.models.m3gnet.energy_batch`: the padded radius graph of each crystal (``[N, K]`` rows,
:func:`hgfn_jax.models.m3gnet_pes.build_graph`) is only an index table; the bonds that exist are packed and every
per-bond layer (edge embedding, three-body bond update, the two gated convolutions: ~95 % of the work) runs on
real bonds only, not on ``N * K`` padded slots. The three-body angular sums stay on the padded rows (the first
``k3`` bonds of each atom; ``[N, k3, k3]`` triples, a few % of the work) and are gathered onto the packed bonds.

Capacity: each crystal of the batch owns ``edge_capacity`` bond slots (static; default ``N * EDGES_PER_SITE``)
rather than sharing one pool, so whether a crystal fits depends on that crystal alone (a dense or NaN batch
mate can never push it out, and results do not depend on batch composition). A crystal with more bonds
within 5 A than its capacity is refused (``valid`` False, energy/forces/stress NaN), as for a capacity ``k`` or
``k3`` overflow: never a silently truncated graph.

Geometry changes under relaxation: the graph is rebuilt from the positions at every evaluation (this module is
called once per FIRE step inside the relaxation loop; :mod:`hgfn_jax.models.fire`), so there is no skin and no
stale neighbour list; a crystal whose bonds outgrow the capacity mid-relaxation is stopped by the relaxer with
status ``GRAPH`` (:class:`hgfn_jax.metrics.relax_jax.JaxRelaxer` then retries it from its input with the
largest capacities). Rebuilding costs an ``N^2 (2 max_images + 1)^3`` distance table per step, small next to
the model at these sizes; a Verlet skin would save it at the price of a second, larger capacity.

Forces and stress are exact derivatives of the energy on the packed graph (bond vectors rebuilt from positions,
integer image offsets and the cell; a per-crystal symmetric strain ``eps`` applied as ``r -> r (I + eps)``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from hgfn_jax.models.layers import dense
from hgfn_jax.models.m3gnet import MAX_N, _gated_mlp, _spherical_bessel
from hgfn_jax.models.m3gnet_pes import (
    CUTOFF,
    DEFAULT_K,
    DEFAULT_K3,
    EV_PER_ANG3_TO_GPA,
    _three_body_geometry,
    build_graph,
)

EDGES_PER_SITE = 48  # default bond slots per padded site (data set: median ~33 bonds per atom within 5 A)


def _pack(edge_mask: jnp.ndarray, capacity: int):
    """Flat slots [C] of the first ``capacity`` real bonds of one crystal's [N, K] table, and which are real."""
    (slot,) = jnp.nonzero(edge_mask.reshape(-1), size=capacity, fill_value=0)
    real = jnp.arange(capacity) < jnp.sum(edge_mask)
    return slot.astype(jnp.int32), real


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

    # packed bonds row -> nbr (flat atom index b * N + i), their vectors and lengths
    row_l, rank = slot // kk, slot % kk  # [B, C]
    nbr_l = g.nbr.reshape(b, -1)[bi, slot]
    off = g.offset.reshape(b, -1, 3)[bi, slot]
    vec = pos[bi, nbr_l] + jnp.einsum("bcd,bde->bce", off, cell) - pos[bi, row_l]
    vec = jnp.einsum("bcd,bde->bce", vec, strain).reshape(-1, 3)
    em = real.reshape(-1)
    safe = jnp.where(em[:, None], vec, far)
    r = jnp.sqrt(jnp.sum(safe * safe, axis=-1))  # [E]
    src = (bi * n + row_l).reshape(-1)
    dst = (bi * n + nbr_l).reshape(-1)
    in3 = (rank < k3).reshape(-1) & em  # the bond's three-body message (0 beyond the first k3 slots)
    slot3 = (bi * n * k3 + row_l * k3 + jnp.minimum(rank, k3 - 1)).reshape(-1)

    nv = b * n
    rbf = _spherical_bessel(r, params["rbf_roots"], params["rbf_inv_norm"], CUTOFF)  # [E, 9]
    v = params["node_embedding"][jnp.maximum(index, 0)]  # [V, 64]
    e = jax.nn.silu(dense(params["edge_embedding"], rbf))  # [E, 64]
    emf = em[:, None].astype(e.dtype)

    def conv_gated(p, v, e):  # gated MLP of [v_src, v_dst, e], first layer split per atom
        d = v.shape[-1]
        first = {}
        for name in ("layers", "gates"):
            w, bias = p[name][0]["w"], p[name][0]["b"]
            first[name] = (v @ w[:d])[src] + (v @ w[d : 2 * d])[dst] + e @ w[2 * d :] + bias
        return _gated_mlp(p, None, first=first)

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


def efs_batch(params, cell, positions, species, mask, edge_capacity=None, k=DEFAULT_K, k3=DEFAULT_K3,
              max_images=2, overflow=None):
    """(energy [B], forces [B, N, 3], stress [B, 3, 3], graph ok [B], finite [B]), unmasked.

    ``cell`` [B, 3, 3] rows (A), ``positions`` [B, N, 3] Cartesian (A), ``species`` [B, N] atomic numbers,
    ``mask`` [B, N] real sites; ``edge_capacity`` (static): bond slots per crystal (default
    ``N * EDGES_PER_SITE``). ``ok`` is False where the graph is incomplete (capacities ``k``, ``k3``,
    ``edge_capacity`` or the image window exceeded), an element is unsupported, no atom, or ``overflow``.
    """
    cell = jnp.asarray(cell, jnp.float32)
    positions = jnp.asarray(positions, jnp.float32)
    mask = jnp.asarray(mask, bool)
    b, n = mask.shape
    capacity = n * EDGES_PER_SITE if edge_capacity is None else int(edge_capacity)
    if capacity < 1:
        raise ValueError(f"edge_capacity must be >= 1, got {capacity}")
    index = params["z_to_index"][jnp.clip(jnp.asarray(species, jnp.int32), 0, 118)]  # [B, N]
    supported = jnp.all(~mask | (index >= 0), axis=1)
    frac = jnp.where(mask[..., None], jnp.einsum("bnd,bde->bne", positions, jnp.linalg.inv(cell)), 0.0)
    g = jax.vmap(lambda c, f, m: build_graph(c, f, m, k, k3, max_images))(cell, frac, mask)
    slot, real = jax.vmap(lambda m: _pack(m, capacity))(g.edge_mask)
    fits = jnp.sum(g.edge_mask, axis=(1, 2)) <= capacity

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
