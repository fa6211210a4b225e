"""README's throughput table is the output of ``benchmarks.readme_table`` over the committed results: a number in
it that no benchmark record holds (hand-copied, or left behind by a re-run) fails here."""

from __future__ import annotations

from benchmarks import readme_table


def test_readme_throughput_table_is_generated_from_the_results():
    block = readme_table.readme_block(readme_table.README.read_text())
    assert block == readme_table.render(), "run `python -m benchmarks.readme_table --write`"


def test_every_row_reads_existing_records():
    # render() raises on a record no result file holds; a row that shows nothing would be a silent gap
    for line in readme_table.render().splitlines()[2:2 + len(readme_table.ROWS)]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert any(ch.isdigit() for ch in cells[1]), line
