"""What fine-tuning trains (``finetune.mode``: full, linear, bitfit, lora) and how the head starts
(``finetune.head``: random, linear_probe, robust_linear_probe): frozen weights stay as they were and get no
optimiser state, the probing epochs train the head alone at their ε and resume exactly, the object API equals the
config path for every mode, and an export holds the adapters merged into a plain model."""

from __future__ import annotations

import pytest
import torch

import robustft
from robustft.api import fine_tune
from robustft.attacks import APGD
from robustft.config import ConfigError, apply_overrides, config_from_dict, config_to_dict, load_config
from robustft.data import SourceBatches, build_data
from robustft.export import export_run, load_classifier
from robustft.objectives import AdversarialObjective
from robustft.runs import RunDir, read_rows
from robustft.schedules import build_lr_schedule
from robustft.train import build_optimizer, build_tuned_model, fit_config, load_checkpoint
from robustft.train.trainer import seed_everything

from helpers import TINY, run_killed_and_resumed

MODES = {"linear": [], "bitfit": [], "lora": ["finetune.rank=2"]}


def _config(tmp_path, *overrides: str):
    return load_config(None, TINY + [f"train.out_dir={tmp_path}", "train.evaluate=false", *overrides])


def _initial(cfg) -> dict[str, torch.Tensor]:
    """The weights the config path starts from (it seeds, builds the data, then the model)."""
    seed_everything(cfg.train.seed)
    data = build_data(cfg.data)
    model = build_tuned_model(cfg.model, cfg.finetune, data.head_classes(cfg.model.num_classes))
    return {k: v.clone() for k, v in model.state_dict().items()}, model


@pytest.mark.parametrize("mode", list(MODES))
def test_frozen_weights_stay_as_they_were_and_get_no_optimiser_state(tmp_path, mode):
    cfg = _config(tmp_path, f"finetune.mode={mode}", *MODES[mode])
    start, model = _initial(cfg)
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen and trained and all(n.startswith("head.") or mode != "linear" for n in trained)
    if mode == "lora":
        assert all(n.startswith("head.") or n.endswith(("lora_a", "lora_b")) for n in trained)
    if mode == "bitfit":
        assert any(n.endswith(".bias") and not n.startswith("head.") for n in trained)
        assert not any(n.endswith(".weight") and n.startswith("backbone.") and "bn" not in n and "norm" not in n
                       for n in trained)
    run = fine_tune(cfg, name=mode)
    ckpt = load_checkpoint(run.checkpoint_path)
    for name in frozen:
        assert torch.equal(ckpt["model"][name], start[name]), name
    assert any(not torch.equal(ckpt["model"][n], start[n]) for n in trained)
    state = ckpt["optimizer"]["state"]
    assert len(state) == len(trained)  # one entry per trained parameter, none for the frozen ones
    summary = run.summary()
    assert summary is not None and summary.tuning["mode"] == mode
    assert summary.tuning["trained_parameters"] == sum(model.get_parameter(n).numel() for n in trained)
    assert summary.tuning["trained_parameters"] < summary.tuning["parameters"]


def test_the_linear_mode_keeps_the_backbones_normalisation_statistics(tmp_path):
    cfg = _config(tmp_path, "finetune.mode=linear")
    start, _ = _initial(cfg)
    ckpt = load_checkpoint(fine_tune(cfg, name="linear").checkpoint_path)
    stats = [k for k in start if k.startswith("backbone.") and k.endswith(("running_mean", "running_var"))]
    assert stats and all(torch.equal(ckpt["model"][k], start[k]) for k in stats)


@pytest.mark.parametrize(("head", "probe_eps"), [("linear_probe", 0.0), ("robust_linear_probe", 8 / 255)])
def test_probing_epochs_train_the_head_alone_at_their_eps_then_the_run_goes_on(tmp_path, head, probe_eps):
    cfg = _config(tmp_path, f"finetune.head={head}", "finetune.probe_epochs=1", "schedule.kind=fix",
                  "schedule.t1=null", "schedule.t2=null", "train.epochs=2")
    start, _ = _initial(cfg)
    seen = {}

    def on_epoch(row):
        if row.epoch == 0:
            seen.update(load_checkpoint(RunDir(tmp_path / head).checkpoint_path)["model"])

    run = RunDir(tmp_path / head)
    run.create(cfg)
    fit_config(cfg, run, on_epoch=on_epoch)
    rows = run.epoch_rows()
    assert [r.phase for r in rows] == ["probe", None]
    assert rows[0].eps == pytest.approx(probe_eps) and rows[1].eps == pytest.approx(8 / 255)  # fix after probing
    after_probe = {k: v for k, v in seen.items()}
    backbone = [k for k in start if not k.startswith("head.")]
    assert all(torch.equal(after_probe[k], start[k]) for k in backbone)  # weights and statistics alike
    assert not torch.equal(after_probe["head.weight"], start["head.weight"])
    final = load_checkpoint(run.checkpoint_path)["model"]
    assert any(not torch.equal(final[k], start[k]) for k in backbone)  # fine-tuned after probing


