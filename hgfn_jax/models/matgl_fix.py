"""Make the pretrained matgl checkpoints give the right numbers with matgl 4.1.2 (the pinned release).

The checkpoints in ``../shared/models`` (public matgl ``pretrained_models``) were trained with older matgl
code. Loaded with stock matgl 4.1.2 they give wrong predictions (MAE of the Eform models against DFT on 400
random structures of the CGCNN data set: M3GNet 0.839 eV/atom, MEGNet 0.280 eV/atom; see
``../shared/models/README.md``). Three causes, all fixed here without touching site-packages:

1. Node-update direction (MEGNet and M3GNet graph convolutions, every checkpoint). In matgl 4.1.2
   ``MEGNetGraphConv.node_update_`` (scatter-mean) and ``M3GNetGraphConv.node_update_`` (scatter-add)
   aggregate the edge messages onto the SOURCE atom ``edge_index[0]`` of each edge. The checkpoints were
   trained when DGL's ``update_all`` aggregated onto the DESTINATION atom ``edge_index[1]`` (matgl <= 2.0.x).
   Fix: the convolution instances of a loaded model get a subclass (``__class__`` swap) whose
   ``node_update_`` is the stock code with ``edge_index[1]`` as the scatter index.
2. Three-body semantics (M3GNet Eform checkpoint only, trained 2023-07-28). For a triplet of bonds
   ``i->j`` (receiving the message) and ``i->k`` (neighbour), matgl 4.1.2 (and every matgl after 2023-08-28)
   builds the triplet basis from the neighbour's length ``r_ik`` and gathers the neighbour's end atom ``k``;
   the checkpoint expects bond ``i->j``'s OWN length ``r_ij`` and OWN end atom ``j``:
   ``m_ij = sum_k SBF(r_ij) * SHF(cos theta_jik) * sigma(W v_j) * f_c(r_ij) * f_c(r_ik)``.
   Fix: the M3GNet instance gets a subclass whose ``forward`` builds the stock line graph and hands the stock
   ``M3GNet.forward`` a copy with the two rows of ``line_edge_index`` swapped (row 0 = neighbour bond
   ``i->k``, row 1 = receiving bond ``i->j``). Stock ``compute_theta_and_phi`` then takes the triplet length
   from row 1 (``r_ij``); the angle and the cutoff product are symmetric in the two bonds; the three-body
   layers get a subclass that gathers the end atom of, and scatters onto, row 1 (the receiving bond).
   The PES potential (M3GNet-MP-2021.2.8-PES) was trained with the new three-body semantics: fix 1 only.
3. Loading. ``model.pt`` pickles ``matgl.data.transformer.Normalizer``, which torch's ``weights_only`` loader
   refuses unless allow-listed (done here with the ``torch.serialization.safe_globals`` context manager, not
   globally), and the M3GNet Eform state dict names its LSTM ``readout.set2set.lstm.*`` where matgl 4.1.2
   expects ``readout.lstm.*`` (renamed on load). Our loader is strict: a missing parameter or an unexpected
   key is an error (stock ``load_state_dict(strict=False)`` would leave renamed weights random).

Guards (fail loudly if matgl changes again):

- ``matgl.__version__`` must be one of ``SUPPORTED_MATGL_VERSIONS``;
- the SHA-256 of the source text of every matgl function that is patched, wrapped or relied upon by the
  patches must equal the value recorded in ``_EXPECTED_SOURCE_SHA256`` (taken from matgl 4.1.2);
- the checkpoint's weights must have the content fingerprint recorded in ``CHECKPOINTS`` (the fixes are
  specific to these checkpoints; a re-trained model under the same name would need other fixes or none).

Any failed guard raises :class:`MatglCompatibilityError` naming what differs. Experts who have checked the new
matgl by hand can set ``HGFN_MATGL_SKIP_CHECKS=1``: failed guards then only warn. The accuracy tests in
``tests/models/test_matgl_models.py`` (MAE against DFT on real structures, LiFePO4 reference values) are the
final check either way.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import inspect
import json
import os
import warnings
from pathlib import Path

import torch

try:
    import matgl
    from matgl.graph._compute import compute_pair_vector_and_distance, create_line_graph
    from matgl.layers._graph_convolution import M3GNetGraphConv, MEGNetGraphConv
    from matgl.layers._three_body import ThreeBodyInteractions
    from matgl.models._m3gnet import M3GNet
    from matgl.utils.maths import scatter_add, scatter_mean, scatter_sum
except ImportError as _exc:  # a re-organised matgl: say so clearly instead of a bare ImportError
    raise ImportError(
        f"hgfn_jax.models.matgl_fix: cannot import the matgl internals it fixes ({_exc}); written for "
        "matgl 4.1.2 (see ../shared/models/README.md)"
    ) from _exc

SUPPORTED_MATGL_VERSIONS: frozenset[str] = frozenset({"4.1.2"})
SKIP_CHECKS_ENV = "HGFN_MATGL_SKIP_CHECKS"

# SHA-256 of inspect.getsource(...) in matgl 4.1.2, for every function patched (node_update_), replaced
# (ThreeBodyInteractions.forward), wrapped (M3GNet.forward) or relied upon by the patches.
_EXPECTED_SOURCE_SHA256: dict[str, str] = {
    "matgl.layers._graph_convolution:MEGNetGraphConv.node_update_": (
        "893d62b909f985d00bb4a802eb4b25af7370e0714ad6d797fe21d01a09a0a1f6"
    ),
    "matgl.layers._graph_convolution:MEGNetGraphConv.forward": (
        "b8dea4fe1840a7c56c275fac7d4eed420ca799421af006f4c99d54f8a4d40f1b"
    ),
    "matgl.layers._graph_convolution:M3GNetGraphConv.node_update_": (
        "3e64b67d5648c3e6f7260437f9cd2b8a922b52c177099df2b2574ed4f560f614"
    ),
    "matgl.layers._graph_convolution:M3GNetGraphConv.forward": (
        "a82de83579cac9c17f6b9fb97a40015aa02c1f0881a4bc248ad37248fbef7f12"
    ),
    "matgl.layers._three_body:ThreeBodyInteractions.forward": (
        "c5dc20f180fcc09e156855757cbf8e28b5358482ee15557f6a39ffbe16ed8c5b"
    ),
    "matgl.models._m3gnet:M3GNet.forward": "41f654ff188b4c07f69d3a04ab6b5ae68a20ba8fa51795032dcfbc583e82d6a8",
    "matgl.graph._compute:compute_theta_and_phi": (
        "532ea515e43097f368532bae3958d770a04e89e637299921e77ff6380beae36f"
    ),
    "matgl.graph._compute:create_line_graph": (
        "00096c5cf36db8001afc40acba05190857a5a33072396674cfd0614e1e5c74c4"
    ),
}

# State-dict key renames applied on load (old prefix -> matgl 4.1.2 prefix).
_KEY_RENAMES: tuple[tuple[str, str], ...] = (("model.readout.set2set.lstm.", "model.readout.lstm."),)
# Buffers that old checkpoints carry but matgl 4.1.2 derives (matgl's own list of benign extras).
_BENIGN_UNEXPECTED_SUFFIXES: tuple[str, ...] = (".onehot",)


class MatglCompatibilityError(RuntimeError):
    """The installed matgl (or a checkpoint) is not the one the fixes in this module were written for."""


@dataclasses.dataclass(frozen=True)
class CheckpointFixes:
    """Which fixes a checkpoint needs, and the fingerprint of the weights they were validated on."""

    destination_aggregation: bool  # fix 1
    own_bond_three_body: bool  # fix 2
    weights_sha256: str  # see weights_fingerprint()


CHECKPOINTS: dict[str, CheckpointFixes] = {
    "M3GNet-MP-2018.6.1-Eform": CheckpointFixes(
        True, True, "3d5ddd817975ef289f16d792c7f64d7ae322f12368c4ae1c0cfa88350ff7a441"
    ),
    "MEGNet-MP-2018.6.1-Eform": CheckpointFixes(
        True, False, "afc355829645d51a785c3df739d74fcdd4970a1fd1037df775ff7c0da4860891"
    ),
    "MEGNet-MP-2019.4.1-BandGap-mfi": CheckpointFixes(
        True, False, "7badd951b5343dd019362df4f10eec345f6899fbfd175773b22552face3505cd"
    ),
    "M3GNet-MP-2021.2.8-PES": CheckpointFixes(
        True, False, "0352c2b0b60c0e61129a596298f5a8be48014db92b60e1c077a9f41c343c33ef"
    ),
}


def _fail(message: str) -> None:
    if os.environ.get(SKIP_CHECKS_ENV, "") not in ("", "0"):
        warnings.warn(
            f"{message} (continuing because {SKIP_CHECKS_ENV} is set)", RuntimeWarning, stacklevel=3
        )
        return
    raise MatglCompatibilityError(
        f"{message}. The fixes in hgfn_jax/models/matgl_fix.py were written for matgl "
        f"{sorted(SUPPORTED_MATGL_VERSIONS)}; check the new matgl against ../shared/models/README.md and the "
        f"accuracy tests, then update the module, or set {SKIP_CHECKS_ENV}=1 to continue at your own risk."
    )


def _resolve(qualname: str):
    module_name, attr_path = qualname.split(":")
    obj = importlib.import_module(module_name)
    for part in attr_path.split("."):
        obj = getattr(obj, part)
    return obj


def source_sha256(obj) -> str:
    """SHA-256 (hex) of ``inspect.getsource(obj)``."""
    return hashlib.sha256(inspect.getsource(obj).encode("utf-8")).hexdigest()


_CHECKED = False


def check_matgl_compatibility() -> None:
    """Raise :class:`MatglCompatibilityError` unless matgl is a supported version with the expected sources.

    Runs once per process (cheap afterwards). Honours ``HGFN_MATGL_SKIP_CHECKS`` (warn instead of raise).
    """
    global _CHECKED
    if _CHECKED:
        return
    version = getattr(matgl, "__version__", "unknown")
    if version not in SUPPORTED_MATGL_VERSIONS:
        _fail(f"installed matgl version {version!r} is not supported ({sorted(SUPPORTED_MATGL_VERSIONS)})")
    changed = []
    for qualname, expected in _EXPECTED_SOURCE_SHA256.items():
        try:
            got = source_sha256(_resolve(qualname))
        except (ImportError, AttributeError, OSError, TypeError) as exc:
            changed.append(f"{qualname} (cannot read: {exc})")
            continue
        if got != expected:
            changed.append(f"{qualname} (source sha256 {got[:12]}..., expected {expected[:12]}...)")
    if changed:
        _fail(f"matgl {version}: the code patched by hgfn_jax differs from what the fix expects: {changed}")
    _CHECKED = True


# --------------------------------------------------------------------------------------------------------
# Fix 1: aggregate node updates onto the destination atom.
# --------------------------------------------------------------------------------------------------------
class DestinationMEGNetGraphConv(MEGNetGraphConv):
    """MEGNet convolution whose node update averages the messages of the edges arriving at each atom."""

    def node_update_(self, edge_index, edge_feat, node_feat, u_per_node, num_nodes):
        dst = edge_index[1]
        ve = scatter_mean(edge_feat, dst, dim_size=num_nodes, dim=0)
        inputs = torch.hstack([node_feat, ve, u_per_node])
        return self.node_func(inputs)


class DestinationM3GNetGraphConv(M3GNetGraphConv):
    """M3GNet convolution whose node update sums the messages of the edges arriving at each atom."""

    def node_update_(self, edge_index, edge_feat, node_feat, rbf, u_per_edge, num_nodes):
        src, dst = edge_index[0], edge_index[1]
        vi = node_feat[src]
        vj = node_feat[dst]
        if self.include_state:
            assert u_per_edge is not None
            inputs = torch.hstack([vi, vj, edge_feat, u_per_edge])
        else:
            inputs = torch.hstack([vi, vj, edge_feat])
        mess = self.node_update_func(inputs) * self.node_weight_func(rbf)
        return scatter_add(mess, dst, dim_size=num_nodes, dim=0)


# --------------------------------------------------------------------------------------------------------
# Fix 2: three-body update of bond i->j with its own length r_ij and own end atom j.
# --------------------------------------------------------------------------------------------------------
class OwnBondThreeBodyInteractions(ThreeBodyInteractions):
    """Three-body update for line graphs whose row 1 is the receiving bond (see ``OwnBondM3GNet``).

    ``m_ij = sum_k basis_t * sigma(W v_j) * f_c(r_ij) * f_c(r_ik)`` scattered onto bond ``i->j`` = row 1,
    with ``j`` the end atom of the receiving bond itself (the checkpoint's training semantics).
    """

    def forward(
        self,
        edge_dst_atom,
        line_edge_index,
        n_triple_ij,
        num_bonds,
        three_basis,
        three_cutoff,
        node_feat,
        edge_feat,
    ):
        bond_ik = line_edge_index[0].to(torch.long)  # neighbour bond i->k
        bond_ij = line_edge_index[1].to(torch.long)  # receiving bond i->j
        updated_atoms = self.update_network_atom(node_feat)
        end_atom_features = updated_atoms[edge_dst_atom[bond_ij].to(torch.long)]
        weights = three_cutoff[bond_ij] * three_cutoff[bond_ik]
        basis = three_basis * end_atom_features * weights[:, None]
        new_bonds = scatter_sum(basis.to(edge_feat.dtype), segment_ids=bond_ij, num_segments=num_bonds, dim=0)
        if new_bonds.shape[0] == 0:
            return edge_feat
        return edge_feat + self.update_network_bond(new_bonds)


class OwnBondM3GNet(M3GNet):
    """M3GNet whose three-body basis uses the receiving bond's own length (pre-2023-08-28 semantics).

    Builds the stock line graph (the same call as ``M3GNet.forward``) and passes the stock forward a copy with
    the rows of ``line_edge_index`` swapped, so that ``compute_theta_and_phi`` reads ``r_ij`` (row 1). Its
    three-body layers must be :class:`OwnBondThreeBodyInteractions` (``apply_fixes`` installs both).
    """

    def forward(self, g, state_attr=None, l_g=None, return_all_layer_output=False):
        if l_g is None:
            pbc_offshift = getattr(g, "pbc_offshift", None)
            bond_vec, bond_dist = compute_pair_vector_and_distance(g.pos, g.edge_index, pbc_offshift)
            l_g = create_line_graph(
                g.edge_index, bond_dist, bond_vec, pbc_offshift, g.pos.size(0), self.threebody_cutoff
            )
        swapped = dict(l_g)
        swapped["line_edge_index"] = l_g["line_edge_index"].flip(0)
        return super().forward(
            g, state_attr=state_attr, l_g=swapped, return_all_layer_output=return_all_layer_output
        )


def _swap_class(module: torch.nn.Module, base: type, new: type) -> int:
    """Give every submodule of exact type ``base`` the subclass ``new``; returns how many now have ``new``."""
    count = 0
    for sub in module.modules():
        if type(sub) is base:
            sub.__class__ = new
        count += type(sub) is new
    return count


def apply_fixes(model: torch.nn.Module, fixes: CheckpointFixes) -> torch.nn.Module:
    """Install fixes 1 (and 2 if ``fixes.own_bond_three_body``) on a loaded model, in place; returns it.

    Idempotent. Raises :class:`MatglCompatibilityError` (see module docstring) if matgl is not the expected
    code, and ``ValueError`` if the model lacks the layers the fixes target.
    """
    check_matgl_compatibility()
    if fixes.destination_aggregation:
        n = _swap_class(model, MEGNetGraphConv, DestinationMEGNetGraphConv)
        n += _swap_class(model, M3GNetGraphConv, DestinationM3GNetGraphConv)
        if n == 0:
            raise ValueError(f"{type(model).__name__} has no MEGNet/M3GNet graph convolution to fix")
    if fixes.own_bond_three_body:
        n_models = _swap_class(model, M3GNet, OwnBondM3GNet)
        n_layers = _swap_class(model, ThreeBodyInteractions, OwnBondThreeBodyInteractions)
        if n_models != 1 or n_layers == 0:
            raise ValueError(f"{type(model).__name__}: expected one M3GNet with three-body layers to fix")
    return model


# --------------------------------------------------------------------------------------------------------
# Fix 3: loading.
# --------------------------------------------------------------------------------------------------------
def weights_fingerprint(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over sorted (key, dtype, shape, bytes) of a state dict: independent of the file's pickling."""
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        h.update(key.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


def _class_of(spec: dict, saved_version: int | None) -> type:
    """The matgl class named by a serialized spec; its ``__version__`` must equal the saved model version."""
    module = importlib.import_module(spec["@module"])
    cls = getattr(module, spec["@class"])
    current = getattr(cls, "__version__", 0)
    if saved_version is not None and current != saved_version:
        _fail(f"{spec['@class']} has model version {current} in this matgl, the checkpoint {saved_version}")
    return cls


def read_checkpoint(folder: str | Path) -> tuple[torch.nn.Module, str]:
    """Build the model of a matgl model folder (``model.json``, ``model.pt``, ``state.pt``) with fix 3.

    Returns ``(model in eval mode, weights fingerprint)``. No behavioural fixes are applied here (see
    :func:`apply_fixes`); a missing parameter or an unexpected state-dict key raises ``RuntimeError``.
    """
    from matgl.data.transformer import Normalizer

    folder = Path(folder)
    missing = [f for f in ("model.json", "model.pt", "state.pt") if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(f"matgl model folder {folder} lacks {missing}")
    spec = json.loads((folder / "model.json").read_text())
    cls = _class_of(spec, spec.get("@model_version"))
    cpu = torch.device("cpu")
    with torch.serialization.safe_globals([Normalizer]):
        state = torch.load(folder / "state.pt", map_location=cpu, weights_only=True)
        kwargs = torch.load(folder / "model.pt", map_location=cpu, weights_only=True)
    for key, value in list(kwargs.items()):
        if isinstance(value, dict) and "@class" in value and "@module" in value:
            saved = spec.get("kwargs", {}).get(key, {}).get("@model_version")
            kwargs[key] = _class_of(value, saved)(**value["init_args"])
    kwargs = {k: v for k, v in kwargs.items() if not k.startswith("@")}
    model = cls(**kwargs)
    renamed = {}
    for key, value in state.items():
        for old, new in _KEY_RENAMES:
            if key.startswith(old):
                key = new + key[len(old) :]
        renamed[key] = value
    renamed = {k: v for k, v in renamed.items() if not k.endswith(_BENIGN_UNEXPECTED_SUFFIXES)}
    result = model.load_state_dict(renamed, strict=False)
    params = {name for name, _ in model.named_parameters()}
    missing_params = [k for k in result.missing_keys if k in params]
    if missing_params or result.unexpected_keys:
        raise RuntimeError(
            f"checkpoint {folder} does not match {cls.__name__} in this matgl: missing parameters "
            f"{missing_params[:5]}, unexpected keys {list(result.unexpected_keys)[:5]}"
        )
    model.eval()
    return model, weights_fingerprint(renamed)


def load_fixed_checkpoint(folder: str | Path, name: str | None = None) -> torch.nn.Module:
    """Load a known checkpoint folder (``name`` defaults to the folder name) with all the fixes it needs.

    Raises ``KeyError`` for a checkpoint name not in :data:`CHECKPOINTS` and :class:`MatglCompatibilityError`
    if the weights are not the ones the fixes were validated on.
    """
    name = name or Path(folder).name
    if name not in CHECKPOINTS:
        raise KeyError(f"no matgl fixes recorded for checkpoint {name!r}; known: {sorted(CHECKPOINTS)}")
    fixes = CHECKPOINTS[name]
    model, fingerprint = read_checkpoint(folder)
    if fingerprint != fixes.weights_sha256:
        _fail(
            f"checkpoint {name} at {folder} has weights fingerprint {fingerprint[:16]}..., the fixes were "
            f"validated on {fixes.weights_sha256[:16]}... (a different or re-trained model)"
        )
    return apply_fixes(model, fixes)


def load_stock_checkpoint(folder: str | Path) -> torch.nn.Module:
    """The checkpoint as stock matgl 4.1.2 runs it (fix 3 only, so that it loads): for tests/comparisons."""
    return read_checkpoint(folder)[0]
