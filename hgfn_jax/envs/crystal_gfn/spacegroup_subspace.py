"""Space-group subspace of Crystal-GFN (paper 001, sec. 4.1).

Three dimensions: crystal-lattice system (8 classes), point symmetry (5 classes) and space group. From the source
any dimension can be set; each choice restricts the others to the combinations that exist among the *feasible*
groups (allowed by the configuration/restrictions AND admitting at least one valid composition, so the
composition subspace never starts in a dead end). Setting the space group also sets its two classes (Mila
``SpaceGroup._set_constrained_properties``). Stop is allowed iff the space group is set.

Flat forward action index (size ``13 + G + 1``): ``0..7`` crystal-lattice system, ``8..12`` point symmetry,
``13..13+G-1`` space group (row of the environment's list), ``13+G`` stop.

Backward (parents of a state, as in Mila ``get_parents``): a state with the group set has 4 parents (the source,
class only, symmetry only, both) - 4 backward logits; a state with both classes and no group has 2 parents
(remove either) - 2 backward logits; a state with one class has the source as only parent.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from hgfn_jax.crystal import spacegroup as sgm
from hgfn_jax.envs.crystal_gfn.types import SpaceGroupState

N_CLS = 8
N_PS = 5
SG_OFFSET = N_CLS + N_PS  # 13
BWD_DIM = 6  # 4 parent types of a set group + 2 parents of a (cls, ps) state


@dataclasses.dataclass(frozen=True)
class SpaceGroupTables:
    groups: jnp.ndarray  # [G] int32 international numbers
    cls_of: jnp.ndarray  # [G] int32 crystal-lattice system of each group
    ps_of: jnp.ndarray  # [G] int32 point symmetry of each group
    lattice_system_of: jnp.ndarray  # [G] int32 lattice system (0..6) of each group
    ok: jnp.ndarray  # [G] bool: group allowed and feasible
    cls_given_ps: jnp.ndarray  # [N_PS + 1, N_CLS] bool: class reachable given the point symmetry (row 0 = unset)
    ps_given_cls: jnp.ndarray  # [N_CLS + 1, N_PS] bool
    n_groups: int

    @property
    def n_actions(self) -> int:
        return SG_OFFSET + self.n_groups + 1


def build_tables(groups: np.ndarray, ok: np.ndarray) -> SpaceGroupTables:
    host = sgm.host_tables()
    groups = np.asarray(groups, np.int32)
    ok = np.asarray(ok, bool)
    cls_of = host["crystal_lattice_system"][groups].astype(np.int32)
    ps_of = host["point_symmetry"][groups].astype(np.int32)
    pair = np.zeros((N_CLS, N_PS), bool)  # some feasible group has this (cls, ps)
    np.logical_or.at(pair, (cls_of[ok], ps_of[ok]), True)
    cls_given_ps = np.concatenate([pair.any(axis=1)[None, :], pair.T], axis=0)
    ps_given_cls = np.concatenate([pair.any(axis=0)[None, :], pair], axis=0)
    return SpaceGroupTables(
        groups=jnp.asarray(groups),
        cls_of=jnp.asarray(cls_of),
        ps_of=jnp.asarray(ps_of),
        lattice_system_of=jnp.asarray(host["lattice_system"][groups].astype(np.int32)),
        ok=jnp.asarray(ok),
        cls_given_ps=jnp.asarray(cls_given_ps),
        ps_given_cls=jnp.asarray(ps_given_cls),
        n_groups=len(groups),
    )


def init_state() -> SpaceGroupState:
    m1 = -jnp.ones((), jnp.int32)
    return SpaceGroupState(cls=m1, ps=m1, row=m1)


def forward_mask(tab: SpaceGroupTables, s: SpaceGroupState) -> jnp.ndarray:
    """``[13 + G + 1] bool``: allowed actions from ``s``."""
    sg_unset = s.row < 0
    sg_ok = sg_unset & tab.ok & ((s.cls < 0) | (tab.cls_of == s.cls)) & ((s.ps < 0) | (tab.ps_of == s.ps))
    cls_ok = (s.cls < 0) & sg_unset & tab.cls_given_ps[s.ps + 1]
    ps_ok = (s.ps < 0) & sg_unset & tab.ps_given_cls[s.cls + 1]
    return jnp.concatenate([cls_ok, ps_ok, sg_ok, (~sg_unset)[None]])


def step(tab: SpaceGroupTables, s: SpaceGroupState, index: jnp.ndarray) -> SpaceGroupState:
    """Applies a non-stop action (the stop index is handled by the environment)."""
    is_cls = index < N_CLS
    is_ps = (index >= N_CLS) & (index < SG_OFFSET)
    is_sg = index >= SG_OFFSET
    row = jnp.clip(index - SG_OFFSET, 0, tab.n_groups - 1)
    cls = jnp.where(is_cls, index, jnp.where(is_sg, tab.cls_of[row], s.cls))
    ps = jnp.where(is_ps, index - N_CLS, jnp.where(is_sg, tab.ps_of[row], s.ps))
    row_next = jnp.where(is_sg, row, s.row)
    return SpaceGroupState(cls=cls.astype(jnp.int32), ps=ps.astype(jnp.int32), row=row_next.astype(jnp.int32))


def log_pb(bwd: jnp.ndarray | None, nxt: SpaceGroupState, prev: SpaceGroupState) -> jnp.ndarray:
    """log P_B(prev | nxt) for a non-stop transition. ``bwd``: the 6 backward logits (None = uniform)."""
    if bwd is None:
        bwd = jnp.zeros(BWD_DIM, jnp.float32)
    parent_type = (prev.cls >= 0).astype(jnp.int32) + 2 * (prev.ps >= 0).astype(jnp.int32)
    lp_group = jax.nn.log_softmax(bwd[:4])[parent_type]
    # parent of a (cls, ps) state: removed cls (prev has ps only, type 2) or removed ps (prev has cls only, type 1)
    lp_pair = jax.nn.log_softmax(bwd[4:6])[jnp.where(prev.cls >= 0, 1, 0)]
    both = (nxt.cls >= 0) & (nxt.ps >= 0)
    return jnp.where(nxt.row >= 0, lp_group, jnp.where(both, lp_pair, 0.0))

