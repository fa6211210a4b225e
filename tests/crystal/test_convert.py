"""Element tables and padded <-> pymatgen / CIF conversion: agreement with pymatgen and clear errors."""

from __future__ import annotations

import re

import numpy as np
import pytest
from pymatgen.core import Element, Lattice, Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from hgfn_jax.crystal import convert as C
from hgfn_jax.crystal import elements as E
from hgfn_jax.crystal.types import Crystal


def _nacl() -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def _triclinic() -> Structure:
    lat = Lattice.from_parameters(4.1, 5.3, 6.7, 71.0, 96.0, 113.0)
    return Structure(
        lat, ["Fe", "O", "O", "Li"], [[0.1, 0.2, 0.3], [0.6, 0.1, 0.9], [0.35, 0.75, 0.5], [0, 0, 0.5]]
    )


# ------------------------------------------------------------------------------------------------ elements


def test_element_tables_agree_with_pymatgen():
    for table in (E.ATOMIC_MASS, E.ELECTRONEGATIVITY, E.PERIOD, E.GROUP, E.BLOCK):
        assert table.shape == (119,)
    assert E.ATOMIC_MASS[0] == 0 and np.isnan(E.ELECTRONEGATIVITY[0]) and E.SYMBOLS[0] == ""
    for sym, z, period, group in [
        ("H", 1, 1, 1),
        ("O", 8, 2, 16),
        ("Fe", 26, 4, 8),
        ("Ba", 56, 6, 2),
        ("U", 92, 7, 3),
        ("Og", 118, 7, 18),
    ]:
        el = Element(sym)
        assert E.atomic_number(sym) == z == el.Z
        assert E.symbol(z) == sym
        assert E.ATOMIC_MASS[z] == pytest.approx(float(el.atomic_mass), rel=1e-6)
        assert (E.PERIOD[z], E.GROUP[z]) == (period, group)
    assert E.ELECTRONEGATIVITY[9] == pytest.approx(3.98)  # F, Pauling
    assert E.ELECTRONEGATIVITY[8] == pytest.approx(3.44)  # O
    assert np.isnan(E.ELECTRONEGATIVITY[2]) and np.isnan(E.ELECTRONEGATIVITY[10])  # He, Ne: undefined
    assert sorted(set(E.SYMBOLS[1:])) == sorted(e.symbol for e in Element if e.Z <= 118)
    np.testing.assert_array_equal(E.atomic_numbers(["Li", "Fe", "O"]), [3, 26, 8])


def test_element_errors():
    with pytest.raises(ValueError, match="unknown element symbol 'Xx'"):
        E.atomic_number("Xx")
    with pytest.raises(ValueError, match="unknown element symbol 'fe'"):
        E.atomic_number("fe")
    for bad in (0, 119, -1, 2.5):
        with pytest.raises(ValueError, match="atomic number must be an integer in 1..118"):
            E.symbol(bad)


# ------------------------------------------------------------------------------------------------ convert


def _same_structure(a: Structure, b: Structure, tol: float = 1e-5, ordered: bool = True) -> None:
    """Same lattice parameters and sites (in order, or as multisets matched with periodic tolerance)."""
    np.testing.assert_allclose(a.lattice.abc, b.lattice.abc, rtol=1e-5)
    np.testing.assert_allclose(a.lattice.angles, b.lattice.angles, atol=1e-4)
    assert len(a) == len(b)
    if not ordered:
        order = []
        for site in a:
            d = b.frac_coords - site.frac_coords
            err = np.abs(d - np.round(d)).max(axis=1)
            j = int(np.argmin(err))
            order.append(j)
        assert sorted(order) == list(range(len(b)))
        b = Structure.from_sites([b[j] for j in order])
    assert [s.specie.symbol for s in a] == [s.specie.symbol for s in b]
    d = a.frac_coords - b.frac_coords
    assert np.abs(d - np.round(d)).max() < tol


