"""A run exported for publication: RobustBench's model-info JSON and the whole classifier as safetensors.

``robustft export RUN --out DIR`` writes

- ``DIR/model_info.json``: RobustBench's fields (``name``, ``architecture``, ``dataset``, ``eps``, ``clean_acc``,
  ``reported`` (robust accuracy at ε_g under robustft's evaluation), ``autoattack_acc`` when the run has an
  AutoAttack evaluation, ``number_forward_passes``, ``additional_data``), percentages as strings as RobustBench
  writes them, plus ``robustft``: E.adv, the accuracy curve over the ε grid, the evaluation protocol, the sanity
  flags, the model config and the number of classes;
- ``DIR/model.safetensors``: the evaluated weights of the whole classifier (normalisation inside), which
  :func:`load_classifier` rebuilds without the run directory.
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from robustft.api import resolve_target
from robustft.config import ModelConfig, format_eps
from robustft.errors import ForeignFileError, MissingFileError
from robustft.eval import RobustnessResult
from robustft.models import RobustClassifier, build_model
from robustft.models.lora import merge_lora
from robustft.runs import UNKNOWN, RunDir, atomic_write_text
from robustft.train import load_checkpoint
from robustft.train.tune import build_tuned_model

INFO_FILE = "model_info.json"
MODEL_FILE = "model.safetensors"


def _percent(value: float) -> str:
    return f"{100 * value:.2f}"


def autoattack_accuracy(run: RunDir, eps: float) -> float | None:
    """Accuracy at ``eps`` of the run's evaluations that ran AutoAttack (the lowest if several), or None."""
    found = []
    for name in run.evaluations():
        result = run.robustness(name)
        if result is None or "autoattack" not in result.attack_order:
            continue
        found += [point.accuracy for point in result.curve if abs(point.eps_value - eps) < 1e-9]
    return min(found) if found else None


def export_run(target: str | Path, out: str | Path, evaluation: str | None = None, name: str | None = None) -> Path:
    """Export a run (its directory, or a checkpoint in it) and one of its evaluations (``evaluation``: the folder
    under RUN/eval/, else the config's own) into ``out``; returns the model-info file.

    A run of ``robustft.fit`` on a model robustft did not build exports its weights (the model's own state
    dict) with ``architecture: unknown``; :func:`load_classifier` cannot rebuild it, the model's own class can.

    Raises:
        MissingFileError: the run or the evaluation does not exist (evaluate the run first).
    """
    run, checkpoint = resolve_target(target)
    cfg = run.config()
    own = run.own_model()
    evaluated = run.robustness_path(evaluation)
    if not evaluated.is_file():
        how = f"robustft.evaluate_run({str(run.path)!r}, model=..., data=...)" if own else f"robustft eval {run.path}"
        raise MissingFileError(f"{evaluated} does not exist: evaluate the run first ({how})")
    result = RobustnessResult.load(evaluated.parent)
    ckpt = load_checkpoint(checkpoint)
    state = ckpt.get("eval_model", ckpt["model"])  # the evaluated weights, as load_model_weights takes them
    summary = run.summary()
    num_classes = int(state["head.weight"].shape[0]) if "head.weight" in state else \
        summary.num_classes if summary is not None else None
    if not own:
        model = build_tuned_model(replace(cfg.model, pretrained=False, checkpoint=None), cfg.finetune,
                                  int(state["head.weight"].shape[0]))
        model.load_state_dict(state)
        merge_lora(model)  # the plain architecture's weights: load_classifier builds it without adapters
        state = model.state_dict()
    eps = result.eps[-1]
    aa = autoattack_accuracy(run, eps)
    info: dict[str, Any] = {
        "name": name or run.path.name, "architecture": cfg.model.name, "dataset": cfg.data.name,
        "threat_model": "Linf" if cfg.attack.norm == "linf" else "L2", "eps": format_eps(eps),
        "clean_acc": _percent(result.clean), "reported": _percent(result.adv),
        **({"autoattack_acc": _percent(aa)} if aa is not None else {}),
        "number_forward_passes": 1, "additional_data": False,
        "robustft": {"e_adv": _percent(result.expected),
                     **({"e_adv_exact": _percent(result.expected_exact)} if result.expected_exact is not None else {}),
                     "curve": {"eps": [format_eps(e) for e in result.eps],
                                                                      "accuracy": [_percent(a) for a in result.accuracy]},
                     "protocol": result.protocol, "flags": [asdict(f) for f in result.flags],
                     "model": asdict(replace(cfg.model, pretrained=False, checkpoint=None)),
                     "num_classes": num_classes, "checkpoint": checkpoint.name},
    }
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().clone() for k, v in state.items()}
    save_file(tensors, str(folder / MODEL_FILE), metadata={"format": "robustft classifier"})
    atomic_write_text(folder / INFO_FILE, json.dumps(info, indent=2, default=str) + "\n")
    return folder / INFO_FILE


def load_classifier(folder: str | Path) -> RobustClassifier:
    """The classifier an export holds (:func:`export_run`), in eval mode: it takes [0, 1] pixels.

    Raises:
        MissingFileError: ``folder`` is not an export.
        ForeignFileError: the export holds the weights of a model robustft did not build (a run of
            ``robustft.fit``); load them into an instance of that model's class instead.
    """
    folder = Path(folder)
    if not (folder / INFO_FILE).is_file() or not (folder / MODEL_FILE).is_file():
        raise MissingFileError(f"{folder} is not a robustft export (it needs {INFO_FILE} and {MODEL_FILE}; "
                               "write one with robustft export RUN --out DIR)")
    extra = json.loads((folder / INFO_FILE).read_text())["robustft"]
    if extra["model"].get("name") == UNKNOWN:
        raise ForeignFileError(f"{folder} holds the weights of a model robustft did not build (architecture "
                               "unknown); load them into your own model: "
                               f"model.load_state_dict(safetensors.torch.load_file({str(folder / MODEL_FILE)!r}))")
    model = build_model(ModelConfig(**extra["model"]), extra["num_classes"])
    model.load_state_dict(load_file(str(folder / MODEL_FILE)))
    return model.eval()