@pytest.mark.integration
@pytest.mark.parametrize("kill_after", [1, 2], ids=["during-probing", "after-probing"])
def test_a_run_killed_during_or_after_probing_resumes_bit_identically(tmp_path, monkeypatch, kill_after):
    cfg = _config(tmp_path, "finetune.head=robust_linear_probe", "finetune.probe_epochs=2", "finetune.mode=lora",
                  "finetune.rank=2", "schedule.t1=0", "schedule.t2=3")
    straight, resumed = run_killed_and_resumed(cfg, monkeypatch, kill_after)  # killed after epoch 1 or 2
    a, b = load_checkpoint(straight.checkpoint_path), load_checkpoint(resumed.checkpoint_path)
    assert a["step"] == b["step"] and a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    rows_a = [{k: v for k, v in r.to_json().items() if k != "elapsed_s"} for r in read_rows(straight.path)]
    rows_b = [{k: v for k, v in r.to_json().items() if k != "elapsed_s"} for r in read_rows(resumed.path)]
    assert rows_a == rows_b and [r["phase"] for r in rows_a if r["kind"] == "epoch" and "phase" in r] == ["probe"] * 2


@pytest.mark.parametrize("mode", ["full", *MODES])
def test_object_api_and_config_path_train_the_same_weights_in_every_mode(tmp_path, mode):
    extra = [f"finetune.mode={mode}", *MODES.get(mode, []), "finetune.head=linear_probe", "finetune.probe_epochs=1"]
    cfg = _config(tmp_path, *extra)
    run = RunDir(tmp_path / "config_path")
    run.create(cfg)
    fit_config(cfg, run)
    ckpt = load_checkpoint(run.checkpoint_path)

    seed_everything(cfg.train.seed)  # as the config path does before it builds the data and the model
    data = build_data(cfg.data)
    model = robustft.build_model(cfg.model, data.num_classes)
    tuning = robustft.tuning(mode, head="linear_probe", probe_epochs=1, **({"rank": 2} if mode == "lora" else {}))
    tuning.apply(model)  # adapters and frozen weights before the optimiser; fit applying it again changes nothing
    d = cfg.data
    train = SourceBatches(data.train, d.image_size, d.batch_size, cfg.train.seed, d.flip, d.pad_crop)
    epochs = cfg.train.epochs
    robustft.fit(model, train, val=data.val, objective=AdversarialObjective(APGD(num_steps=2)),
                 schedule=robustft.eps_schedule("hinge", eps=cfg.attack.eps, epochs=epochs, t1=1, t2=2),
                 epochs=epochs, optimizer=build_optimizer(model, cfg.optim),
                 lr_schedule=build_lr_schedule(cfg.optim, epochs, train.steps_per_epoch), seed=cfg.train.seed,
                 channels_last=False, tuning=tuning)
    state = model.state_dict()
    assert state.keys() == ckpt["model"].keys()
    for k in state:
        assert torch.equal(state[k], ckpt["model"][k]), k