def test_structure_round_trip_and_padding():
    s = _triclinic()
    c = C.from_structure(s, n_max=6)
    assert c.frac.shape == (6, 3) and c.frac.dtype == np.float32 and c.species.dtype == np.int32
    np.testing.assert_array_equal(c.mask, [True] * 4 + [False] * 2)
    np.testing.assert_array_equal(c.species, [26, 8, 8, 3, 0, 0])
    np.testing.assert_array_equal(c.frac[4:], 0.0)
    assert np.all((c.frac >= 0) & (c.frac < 1))
    assert int(c.spacegroup) == 0 and not bool(c.overflow)
    back = C.to_structure(c)
    _same_structure(s, back)
    assert back.density == pytest.approx(s.density, rel=1e-5)


def test_spacegroup_and_wrapping():
    s = _nacl()
    c = C.from_structure(s, n_max=8, spacegroup=True)
    assert int(c.spacegroup) == 225 == SpacegroupAnalyzer(s, symprec=0.1).get_space_group_number()
    # coordinates outside [0, 1) and a float32 value that would round up to 1.0 are wrapped
    shifted = Structure(
        s.lattice, s.species, s.frac_coords + np.array([1.0, -2.0, 1 - 1e-9]), to_unit_cell=False
    )
    cs = C.from_structure(shifted, n_max=8)
    assert np.all((cs.frac >= 0) & (cs.frac < 1))
    d = cs.frac[:8] - c.frac[:8]
    assert np.abs(d - np.round(d)).max() < 1e-6


def test_cif_round_trip_is_p1_and_exact():
    s = _nacl()
    c = C.from_structure(s, n_max=10)
    text = C.to_cif(c)
    assert "_symmetry_space_group_name_H-M   'P 1'" in text
    back = C.from_cif(text, n_max=10)
    np.testing.assert_array_equal(back.species, c.species)
    np.testing.assert_allclose(back.lattice, c.lattice, rtol=1e-6)
    d = back.frac - c.frac
    assert np.abs(d - np.round(d)).max() < 1e-6
    # pymatgen reads our CIF to the same structure
    _same_structure(Structure.from_str(text, fmt="cif"), s)
    # unsorted sites: same multiset, in pymatgen's reader order (as pymatgen itself reads the file)
    tri = C.from_structure(_triclinic(), n_max=6)
    text = C.to_cif(tri)
    back = C.from_cif(text, n_max=6)
    np.testing.assert_array_equal(back.species, [3, 26, 8, 8, 0, 0])
    _same_structure(C.to_structure(back), _triclinic(), ordered=False)
    _same_structure(C.to_structure(back), Structure.from_str(text, fmt="cif"))


