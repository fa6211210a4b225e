"""M3GNet-MP-2021.2.8-PES (matgl's universal potential) in JAX: total energy, forces and stress by autodiff.

Reproduces the fixed host model (``hgfn_jax.models.matgl.load_model("M3GNet-MP-2021.2.8-PES")``: matgl 4.1.2
with ``matgl_fix`` fix 1, destination aggregation). The PES checkpoint was trained with matgl's CURRENT
three-body semantics (``matgl_fix.CHECKPOINTS``: fix 2 is Eform-only), checked against the host in
tests/models/test_m3gnet_pes_jax.py. Same blocks as :mod:`hgfn_jax.models.m3gnet` (shared code: spherical Bessel
basis, polynomial cutoff, gated MLPs, graph convolution), with the checkpoint's own settings (``model.json``,
checked on load):

- graph: every directed pair within 5 A (row ``i`` holds the bonds ``i -> j``, ascending length, K slots);
  bond input 9 spherical Bessel functions of the length (cutoff 5 A) -> Linear + SiLU to 64;
- three-body (matgl >= 2023-08 semantics) over the bonds within ``THREEBODY_CUTOFF`` = 4 A, for bond
  ``i -> j`` and the other bonds ``i -> k`` of atom ``i`` also within 4 A:
  ``m_ij = f_c(r_ij) sum_k SBF(r_ik) Y_l0(cos theta_jik) sigmoid(W v_k + b) f_c(r_ik)`` (SBF with the 5 A
  cutoff, f_c the polynomial cutoff of r / 4 A), ``e_ij += GatedMLP(m)``; the sums run over the first
  ``k3`` slots of each row (all bonds within 4 A when at most ``k3``, else ``valid`` is False);
- 3 blocks of three-body update + graph convolution (fix 1: node messages summed onto the bond's end atom);
- per-atom readout (``is_intensive=False``, matgl ``WeightedReadOut``): ``GatedMLP`` [64 -> 64 -> 64 -> 64 -> 1]
  without the last SiLU, summed over the atoms;
- matgl ``Potential``: ``E = data_std * sum_atoms out + data_mean + sum_atoms element_ref[Z]`` (eV; std
  4.586, mean 0, 89 element references from the state dict).

Conventions: energies in eV per cell (``energy`` returns the TOTAL energy, not per atom); forces
``-dE/dr`` in eV/A, on the Cartesian positions ``frac @ matrix`` with ``matrix`` = the lattice rows in
pymatgen's ``Lattice.from_parameters`` orientation (:func:`hgfn_jax.crystal.lattice.params_to_matrix`) for
:func:`energy_forces_stress`, or the caller's own cell for :func:`energy_forces_stress_cell`; stress
``sigma = (1 / V) dE/d eps`` in GPa for a symmetric strain ``eps`` applied as ``r -> r (I + eps)``, ``L -> L (I +
eps)`` (rows), exactly matgl ``Potential``'s (160.21766208 GPa per eV/A^3; positive = the cell wants to shrink,
i.e. tensile stress; matgl calls its sign "compressive-negative"). ASE's stress is ``sigma / 160.2177`` eV/A^3
with the same sign (``hgfn_jax.metrics.relax`` hands matgl's stress to ASE as ``s * units.GPa``).

The graph (which pairs, which periodic images) is found without gradient by
:func:`hgfn_jax.crystal.geometry.neighbor_list`; bond vectors are then rebuilt from positions, integer image
offsets and the cell, so that forces and stress are exact derivatives of the energy on that graph (the
energy is continuous across graph changes: every term vanishes smoothly at the cutoffs).

Measured (``python -m benchmarks.check_pes_jax``, 250 data-set cells <= 40 sites + 250 rattled copies): max
|dE| 3.3e-6 eV/atom, |dF| 4.3e-4 eV/A, |dS| 2.9e-4 GPa against the fixed host potential.

The same function for a batch with the real bonds packed into one list (the per-bond layers on real bonds only):
:mod:`hgfn_jax.models.m3gnet_pes_packed` (what the JAX relaxer uses).

``valid`` is False (energy, forces and stress NaN) for: an overflowed crystal, an element outside the model's 89,
no atom, more than ``k`` bonds within 5 A or more than ``k3`` within 4 A at some atom, the image window
too small (``max_images``), a non-finite result. A cell without any bond within 5 A is valid (as on the host:
the per-atom readout of the bare embeddings plus the references, zero forces and stress).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from hgfn_jax.crystal.geometry import neighbor_list
from hgfn_jax.crystal.lattice import matrix_to_params, params_to_matrix
from hgfn_jax.crystal.types import Crystal
from hgfn_jax.models import convert
from hgfn_jax.models.layers import dense
from hgfn_jax.models.m3gnet import (
    _COS_EPS,
    _Y00,
    _Y10,
    _Y20,
    MAX_N,
    _conv_gated,
    _gated,
    _gated_mlp,
    _polynomial_cutoff,
    _spherical_bessel,
    shared_params,
)
from hgfn_jax.models.m3gnet import (
    _EXPECTED_CONFIG as _EFORM_CONFIG,
)

NAME = "M3GNet-MP-2021.2.8-PES"
CUTOFF = 5.0
THREEBODY_CUTOFF = 4.0
DEFAULT_K = 80  # bonds per atom within 5 A (data set <= 40 sites: max 80, see m3gnet.DEFAULT_K)
DEFAULT_K3 = 48  # bonds per atom within 4 A entering the three-body sums ((4/5)^3 of the 5 A count: ~41 max)
EV_PER_ANG3_TO_GPA = 160.21766208  # matgl.utils.constants

_EXPECTED_CONFIG = {
    **_EFORM_CONFIG,
    "is_intensive": False,
    "readout_type": "weighted_atom",
    "threebody_cutoff": THREEBODY_CUTOFF,
}


def params_from_arrays(arrays: dict[str, np.ndarray]) -> dict:
    """The parameter PyTree of :func:`energy` from :func:`hgfn_jax.models.convert.checkpoint_arrays`."""
    convert.check_config(arrays, _EXPECTED_CONFIG, NAME)
    a = arrays
    params = {
        "data_mean": np.float32(a["_meta.target_mean"]),
        "data_std": np.float32(a["_meta.target_std"]),
        "element_refs": a["_meta.element_refs"].astype(np.float32),
        **shared_params(a),
        "readout": _gated(a, "final_layer.gated", 4),
    }
    return jax.tree_util.tree_map(jnp.asarray, params)


def load_params(model_dir: str | Path | None = None) -> dict:
    """Parameters of M3GNet-MP-2021.2.8-PES (converted once, cached on disk and per process)."""
    return convert.cached_params(NAME, None if model_dir is None else str(model_dir), params_from_arrays)


class PesGraph(NamedTuple):
    """Bonds of one crystal within 5 A (no gradient): row ``i`` holds ``i -> nbr[i, k]`` at image ``offset``."""

    nbr: jnp.ndarray  # [N, K] int32 end atom (0 where masked)
    offset: jnp.ndarray  # [N, K, 3] float32 integer image offset in the cell's basis
    edge_mask: jnp.ndarray  # [N, K] bool
    ok: jnp.ndarray  # [] bool: complete (capacities k, k3 and the image window sufficed), some atom


def build_graph(cell: jnp.ndarray, frac: jnp.ndarray, mask: jnp.ndarray, k: int, k3: int, max_images: int) -> PesGraph:
    """Radius graph of the cell ``cell`` [3, 3] (rows, A) and fractional coordinates ``frac`` [N, 3]."""
    cell, frac = jax.lax.stop_gradient(cell), jax.lax.stop_gradient(frac)
    c = Crystal(
        lattice=matrix_to_params(cell),
        frac=frac,
        species=jnp.zeros(frac.shape[0], jnp.int32),
        mask=mask,
        spacegroup=jnp.zeros((), jnp.int32),
        overflow=jnp.zeros((), bool),
    )
    nl = neighbor_list(c, k=k, cutoff=CUTOFF, max_images=max_images)
    em = nl.nbr_mask & mask[:, None]
    over3 = jnp.any(em[:, k3] & (nl.dist[:, k3] <= THREEBODY_CUTOFF)) if k3 < k else jnp.zeros((), bool)
    ok = ~jnp.any(mask & (nl.count > k)) & ~nl.truncated & ~over3 & jnp.any(mask)
    return PesGraph(nl.idx, nl.offset.astype(jnp.float32), em, ok)


def _three_body_geometry(params: dict, safe: jnp.ndarray, r3: jnp.ndarray, em: jnp.ndarray):
    """(Y_l0 [N, K3, K3, 3], SBF(r) f_c [N, K3, 9], f_c [N, K3]) of the first K3 bonds of each row.

    ``safe`` [N, K3, 3] bond vectors (masked slots any nonzero vector), ``r3`` their lengths (A), ``em`` the
    real bonds; f_c is the polynomial cutoff at 4 A (0 beyond), Y[n, j, k] is 0 for k == j.
    """
    k3 = r3.shape[-1]
    em3 = em & (r3 <= THREEBODY_CUTOFF)
    fc3 = jnp.where(em3, _polynomial_cutoff(r3, THREEBODY_CUTOFF), 0.0)  # [N, K3]
    unit = safe / r3[..., None]
    cos = jnp.clip(jnp.einsum("nad,nbd->nab", unit, unit), -1.0 + _COS_EPS, 1.0 - _COS_EPS)  # [N, K3, K3]
    other = ~jnp.eye(k3, dtype=bool)  # neighbour bond i -> k != j
    ylm = jnp.stack([jnp.full_like(cos, _Y00), _Y10 * cos, _Y20 * (3.0 * cos * cos - 1.0)], axis=-1)
    ylm = jnp.where(other[None, :, :, None], ylm, 0.0)  # [N, K3(j), K3(k), 3]
    sbf3 = _spherical_bessel(r3, params["sbf_roots"], params["sbf_inv_norm"], CUTOFF) * fc3[..., None]  # [N, K3, 9]
    return ylm, sbf3, fc3


def _model_energy(params: dict, index: jnp.ndarray, nm: jnp.ndarray, g: PesGraph, vec: jnp.ndarray, k3: int):
    """Total energy (eV) from bond vectors ``vec`` [N, K, 3] (differentiable) on the graph ``g``."""
    n, kk = g.nbr.shape
    k3 = min(k3, kk)
    em, nbr = g.edge_mask, g.nbr
    safe = jnp.where(em[..., None], vec, jnp.array([0.5 * CUTOFF, 0.0, 0.0], vec.dtype))  # no 0/0 in masked slots
    r = jnp.sqrt(jnp.sum(safe * safe, axis=-1))  # [N, K]

    # Three-body geometry over the first k3 slots (all bonds within 4 A; checked in build_graph).
    ylm, sbf3, fc3 = _three_body_geometry(params, safe[:, :k3], r[:, :k3], em[:, :k3])

    rbf = _spherical_bessel(r, params["rbf_roots"], params["rbf_inv_norm"], CUTOFF)  # [N, K, 9]
    v = params["node_embedding"][jnp.maximum(index, 0)]  # [N, 64]
    e = jax.nn.silu(dense(params["edge_embedding"], rbf))  # [N, K, 64]
    emf = em[..., None].astype(e.dtype)
    pad = ((0, 0), (0, kk - k3), (0, 0))
    for block in params["blocks"]:
        atom = jax.nn.sigmoid(dense(block["atom"], v))  # [N, 9]
        t = (sbf3 * atom[nbr[:, :k3]]).reshape(n, k3, 3, MAX_N)  # neighbour bond i -> k: SBF(r_ik) f_c sigma(v_k)
        m = jnp.einsum("nabl,nblm->nalm", ylm, t).reshape(n, k3, 3 * MAX_N) * fc3[..., None]
        e = e + jnp.pad(_gated_mlp(block["bond"], m), pad)  # bias-free gated MLP: 0 where no triple
        e = e + _conv_gated(block["edge"], v, e, nbr) * (rbf @ block["edge_weight"]["w"])
        mess = _conv_gated(block["node"], v, e, nbr) * (rbf @ block["node_weight"]["w"]) * emf
        v = v + jax.ops.segment_sum(mess.reshape(n * kk, -1), nbr.reshape(-1), num_segments=n)

    atomic = _gated_mlp(params["readout"], v, activate_last=False)[:, 0]  # [N]
    refs = params["element_refs"][jnp.maximum(index, 0)]
    nmf = nm.astype(atomic.dtype)
    return params["data_std"] * jnp.sum(atomic * nmf) + params["data_mean"] + jnp.sum(refs * nmf)


def _efs(params, cell, positions, species, mask, k, k3, max_images, overflow):
    """(energy, forces, stress, graph ok, finite), unmasked: the body of :func:`energy_forces_stress_cell`."""
    cell = jnp.asarray(cell, jnp.float32)
    positions = jnp.asarray(positions, jnp.float32)
    mask = jnp.asarray(mask, bool)
    z = jnp.asarray(species, jnp.int32)
    index = params["z_to_index"][jnp.clip(z, 0, 118)]
    supported = jnp.all(~mask | (index >= 0))
    frac = jnp.where(mask[:, None], positions @ jnp.linalg.inv(cell), 0.0)
    g = build_graph(cell, frac, mask, k, k3, max_images)

    def total(pos, eps):
        strain = jnp.eye(3, dtype=pos.dtype) + 0.5 * (eps + eps.T)
        vec = pos[g.nbr] + g.offset @ cell - pos[:, None, :]  # bond i -> nbr image (matgl's bond vector)
        return _model_energy(params, index, mask, g, vec @ strain, k3)

    e, (d_pos, d_eps) = jax.value_and_grad(total, argnums=(0, 1))(positions, jnp.zeros((3, 3), jnp.float32))
    forces = jnp.where(mask[:, None], -d_pos, 0.0)
    stress = d_eps * (EV_PER_ANG3_TO_GPA / jnp.abs(jnp.linalg.det(cell)))
    ok = ~jnp.asarray(overflow, bool) & g.ok & supported
    finite = jnp.isfinite(e) & jnp.all(jnp.isfinite(forces)) & jnp.all(jnp.isfinite(stress))
    return e, forces, stress, ok, finite


def energy_forces_stress_cell(
    params: dict,
    cell: jnp.ndarray,
    positions: jnp.ndarray,
    species: jnp.ndarray,
    mask: jnp.ndarray,
    k: int = DEFAULT_K,
    k3: int = DEFAULT_K3,
    max_images: int = 2,
    overflow: jnp.ndarray | bool = False,
):
    """(energy eV [], forces eV/A [N, 3], stress GPa [3, 3], valid []) of one cell in any orientation.

    ``cell`` [3, 3]: lattice vectors as rows (A); ``positions`` [N, 3] Cartesian (A), rows of padding sites
    ignored; ``species`` [N] atomic numbers; ``mask`` [N] real sites. Forces on padding sites are 0.
    """
    e, forces, stress, ok, finite = _efs(params, cell, positions, species, mask, k, k3, max_images, overflow)
    valid = ok & finite
    nan = jnp.nan
    return jnp.where(valid, e, nan), jnp.where(valid, forces, nan), jnp.where(valid, stress, nan), valid


def energy_forces_stress(params: dict, crystal: Crystal, k: int = DEFAULT_K, k3: int = DEFAULT_K3, max_images: int = 2):
    """(energy eV, forces eV/A [N, 3], stress GPa [3, 3], valid) of one padded crystal (vmap for a batch).

    Cartesian frame: ``frac @ params_to_matrix(crystal.lattice)`` (pymatgen's orientation for these parameters,
    the frame of ``hgfn_jax.crystal.convert.to_structure``).
    """
    cell = params_to_matrix(crystal.lattice)
    mask = jnp.asarray(crystal.mask, bool)
    pos = jnp.where(mask[:, None], jnp.asarray(crystal.frac, jnp.float32) @ cell, 0.0)
    return energy_forces_stress_cell(params, cell, pos, crystal.species, mask, k, k3, max_images, crystal.overflow)


def energy(params: dict, crystal: Crystal, k: int = DEFAULT_K, k3: int = DEFAULT_K3, max_images: int = 2):
    """(total energy in eV [], valid []) of one padded crystal, no derivatives; NaN where not valid."""
    cell = params_to_matrix(crystal.lattice)
    mask = jnp.asarray(crystal.mask, bool)
    frac = jnp.where(mask[:, None], jnp.asarray(crystal.frac, jnp.float32), 0.0)
    z = jnp.asarray(crystal.species, jnp.int32)
    index = params["z_to_index"][jnp.clip(z, 0, 118)]
    g = build_graph(cell, frac, mask, k, k3, max_images)
    vec = (frac[g.nbr] + g.offset - frac[:, None, :]) @ cell
    e = _model_energy(params, index, mask, g, vec, k3)
    valid = ~jnp.asarray(crystal.overflow, bool) & g.ok & jnp.all(~mask | (index >= 0)) & jnp.isfinite(e)
    return jnp.where(valid, e, jnp.nan), valid
