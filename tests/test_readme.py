"""The README's result tables are what benchmarks/readme_tables.py writes from the committed
results files: a README number cannot drift from its results file."""
import importlib.util
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def tables():
    spec = importlib.util.spec_from_file_location("readme_tables", os.path.join(ROOT, "benchmarks", "readme_tables.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_generated_block_matches_its_results_file(tables):
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    have = tables.blocks_in(text)
    assert set(have) == set(tables.BLOCKS), "every block the script knows stands in the README once"
    want = tables.blocks_in(tables.render(text))
    stale = [k for k in have if have[k] != want[k]]
    assert not stale, f"README blocks differ from the results: {stale}; run python benchmarks/readme_tables.py"


def test_the_check_catches_an_edited_number(tables, tmp_path):
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    body = tables.blocks_in(text)["dpfp-gap"]
    edited = text.replace(body, body.replace("| alexnet |", "| alexnet (edited) |", 1))
    assert edited != text
    path = tmp_path / "README.md"
    path.write_text(edited)
    assert tables.main(["--check", "--readme", str(path)]) == 1
    assert tables.main(["--readme", str(path)]) == 0 and tables.main(["--check", "--readme", str(path)]) == 0


def test_gaps_use_the_one_definition(tables):
    from partopt.solvers import heuristic_gap
    assert heuristic_gap(3.0, 1.0) == 2.0          # 200 % above the optimum, not 66.7 %
    assert tables._gap_pct("0.53352", "0.16785") == pytest.approx(217.86, abs=0.01)
