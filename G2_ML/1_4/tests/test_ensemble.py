"""apps.ensemble: seeds and jobs refused before any training, the fixed/free rule computed from the members'
spread and errors, diverged members left out and named, and runs of other configurations never merged."""
import math

import pytest

from k7lib.apps import ensemble as E
from k7lib.apps import ensemble_table as T
from k7lib.apps.ensemble_measure import QUANTITIES


@pytest.mark.parametrize("text, seeds", [("0-4", (0, 1, 2, 3, 4)), ("0,2,5", (0, 2, 5)), ("0-2,7", (0, 1, 2, 7)),
                                          ([3, 1], (3, 1))])
def test_seeds_as_ranges_and_lists(text, seeds):
    assert E.parse_seeds(text) == seeds


@pytest.mark.parametrize("text", ["", "-1", "0,0", "1-0", "0-64", "a", "0,,1", "1.5"])
def test_bad_seeds_are_one_line_naming_the_option(text):
    with pytest.raises(ValueError) as err:
        E.parse_seeds(text)
    assert str(err.value).startswith("--seeds") and "\n" not in str(err.value)


def test_jobs_that_oversubscribe_are_refused(monkeypatch):
    monkeypatch.setattr(E, "cores", lambda: 2)
    assert E.check_jobs(2) == 1 and E.check_jobs(1) == 2
    for jobs, threads in [(0, None), (3, None), (2, 2)]:
        with pytest.raises(ValueError) as err:
            E.check_jobs(jobs, threads)
        assert "\n" not in str(err.value)


def _record(run, seed, values, errors, width=64, status="finished", config=None):
    return {"run": run, "seed": seed, "width": width, "status": status, "values": values, "errors": errors,
            "recipe": "resume run_9 from 600 at lr scale 0.5" if status == "diverged" else None,
            "config": config if config is not None else {"profile": "quick", "seed": seed, "width": width}}


def test_fixed_or_free_is_the_spread_against_three_errors():
    fixed = T.quantity_stats([1.0, 1.0 + 1e-4, 1.0 - 1e-4], [1e-4, 1e-4, 1e-4])
    free = T.quantity_stats([1.0, 1.2, 0.9], [1e-3, 1e-3, 1e-3])
    assert fixed["fixed"] and math.isclose(fixed["ratio"], 1.0)
    assert not free["fixed"] and free["ratio"] > 100
    assert T.quantity_stats([1.0], [1e-3])["std"] is None            # one member: no spread, not "fixed"
    assert not T.quantity_stats([1.0], [1e-3])["fixed"]


def test_a_diverged_member_is_left_out_and_named():
    q = next(iter(QUANTITIES))
    recs = [_record("run_1", 0, {q: 1.0}, {q: 0.1}), _record("run_2", 1, {q: 1.1}, {q: 0.1}),
            _record("run_3", 2, {}, {}, status="diverged"), _record("run_4", 0, {q: 1.3}, {q: 0.1}, width=32)]
    ens = T.Ensemble.from_records(recs, base_width=64)
    assert ens.n_finished == 2 and ens.n_diverged == 1 and len(ens.architecture) == 1
    assert any("run_3" in n and "diverged" in n and "resume" in n for n in ens.notes)
    assert math.isclose(ens.quantities[q]["mean"], 1.05)
    block = ens.metadata_block()
    assert {"members", "quantities", "architecture"} <= set(block)
    assert set(block["quantities"][q]) >= {"mean", "std", "min", "max", "mc_error", "ratio", "fixed"}
    table = ens.table()
    assert table.loc[q, "class"] in (T.FIXED, T.FREE)
    assert "seed 0, width 32" in table.columns


def test_collect_refuses_runs_of_other_configurations_naming_them():
    a = _record("run_1", 0, {}, {}, config={"profile": "quick", "seed": 0, "width": 64, "batch": 256})
    b = _record("run_7", 1, {}, {}, config={"profile": "full", "seed": 1, "width": 64, "batch": 1024})
    with pytest.raises(ValueError) as err:
        T.check_same_configuration([a, b])
    assert "run_7" in str(err.value) and "run_1" in str(err.value) and "\n" not in str(err.value)
    c = _record("run_2", 1, {}, {}, config={"profile": "quick", "seed": 1, "width": 64, "batch": 256})
    assert T.check_same_configuration([a, c]) == 64
