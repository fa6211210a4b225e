"""The paper's environment defaults (paper 001, App. B; Mila ``starling_fe`` config)."""

PAPER_ELEMENTS = (
    "H", "Li", "B", "C", "N", "O", "F", "Na", "Mg", "Al", "Si", "P", "S", "Cl", "K", "V", "Mn", "Fe", "Co", "Ni",
    "Cu", "Se",
)  # fmt: skip
"""App. B: the 22 most common elements of MatBench (Mila config ``elements``)."""

PAPER_SPACEGROUPS = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 18, 19, 20, 21, 25, 26, 29, 30, 31, 33, 36, 38, 40, 41,
    43, 44, 46, 47, 51, 52, 53, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 66, 67, 69, 70, 71, 72, 74, 82, 84, 85,
    86, 87, 88, 92, 99, 102, 107, 113, 114, 121, 122, 123, 126, 129, 131, 136, 137, 138, 139, 140, 141, 146, 147,
    148, 150, 155, 156, 160, 161, 162, 163, 164, 166, 167, 176, 181, 185, 186, 187, 189, 192, 194, 198, 199, 205,
    206, 216, 217, 220, 221, 224, 225, 227, 229, 230,
)  # fmt: skip
"""App. B: the 113 space groups of the intersection of the proxy's train and validation sets (Mila config
``space_groups_subset`` of ``starling_fe.yaml``)."""
