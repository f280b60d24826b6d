"""Robustness curves at APGD cost: seven evaluations of the same examples, side by side in one run on one model.

- **independent**: APGD-CE + APGD-T (eval.num_steps, eval.targets) on every clean-correct example at every ε;
- **incremental** (cold, robustft's default): the same attacks, at each ε only what survived the previous ε;
- **warm incremental**: the same, each attack starting every example at ε_k from its own highest-loss
  point of ε_{k−1} (``eval.warm_steps`` iterations after the first ε);
- **warm downward**: the same attacks and iterations on every clean-correct example at ε_g, then down the
  grid on what broke at the ε above, each run starting from the point that broke the example there (and
  a cold run where that fails);
- **FMN + warm downward**: the FMN minimum-norm pass (``eval.fmn_steps``) first, then the warm downward
  walk with the same attacks and iterations, an example FMN broke above starting from FMN's point: the
  curve preset's attacks at the eval defaults' cost, without its check;
- **curve preset** (``--attacks curve``, with the preset's own settings, not the run's, except what
  ``--set`` gives): the FMN minimum-norm pass, then APGD-CE + APGD-T walking the grid downward from ε_g
  (100 iterations; 20 for a run warm-started from the point that broke the example at the ε above), plus
  its AutoAttack check at ε_g on ``check_autoattack`` examples (its time included);
- **AutoAttack** (standard, the reference implementation) at each of ``--aa-eps`` (≥ 3 grid points), one ε
  at a time on every clean-correct example (largest ε first), each ε timed and saved as its own leg.

Every leg is written to ``--json`` as it finishes; ``--resume`` keeps the legs already there (their
times and curves) and runs only the rest, so a run of several hours can be stopped and continued.

Prints per-ε accuracies, wall times, the ratios warm / independent and curve / AutoAttack, whether the warm
curve is ever above the cold incremental one, and the curve preset's largest gap to AutoAttack.

    python benchmarks/curves.py runs/demo/scheduled-seed0 --n 200 --eps-grid 0:8/255:1/255 \\
        --aa-eps 2/255,4/255,8/255
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch
from run_model import load_run

from robustft.attacks import AutoAttack, build_eval_attacks
from robustft.config import EVAL_PRESET_SETTINGS, format_eps, parse_eps_grid
from robustft.eval import SanityChecks, evaluate

CPU = torch.device("cpu")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path)
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--eps-grid", required=True, help="START:STOP:STEP or a comma list, ε_g last")
    p.add_argument("--aa-eps", required=True, help="comma list of grid points for AutoAttack (≥ 3)")
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--skip", default="", help="comma list of evaluations to leave out (e.g. independent)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="eval settings, e.g. warm_steps=3")
    p.add_argument("--json", type=Path, help="also write the numbers here")
    p.add_argument("--resume", action="store_true", help="keep the legs already in --json, run only the rest")
    p.add_argument("--seed", type=int, default=0, help="the evaluations' seed (random starts), e.g. for the "
                   "spread of the cold incremental grid")
    args = p.parse_args()
    run, cfg, model, test = load_run(args.run_dir, args.n)
    sets = {k: _value(v) for k, v in (s.split("=", 1) for s in args.set)}
    eval_cfg = dataclasses.replace(cfg.eval, **sets)
    grid = parse_eps_grid(args.eps_grid)
    aa_grid = parse_eps_grid(args.aa_eps)
    missing = [format_eps(e) for e in aa_grid if not any(abs(e - g) < 1e-9 for g in grid)]
    if missing:
        raise SystemExit(f"--aa-eps {missing} not on the grid")
    norm = cfg.attack.norm
    base = dataclasses.replace(eval_cfg, attacks=["apgd-ce", "apgd-t"])
    # the preset with its own settings (not the run's), except what --set gives
    curve_cfg = dataclasses.replace(cfg.eval, attacks=["curve"], **{**dict.fromkeys(EVAL_PRESET_SETTINGS["curve"]), **sets})
    warm_steps = eval_cfg.settings.warm_steps
    cold = warm = build_eval_attacks(base, norm)  # warm_steps only applies to runs given a start
    with_fmn = build_eval_attacks(dataclasses.replace(base, attacks=["fmn", "apgd-ce", "apgd-t"]), norm)
    curve = build_eval_attacks(curve_cfg, norm)
    aa_n = curve_cfg.settings.check_autoattack
    jobs = {"independent": (cold, grid, "independent", False),
            "incremental": (cold, grid, "incremental", False),
            "warm incremental": (warm, grid, "incremental", True),
            "warm downward": (warm, grid, "downward", True),
            "FMN + warm downward": (with_fmn, grid, "downward", True),
            "curve preset": (curve, grid, curve_cfg.settings.mode,
                             curve_cfg.settings.warm_start)}
    for e in sorted(aa_grid, reverse=True):  # ε_g first: the point that matters most if the run is stopped
        jobs[f"AutoAttack {format_eps(e)}"] = ({"autoattack": AutoAttack(norm=norm)}, [e], "independent", False)
    skip = set(filter(None, args.skip.split(",")))
    jobs = {k: v for k, v in jobs.items() if k not in skip and not (k.startswith("AutoAttack") and "AutoAttack" in skip)}
    times, curves, extra = {}, {}, {}
    extra["evaluation seed"] = str(args.seed)
    if args.resume and args.json and args.json.exists():
        kept = json.loads(args.json.read_text())
        if kept["facts"].get("evaluation seed", "0") != str(args.seed):
            raise SystemExit(f"{args.json} holds legs of seed {kept['facts']['evaluation seed']}, not {args.seed}: "
                             "resume with that seed, or write another --json")
        times, extra = kept["times"], {**kept["facts"], **extra}
        curves = {k: {float(e): a for e, a in c.items()} for k, c in kept["curves"].items()}
        print(f"  resuming: {', '.join(times)} kept from {args.json}", flush=True)
    for name, (attacks, eps_grid, mode, warm_start) in jobs.items():
        if name in times:
            continue
        t0 = time.perf_counter()
        result = evaluate(model, test, eps_grid, attacks, device=CPU, image_size=cfg.data.image_size,
                          batch_size=args.batch_size, mode=mode, seed=args.seed, warm_start=warm_start, bootstrap=0)
        if name == "curve preset" and aa_n:
            t1 = time.perf_counter()
            flag = SanityChecks(norm=norm, autoattack_n=aa_n).check_autoattack(model, test, result, CPU,
                                                                                cfg.data.image_size)
            extra["autoattack check"] = (flag.message + (" [raised]" if flag.raised else " [passed]") +
                                         f"; {time.perf_counter() - t1:.1f} s of the curve preset's time")
        if result.expected_exact is not None:
            extra[f"{name}: E.adv exact (min-norm)"] = f"{100 * result.expected_exact:.1f}"
        times[name] = time.perf_counter() - t0
        curves[name] = dict(zip((round(e * 255, 6) for e in result.eps), result.accuracy))
        print(f"  {name}: {times[name]:.1f} s; accuracy (%) " +
              " ".join(f"{100 * a:.1f}" for a in result.accuracy), flush=True)  # what a killed run keeps
        if args.json:
            args.json.write_text(json.dumps({"run": str(args.run_dir), "times": times, "curves": curves,
                                             "facts": extra, "partial": True}, indent=1))
    legs = [j for j in jobs if not j.startswith("AutoAttack ")]
    aa_legs = [j for j in jobs if j.startswith("AutoAttack ")]
    if aa_legs:  # one column: AutoAttack at every ε it ran, its time the sum of its legs
        legs.append("AutoAttack")
        curves["AutoAttack"] = {k: a for j in aa_legs for k, a in curves[j].items()}
        times["AutoAttack"] = sum(times[j] for j in aa_legs)
        extra["AutoAttack time per ε (s)"] = ", ".join(f"{j.split()[1]}: {times[j]:.1f}" for j in aa_legs)
    report(run, cfg, eval_cfg, curve_cfg, test, grid, warm_steps, legs, times, curves, extra, args.json)


def _value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def report(run, cfg, eval_cfg, curve_cfg, test, grid, warm_steps, jobs, times, curves, extra, out) -> None:
    print(f"\nmodel: {run.path} ({cfg.model.name}, {cfg.data.name} {cfg.data.image_size}px, ε_g "
          f"{format_eps(cfg.attack.eps)}); n={len(test)}; APGD-CE + APGD-T ({eval_cfg.settings.num_steps} steps, "
          f"{eval_cfg.targets} targets), warm_steps {warm_steps}; curve preset: "
          f"{', '.join(f'{k} {getattr(curve_cfg.settings, k)}' for k in EVAL_PRESET_SETTINGS['curve'])}; torch threads {torch.get_num_threads()}\n")
    print("| ε | " + " | ".join(jobs) + " |")
    print("|---|" + "---|" * len(jobs))
    for e in grid:
        k = round(e * 255, 6)
        cells = [f"{100 * curves[j][k]:.1f}" if k in curves[j] else "" for j in jobs]
        print(f"| {format_eps(e)} | " + " | ".join(cells) + " |")
    print("| wall time (s) | " + " | ".join(f"{times[j]:.1f}" for j in jobs) + " |")
    facts: dict[str, str] = {}
    if "independent" in times and "warm incremental" in times:
        facts["time warm incremental / independent"] = f"{times['warm incremental'] / times['independent']:.2f}"
    if "independent" in times and "incremental" in times:
        facts["time incremental / independent"] = f"{times['incremental'] / times['independent']:.2f}"
    for leg in ("warm downward", "FMN + warm downward"):
        if "independent" in times and leg in times:
            facts[f"time {leg} / independent"] = f"{times[leg] / times['independent']:.2f}"
    for leg in ("warm incremental", "warm downward", "FMN + warm downward"):
        if "incremental" in curves and leg in curves:
            gap = max(curves[leg][k] - curves["incremental"][k] for k in curves["incremental"])
            facts[f"{leg} above cold incremental, largest (points)"] = f"{100 * gap:+.1f}"
    if "AutoAttack" in curves and "curve preset" in curves:
        aa = curves["AutoAttack"]
        gaps = {k: curves["curve preset"][k] - aa[k] for k in aa}
        facts["curve − AutoAttack per ε (points)"] = ", ".join(f"{k:g}/255: {100 * v:+.1f}" for k, v in gaps.items())
        facts["time curve / AutoAttack"] = f"{times['curve preset'] / times['AutoAttack']:.2f}"
    facts.update(extra)
    print()
    for k, v in facts.items():
        print(f"- {k}: {v}")
    if out:
        out.write_text(json.dumps({"run": str(run.path), "n": len(test), "times": times, "curves": curves,
                                   "facts": facts}, indent=1))


if __name__ == "__main__":
    main()