def test_stack_unstack_write_cifs(tmp_path):
    crystals = [C.from_structure(_nacl(), 10), C.from_structure(_triclinic(), 10)]
    batch = C.stack(crystals)
    assert batch.frac.shape == (2, 10, 3) and batch.lattice.shape == (2, 6)
    for a, b in zip(C.unstack(batch), crystals, strict=True):
        for field in ("lattice", "frac", "species", "mask", "spacegroup", "overflow"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    paths = C.write_cifs(batch, tmp_path / "out", prefix="gen")
    assert [p.name for p in paths] == ["gen_00000.cif", "gen_00001.cif"]
    # pymatgen's CIF reader sorts sites by electronegativity: Li, Fe, O, O
    read = Structure.from_file(paths[1])
    assert [site.specie.symbol for site in read] == ["Li", "Fe", "O", "O"]
    _same_structure(read, _triclinic(), ordered=False)
    # an invalid member: clear error naming it, or skipped on request
    bad = C.stack([crystals[0], crystals[1].replace(overflow=np.asarray(True))])
    with pytest.raises(ValueError, match="crystal 1 of the batch: crystal overflowed"):
        C.write_cifs(bad, tmp_path / "bad")
    assert [p.name for p in C.write_cifs(bad, tmp_path / "skip", skip_invalid=True)] == ["crystal_00000.cif"]
    # two atoms on one position: pymatgen's reader refuses the CIF (occupancy 2), so it is never written
    f = np.asarray(crystals[1].frac).copy()
    f[1] = f[0]
    doubled = C.stack([crystals[0], crystals[1].replace(frac=f)])
    with pytest.raises(ValueError):
        Structure.from_str(C.to_cif(C.unstack(doubled)[1]), fmt="cif")
    with pytest.raises(ValueError, match="crystal 1 of the batch: malformed CIF"):
        C.write_cifs(doubled, tmp_path / "doubled")
    assert [p.name for p in C.write_cifs(doubled, tmp_path / "skip2", skip_invalid=True)] == ["crystal_00000.cif"]
    with pytest.raises(ValueError, match="different padded shapes"):
        C.stack([crystals[0], C.from_structure(_nacl(), 12)])
    with pytest.raises(ValueError, match="unbatched"):
        C.to_structure(batch)
    with pytest.raises(ValueError, match="batched"):
        C.unstack(crystals[0])


def _valid() -> Crystal:
    return C.from_structure(_triclinic(), n_max=6)


@pytest.mark.parametrize(
    "change,message",
    [
        (
            lambda c: c.replace(frac=np.where(np.arange(6)[:, None] == 1, np.nan, c.frac)),
            r"non-finite .* \[1\]",
        ),
        (
            lambda c: c.replace(lattice=np.array([4.0, 5.0, 6.0, 30.0, 30.0, 90.0], np.float32)),
            "degenerate lattice: impossible angle triple",
        ),
        (
            lambda c: c.replace(lattice=np.array([4.0, 0.0, 6.0, 90.0, 90.0, 90.0], np.float32)),
            "degenerate lattice: lengths must be positive",
        ),
        (
            lambda c: c.replace(lattice=np.array([4.0, np.nan, 6.0, 90.0, 90.0, 90.0], np.float32)),
            "degenerate lattice: non-finite",
        ),
        (
            lambda c: c.replace(species=np.array([26, 0, 8, 3, 0, 0], np.int32)),
            r"unknown species: atomic numbers \[0\]",
        ),
        (lambda c: c.replace(species=np.array([26, 150, 8, 3, 0, 0], np.int32)), r"atomic numbers \[150\]"),
        (lambda c: c.replace(overflow=np.asarray(True)), "overflowed"),
        (lambda c: c.replace(mask=np.zeros(6, bool)), "no real site"),
    ],
)
def test_to_structure_rejects_bad_crystals(change, message):
    with pytest.raises(ValueError, match=message):
        C.to_structure(change(_valid()))


def test_padding_sites_may_hold_garbage():
    c = _valid()
    c = c.replace(
        frac=np.where(np.arange(6)[:, None] >= 4, np.nan, c.frac), species=np.array([26, 8, 8, 3, 999, 0])
    )
    assert len(C.to_structure(c)) == 4


def test_from_structure_errors():
    big = _nacl() * (2, 2, 3)  # 96 sites
    with pytest.raises(ValueError, match=r"^structure has 96 sites, more than n_max=80$"):
        C.from_structure(big, n_max=80)
    disordered = Structure(Lattice.cubic(4.0), [{"Fe": 0.5, "Co": 0.5}], [[0, 0, 0]])
    with pytest.raises(ValueError, match="disordered"):
        C.from_structure(disordered, n_max=4)
    with pytest.raises(ValueError, match="expected a pymatgen Structure"):
        C.from_structure("NaCl", n_max=4)


def test_from_cif_errors():
    good = C.to_cif(_valid())
    broken = {
        "empty": "",
        "garbage": "this is not a CIF file\n",
        "no atoms": good[: good.index("loop_\n _atom_site")],
        "bad number": re.sub(r"_cell_length_a\s+\S+", "_cell_length_a   four", good),
    }
    assert broken["bad number"] != good
    for text in broken.values():
        with pytest.raises(ValueError, match="^malformed CIF: "):
            C.from_cif(text, n_max=10)
    partial = re.sub(r"(Fe\s+Fe0\s+1\s+\S+\s+\S+\s+\S+\s+)1\n", r"\g<1>0.5\n", good)  # Fe half occupied
    assert partial != good
    with pytest.raises(ValueError, match="disordered"):
        C.from_cif(partial, n_max=10)
    with pytest.raises(ValueError, match="structure has 4 sites, more than n_max=3"):
        C.from_cif(good, n_max=3)
