"""``./dev test``'s shards (tests/conftest.py ``shard_items``): every test runs in
exactly one shard, a module whose tests share a module fixture or that weighs
little stays in one shard, and the shards' weights come out close."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

import tests.conftest
from tests.conftest import SHARD_WEIGHTS, shard_items


@pytest.fixture(autouse=True)
def _weights_by_folder(monkeypatch):
    monkeypatch.setattr(tests.conftest, "_measured_weights", dict)  # not this machine's measured file


def item(nodeid: str, scope: str = "function"):
    fixture = SimpleNamespace(scope=scope)
    return SimpleNamespace(nodeid=nodeid, _fixtureinfo=SimpleNamespace(name2fixturedefs={"f": (fixture,)}))


def collection() -> list:
    items = [item(f"tests/e2e/test_web.py::test_{i}") for i in range(5)]
    items += [item(f"tests/reliability/test_faults.py::test_{i}", "module") for i in range(6)]
    items += [item(f"tests/integration/test_x.py::test_{i}") for i in range(40)]
    items += [item(f"tests/unit/test_y.py::test_{i}") for i in range(500)]
    items += [item(f"tests/unit/test_light_{m}.py::test_{i}") for m in range(4) for i in range(30)]
    return items


@pytest.mark.parametrize("n", [1, 2, 3])
def test_every_test_runs_in_exactly_one_shard_in_collection_order(n):
    items = collection()
    shards = [shard_items(items, k, n) for k in range(n)]
    assert sorted(id(i) for shard in shards for i in shard) == sorted(map(id, items))
    for shard in shards:
        assert shard == [i for i in items if i in shard]


def test_a_module_sharing_a_fixture_stays_in_one_shard_and_the_weights_balance():
    items = collection()
    shards = [shard_items(items, k, 2) for k in range(2)]
    holding = [any("reliability" in i.nodeid for i in shard) for shard in shards]
    assert holding.count(True) == 1
    weights = [sum(SHARD_WEIGHTS[i.nodeid.split("/")[1]] for i in shard) for shard in shards]
    assert abs(weights[0] - weights[1]) <= SHARD_WEIGHTS["e2e"], weights


def test_a_light_module_stays_in_one_shard_and_a_heavy_one_is_spread():
    items = collection()
    shards = [shard_items(items, k, 2) for k in range(2)]
    for m in range(4):  # 30 tests of 0.1 s: under KEEP_WHOLE_BELOW
        holding = [any(f"test_light_{m}.py" in i.nodeid for i in shard) for shard in shards]
        assert holding.count(True) == 1
    assert all(any("unit/test_y.py" in i.nodeid for i in shard) for shard in shards)  # 50 s: split


def test_modules_that_share_what_their_process_keeps_run_in_one_shard(monkeypatch):
    import tests.support.parallel

    heavy = [f"tests/unit/test_y{m}.py" for m in range(3)]  # 50 s each: each alone would be spread
    monkeypatch.setattr(tests.support.parallel, "SHARD_TOGETHER", (tuple(heavy[:2]),))
    items = collection() + [item(f"{module}::test_{i}") for module in heavy for i in range(500)]
    shards = [shard_items(items, k, 2) for k in range(2)]
    for module in heavy[:2]:
        holding = [any(i.nodeid.startswith(module) for i in shard) for shard in shards]
        assert holding.count(True) == 1
    assert [any(i.nodeid.startswith(heavy[0]) for i in shard) for shard in shards] == \
        [any(i.nodeid.startswith(heavy[1]) for i in shard) for shard in shards]
    assert all(any(i.nodeid.startswith(heavy[2]) for i in shard) for shard in shards)  # not grouped: spread
    weights = [sum(SHARD_WEIGHTS[i.nodeid.split("/")[1]] for i in shard) for shard in shards]
    assert abs(weights[0] - weights[1]) <= 100 * SHARD_WEIGHTS["unit"], weights



@pytest.mark.parametrize("args,selection", [
    ([], False), (["-x", "--maxfail=2", "-q"], False), (["tests/unit"], True),
    (["-q", "tests/unit/test_shards.py::test_a"], True), (["-k", "merkle"], True), (["-m=slow"], True)])
def test_a_selection_is_told_from_the_whole_suite(args, selection):
    from tests.support.parallel import a_selection

    assert a_selection(args) is selection


def test_property_tests_try_all_their_examples_unless_a_selection_runs(monkeypatch):
    from tests.support import properties

    monkeypatch.delenv(properties.VARIABLE, raising=False)
    assert [properties.examples(n) for n in (15, 150)] == [15, 150]
    assert properties.property_settings(150).max_examples == 150
    monkeypatch.setenv(properties.VARIABLE, properties.FEWER)
    assert [properties.examples(n) for n in (5, 15, 150, 300)] == [5, 10, 50, 100]
    assert properties.property_settings(150).max_examples == 50
