"""scripts/search_demo_regime.py: every candidate is a valid config of the demo's regime."""

import importlib.util
from pathlib import Path

import pytest

from robustft import load_config
from robustft.experiments.demo import DEMO_SETTINGS, DEMO_VARIANTS

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "search_demo_regime.py"


@pytest.fixture(scope="module")
def search():
    spec = importlib.util.spec_from_file_location("search_demo_regime", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_override_strings(search):
    assert search.override("schedule.t1", None) == "schedule.t1=null"
    assert search.override("eval.attacks", ["apgd-ce", "apgd-t"]) == "eval.attacks=[apgd-ce,apgd-t]"
    assert search.override("attack.eps", "16/255") == "attack.eps=16/255"


@pytest.mark.parametrize("variant", list(DEMO_VARIANTS))
def test_every_candidate_is_a_valid_config_that_differs_only_where_it_says(search, variant):
    assert search.CANDIDATES["demo"] == {}
    for name, changes in search.CANDIDATES.items():
        settings = {**DEMO_SETTINGS, **DEMO_VARIANTS[variant], **changes}
        cfg = load_config(None, [search.override(k, v) for k, v in settings.items()])
        assert cfg.data.n_train == DEMO_SETTINGS["data.n_train"], name
        assert cfg.train.epochs == changes.get("train.epochs", DEMO_SETTINGS["train.epochs"]), name
        assert cfg.objective.name == DEMO_VARIANTS[variant]["objective.name"], name
        eps = changes.get("attack.eps", DEMO_SETTINGS["attack.eps"])
        num, den = map(int, eps.split("/"))
        assert cfg.attack.eps == pytest.approx(num / den), name
