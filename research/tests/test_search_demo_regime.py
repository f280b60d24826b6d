"""research/scripts/search_demo_regime.py: every candidate is a valid config of the demo's regime."""

import importlib.util
from pathlib import Path

import pytest

from robustft.experiments.demo import DEMO_SETTINGS, DEMO_VARIANTS
from robustft.experiments.sweep import expand

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "search_demo_regime.py"


@pytest.fixture(scope="module")
def search():
    spec = importlib.util.spec_from_file_location("search_demo_regime", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("variant", list(DEMO_VARIANTS))
def test_every_candidate_is_a_valid_config_that_differs_only_where_it_says(search, variant, tmp_path):
    assert search.CANDIDATES["demo"] == {}
    for name, changes in search.CANDIDATES.items():
        points = expand(search.candidate_spec(name, [variant], [0, 2], tmp_path))
        assert [p.name for p in points] == [f"{variant}-seed0", f"{variant}-seed2"]
        cfg = points[0].config
        assert cfg.train.out_dir == str(tmp_path / name) and points[1].config.train.seed == 2
        assert cfg.data.n_train == changes.get("data.n_train", DEMO_SETTINGS["data.n_train"]), name
        assert cfg.data.image_size == changes.get("data.image_size", DEMO_SETTINGS["data.image_size"]), name
        assert cfg.train.epochs == changes.get("train.epochs", DEMO_SETTINGS["train.epochs"]), name
        assert cfg.objective.name == DEMO_VARIANTS[variant]["objective.name"], name
        eps = changes.get("attack.eps", DEMO_SETTINGS["attack.eps"])
        num, den = map(int, eps.split("/"))
        assert cfg.attack.eps == pytest.approx(num / den), name


def test_overrides_go_on_top_of_the_candidate(search, tmp_path):
    (point,) = expand(search.candidate_spec("e32_ep30", ["fix"], [1], tmp_path, ["eval.n=200", "train.epochs=5"]))
    assert (point.config.eval.n, point.config.train.epochs, point.config.attack.eps) == (200, 5, pytest.approx(32 / 255))


def test_a_candidate_can_move_the_scheduled_variants_hinges_only(search, tmp_path):
    points = {p.variant: p.config for p in expand(search.candidate_spec("e16_ep30_h10", ["fix", "scheduled"], [0],
                                                                         tmp_path))}
    assert (points["scheduled"].schedule.t1, points["scheduled"].schedule.t2) == (0.1, 0.5)
    assert points["fix"].schedule.kind == "fix"
    (demo,) = expand(search.candidate_spec("e16_ep30", ["scheduled"], [0], tmp_path))
    assert (demo.config.schedule.t1, demo.config.schedule.t2) == (DEMO_VARIANTS["scheduled"]["schedule.t1"],
                                                    DEMO_VARIANTS["scheduled"]["schedule.t2"])


def test_the_gpu_driver_names_only_known_candidates(search):
    """research/scripts/search_demo_regime_gpu.sh runs candidates by name: each must exist in the search script."""
    driver = (SCRIPT.parent / "search_demo_regime_gpu.sh").read_text()
    named = [line.split()[0].strip('"') for line in driver.split("CANDIDATES=(")[1].split(")")[0].splitlines()[1:]
             if line.strip()]
    assert len(named) >= 3
    assert set(named) <= set(search.CANDIDATES), set(named) - set(search.CANDIDATES)
    assert {"e32_ep30_h25_apgd7", "e32_ep50_h25_apgd7"} <= set(named)
    for name in ("e32_ep30_h25_apgd7", "e32_ep50_h25_apgd7"):  # the paper's hinges: the demo's 25 % / 75 %
        assert name not in search.HINGES
