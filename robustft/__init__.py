"""robustft: robust fine-tuning of non-robust pretrained classifiers with Epsilon-Scheduling.

The public API, on your own model and data (docs/python-api.md)::

    import robustft
    summary = robustft.fit(model, train_loader, val=val_loader, epochs=10, objective=objective,
                           schedule=robustft.eps_schedule("hinge", eps=8/255, epochs=10), run="runs/mine")
    result = robustft.evaluate(model, test_loader, eps_grid=[0, 4/255, 8/255], attacks=["apgd-ce", "apgd-t"])
    robustft.evaluate_run("runs/mine", model=model, data=test_loader)  # stored in the run: `robustft table runs/mine`

and on a config (what the command line runs)::

    from robustft import load_config, fine_tune, evaluate_run
    cfg = load_config("configs/fmnist_scheduled.yaml", ["data.n_train=3000"])
    run = fine_tune(cfg, name="scheduled")          # train + evaluate into runs/scheduled
    result = evaluate_run(run.path)                 # clean, adv, expected robustness, evidence

Lower-level pieces: :func:`build_model`, :func:`build_data`, :func:`build_eps_schedule`, :func:`build_objective`,
:func:`evaluate`, :func:`diagnose_run`. Errors whose message says what to do derive from :class:`UserError`
(robustft/errors.py).
"""

from importlib import metadata

from robustft import attacks, models, objectives
from robustft.analysis import diagnose_run
from robustft.api import evaluate_run, fine_tune, run_dir_for
from robustft.config import Config, load_config, parse_eps, save_config
from robustft.data import build_data
from robustft.errors import (
    BadImageError,
    CatastrophicOverfittingError,
    CheckpointMismatchError,
    ClusterError,
    ConfigError,
    DataError,
    DiskFullError,
    ForeignFileError,
    MetricsFormatError,
    MissingDependencyError,
    MissingFileError,
    NonFiniteLossError,
    NotFoldableError,
    RunExistsError,
    TuneError,
    UnsafeFileError,
    UserError,
    WeightsDownloadError,
)
from robustft.eval import Flag, RobustnessResult, evaluate, expected_robustness
from robustft.export import export_run, load_classifier
from robustft.models import Normalized, build_model
from robustft.objectives import build_objective
from robustft.runs import RunDir, TrainSummary
from robustft.schedules import build_eps_schedule
from robustft.train import Tuning, eps_schedule, fit, tuning

__version__ = metadata.version("robustft")  # one source: pyproject.toml's [project] version

__all__ = ["Config", "Flag", "Normalized", "RobustnessResult", "RunDir", "TrainSummary", "build_data",
           "build_eps_schedule", "build_model", "build_objective", "attacks", "diagnose_run", "eps_schedule",
           "evaluate", "evaluate_run", "expected_robustness", "fine_tune", "export_run", "fit", "load_classifier",
           "load_config", "models", "objectives", "parse_eps", "run_dir_for", "save_config", "Tuning", "tuning",
           # errors (robustft/errors.py): every one whose message says what to do derives from UserError
           "BadImageError", "CatastrophicOverfittingError", "CheckpointMismatchError", "ClusterError", "ConfigError",
           "DataError", "DiskFullError", "ForeignFileError", "MetricsFormatError", "MissingDependencyError",
           "MissingFileError", "NonFiniteLossError", "NotFoldableError", "RunExistsError", "TuneError",
           "UnsafeFileError", "UserError", "WeightsDownloadError"]
