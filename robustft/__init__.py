"""robustft: robust fine-tuning of non-robust pretrained classifiers with Epsilon-Scheduling.

The public API::

    from robustft import load_config, fine_tune, evaluate_run
    cfg = load_config("configs/fmnist_scheduled.yaml", ["data.n_train=3000"])
    run = fine_tune(cfg, name="scheduled")          # train + evaluate into runs/scheduled
    result = evaluate_run(run.path)                 # clean, adv, expected robustness, evidence

Lower-level pieces: :func:`build_model`, :func:`build_data`, :func:`build_eps_schedule`, :func:`build_objective`,
:func:`evaluate`, :func:`diagnose_run`.
"""

from robustft.api import evaluate_run, fine_tune, run_dir_for
from robustft.config import Config, load_config, parse_eps, save_config
from robustft.data import build_data
from robustft.eval import RobustnessResult, evaluate, expected_robustness
from robustft.models import build_model
from robustft.objectives import build_objective
from robustft.report import diagnose_run
from robustft.schedules import build_eps_schedule

__version__ = "0.1.0"

__all__ = ["Config", "RobustnessResult", "build_data", "build_eps_schedule", "build_model", "build_objective",
           "diagnose_run", "evaluate", "evaluate_run", "expected_robustness", "fine_tune", "load_config",
           "parse_eps", "run_dir_for", "save_config"]