@pytest.mark.integration
def test_an_export_of_a_lora_run_holds_the_merged_plain_model(tmp_path):
    cfg = load_config(None, TINY + [f"train.out_dir={tmp_path}", "finetune.mode=lora", "finetune.rank=2"])
    run = fine_tune(cfg, name="lora")
    export_run(run.path, tmp_path / "export")
    plain = load_classifier(tmp_path / "export")  # built without adapters
    assert not any("lora" in k for k in plain.state_dict())
    adapted = build_tuned_model(cfg.model, cfg.finetune, 10)
    adapted.load_state_dict(load_checkpoint(run.checkpoint_path)["model"])
    x = torch.rand(8, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(plain(x), adapted.eval()(x), rtol=0, atol=1e-5)


@pytest.mark.parametrize(("overrides", "message"), [
    (["finetune.mode=lora", "finetune.rank=0"], "finetune.rank: must be >= 1"),
    (["finetune.mode=lora", "finetune.targets=[conv3x3]"], "finetune.targets: 'conv3x3'"),
    (["finetune.rank=4"], "finetune.rank: the full tune mode does not take it"),
    (["finetune.mode=adapter"], "finetune.mode: unknown tune mode 'adapter'; choose full, linear, bitfit, lora"),
    (["finetune.head=linear_probe", "finetune.probe_epochs=3"], "finetune.probe_epochs: 3 probing epochs in a run "
                                                                "of train.epochs=3"),
    (["finetune.probe_epochs=2"], "finetune.probe_epochs: the random head start does not take it"),
])
def test_bad_finetune_settings_are_named_with_their_fix(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        load_config(None, TINY + overrides)


def test_the_object_api_checks_its_tuning_settings():
    with pytest.raises(TypeError, match="unknown setting"):
        robustft.tuning("lora", ranks=4)
    with pytest.raises(ConfigError, match="rank: must be >= 1"):
        robustft.tuning("lora", rank=0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 2))
    with pytest.raises(ConfigError, match="no child module 'head'"):
        robustft.tuning("linear").apply(model)


def test_a_run_config_round_trips_its_finetune_section(tmp_path):
    cfg = _config(tmp_path, "finetune.mode=lora", "finetune.rank=4", "finetune.head=robust_linear_probe",
                  "train.epochs=6")  # the default 5 probing epochs leave one to fine-tune
    again = config_from_dict(apply_overrides(config_to_dict(cfg), []))
    assert again == cfg and again.finetune.rank == 4 and again.finetune.probe_epochs is None


def test_a_model_with_adapters_folds_every_batchnorm_and_its_copy_follows_the_adapters():
    import timm

    from robustft.models.fold import FoldedCopy, conv_bn_pairs, fold_batchnorm
    from robustft.models.lora import add_lora

    torch.manual_seed(0)
    model = timm.create_model("test_efficientnet", pretrained=False, num_classes=3).eval()
    pairs = len(conv_bn_pairs(model))
    add_lora(model, rank=2, skip=("classifier",))
    assert len(conv_bn_pairs(model)) == pairs  # a pointwise conv with adapters pairs with its BatchNorm as before
    x = torch.rand(4, 3, 32, 32)
    kept = FoldedCopy(model, x)
    for name, p in model.named_parameters():
        if name.endswith("lora_b"):
            p.data.normal_(0, 0.05)  # as training moves them
    with torch.no_grad():
        want = model(x)
        torch.testing.assert_close(kept()(x), want, rtol=0, atol=1e-4)  # refreshed from the adapted weights
        torch.testing.assert_close(fold_batchnorm(model, x)(x), want, rtol=0, atol=1e-4)
    assert not any("lora" in k for k in kept().state_dict())


@pytest.mark.integration
def test_the_report_compares_remedies_with_the_papers_fine_tuning(tmp_path):
    from robustft.report.render import build_report

    fix = ["schedule.kind=fix", "schedule.t1=null", "schedule.t2=null", "train.epochs=2"]
    for seed in (0, 1):
        for name, extra in (("fix", []), ("lpft", ["finetune.head=linear_probe", "finetune.probe_epochs=1"])):
            fine_tune(load_config(None, TINY + fix + extra + [f"train.out_dir={tmp_path}", f"train.seed={seed}"]),
                      name=f"{name}-s{seed}")
    sections = {s.title: s for s in build_report(sorted(tmp_path.iterdir()))}
    remedies = sections["Remedies vs the paper's fine-tuning: paired t-tests"]
    tests, sizes = remedies.blocks[1], remedies.blocks[2]
    assert [row[:4] for row in tests.rows] == [["fix + linear_probe", "fix", m, "2"] for m in ("Clean", "Adv.", "E.adv")]
    assert [row[0] for row in sizes.rows] == ["fix", "fix + linear_probe"]


def test_fit_refuses_an_optimiser_built_before_the_adapters_and_a_model_without_the_head():
    model = robustft.build_model(load_config(None, TINY).model, 10)
    optimizer = torch.optim.AdamW(model.parameters())
    schedule = robustft.eps_schedule("fix", eps=8 / 255, epochs=2)
    x, y = torch.rand(8, 3, 16, 16), torch.randint(0, 10, (8,))
    with pytest.raises(ConfigError, match="optimizer: it does not hold .* trained parameter"):
        robustft.fit(model, [(x, y)], objective=AdversarialObjective(APGD(num_steps=1)), schedule=schedule, epochs=2,
                     optimizer=optimizer, tuning=robustft.tuning("lora", rank=2))
    with pytest.raises(ConfigError, match="no child module 'fc'.*it has normalize, backbone, head"):
        robustft.tuning("linear", head_module="fc").apply(model)
