"""Registries: one per kind of component a config names (ε schedules, objectives, training attacks, evaluation
attacks). Each entry is declared once, beside its implementation, with its name, its builder, the keys of its
config section it uses and the validation of those keys::

    SCHEDULES.register("hinge", build_hinge, keys=("t1", "t2", "granularity"), check=ramp_problems,
                       summary="Epsilon-Scheduling: ε = 0 until t1, a linear ramp to ε_g at t2")

Config validation (robustft/config/validate.py), the builders and ``robustft --help`` ask the registries, so
adding a kind is one ``register`` call in one module. The registries live here, below everything that
registers into them; the entries are registered when their modules are imported, which ``import robustft``
does (robustft/schedules.py, robustft/objectives/__init__.py, robustft/attacks/__init__.py, robustft/data/).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping

from robustft.config.sections import AttackConfig, FinetuneConfig, ObjectiveConfig, ScheduleConfig
from robustft.errors import ConfigError


@dataclass(frozen=True)
class Entry:
    """One registered kind.

    Attributes:
        name: what a config writes (``schedule.kind: hinge``).
        build: the builder; its arguments are the registry's (see each registry's docstring).
        keys: the keys of its config section it uses. The registry's ``optional`` keys it does not list must be
            left unset (null), so a config never sets a key that has no effect. A key that is not a field of the
            section is the kind's own: it needs a default, a config writes it in the section like any other key,
            and the section holds it in ``options`` (:meth:`Registry.option` reads it).
        check: the problems with its own keys, ``check(section, config) -> messages`` (empty when fine).
        summary: one line for ``--help`` and error messages.
        defaults: the value each of its ``keys`` takes where the config leaves it null (only keys whose default
            depends on the kind; e.g. a hinge schedule's t1 and t2).
        clean: objectives only: trains on clean inputs and never attacks (the clean reference of a comparison).
        baseline: schedules only: the robust baseline every other schedule is compared with (RFT-fix): paired
            t-tests pair each schedule's runs with its runs, and tables list it right after the clean reference.
        adaptive: schedules only: it reads the validation accuracy while training (so training needs
            validation data, and its resolved state is in summary.json).
        color: its colour in plots (None: a shared one for kinds without their own).
        extra: constants of this kind other modules need (e.g. a training attack's default step size).
    """

    name: str
    build: Callable[..., Any]
    keys: tuple[str, ...] = ()
    check: Callable[[Any, Any], Iterable[str]] | None = None
    summary: str = ""
    defaults: Mapping[str, Any] = field(default_factory=dict)
    clean: bool = False
    baseline: bool = False
    adaptive: bool = False
    color: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


class Registry:
    """The kinds of one config key, by name, in registration order."""

    def __init__(self, what: str, key: str, optional: tuple[str, ...] = (), section: type | None = None):
        self.what = what
        self.key = key
        """``section.key`` that names the kind, e.g. ``schedule.kind``."""
        self.optional = optional
        """Keys of the section that only some kinds take (null unless the chosen kind lists them)."""
        self.section = section
        """The config section's dataclass, when the kinds' keys are its fields (checked at registration)."""
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, build: Callable[..., Any], **fields: Any) -> Entry:
        """Declare a kind (see :class:`Entry` for ``fields``); returns its entry.

        Raises:
            ValueError: ``name`` is already registered, or it names keys (or defaults) its section does not
                have or it does not list.
        """
        if name in self._entries:
            raise ValueError(f"{self.key}: {name!r} is already registered")
        entry = Entry(name, build, **fields)
        stray = [k for k in self.own_keys(entry) if k not in entry.defaults]
        stray += [k for k in entry.defaults if k not in entry.keys]
        if stray:
            raise ValueError(f"{self.key}: {name!r} names key(s) {', '.join(stray)} that it does not list in keys, "
                             f"or that its section {self.key.split('.')[0]} does not have and it gives no default")
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> None:
        """Remove a kind (a test's toy kind)."""
        del self._entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, name: str) -> Entry:
        """The entry of ``name``.

        Raises:
            ConfigError: no such kind; the message lists the registered ones.
        """
        if name not in self._entries:
            raise ConfigError(self.unknown(name))
        return self._entries[name]

    def unknown(self, name: object) -> str:
        return f"{self.key}: unknown {self.what} {name!r}; choose {', '.join(self._entries) or '(none registered)'}"

    def entries(self) -> list[Entry]:
        return list(self._entries.values())

    def problems(self, section: Any, config: Any) -> list[str]:
        """What is wrong with ``section`` (a config section naming a kind by :attr:`key`) for its kind: an unknown
        name, an optional key its kind does not take, and the kind's own check."""
        name = getattr(section, self.key.split(".")[1])
        if name not in self._entries:
            return [self.unknown(name)]
        entry = self._entries[name]
        section_name = self.key.split(".")[0]
        takes = ", ".join(k for k in self.optional if k in entry.keys) or "none of " + ", ".join(self.optional)
        out = [f"{section_name}.{k}: the {name} {self.what} does not take it (it takes {takes}); remove it or set "
               "it to null" for k in self.optional if k not in entry.keys and getattr(section, k) is not None]
        out += [f"{section_name}.{k}: the {name} {self.what} does not take it ({self._whose(k)})"
                for k in getattr(section, "options", {}) if k not in self.own_keys(entry)]
        return out + list(entry.check(section, config) if entry.check is not None else [])

    def help(self) -> str:
        """``name: summary`` lines, for ``--help``."""
        return "\n".join(f"  {e.name:<12} {e.summary}" for e in self._entries.values())

    def own_keys(self, entry: Entry | str) -> tuple[str, ...]:
        """The keys of a kind that are not fields of the section: its own, held in the section's ``options``."""
        entry = self[entry] if isinstance(entry, str) else entry
        fields = {f.name for f in dataclasses.fields(self.section)} if self.section is not None else set(entry.keys)
        return tuple(k for k in entry.keys if k not in fields)

    def owners(self, key: str) -> list[str]:
        """The kinds that add ``key`` of their own to the section."""
        return [e.name for e in self._entries.values() if key in self.own_keys(e)]

    def _whose(self, key: str) -> str:
        owners = self.owners(key)
        return f"the {' and '.join(owners)} {self.what} takes it" if owners else f"no {self.what} takes it"

    def option(self, section: Any, key: str) -> Any:
        """The value of a kind's own ``key`` in ``section`` (a config section naming the kind): the one given,
        else the kind's default."""
        name = getattr(section, self.key.split(".")[1])
        return section.options[key] if key in section.options else self[name].defaults[key]

    def default(self, name: str, key: str, value: Any) -> Any:
        """``value`` of kind ``name``'s ``key``, or the kind's default where ``value`` is None."""
        return self[name].defaults.get(key) if value is None else value

    def unused(self) -> list[str]:
        """The optional keys no registered kind takes: a section key that could never have an effect."""
        return [k for k in self.optional if not any(k in e.keys for e in self._entries.values())]

    def first(self, flag: str) -> Entry | None:
        """The first entry with ``flag`` set (e.g. ``baseline``), or None."""
        return next((e for e in self._entries.values() if getattr(e, flag)), None)

    def keys_of(self, name: str, section: Mapping[str, Any]) -> tuple[str, ...]:
        """The keys of ``section`` (a config section as a mapping) that kind ``name`` uses: all of them, sorted,
        for a kind not registered here (a run of a kind from elsewhere is kept apart by every key)."""
        return self._entries[name].keys if name in self._entries else tuple(sorted(section))


SCHEDULES = Registry("ε schedule", "schedule.kind", optional=("t1", "t2", "latest_t1", "points"), section=ScheduleConfig)
"""ε schedules; ``build(schedule_config, eps_target, epochs, seed) -> Schedule`` (robustft/schedules.py)."""
OBJECTIVES = Registry("objective", "objective.name", section=ObjectiveConfig)
"""Training objectives; ``build(config) -> Objective`` (robustft/objectives/__init__.py)."""
TRAIN_ATTACKS = Registry("training attack", "attack.name", section=AttackConfig)
"""Training attacks; ``build(attack_config, threat_model) -> Attack`` (robustft/attacks/__init__.py)."""
BACKBONES = Registry("backbone source", "model.name")
"""Where backbones come from; ``build(model_config) -> (backbone, mean, std)``, the backbone returning pooled
features. ``model.name`` is open (any timm name), so an entry says which names it takes with
``extra["matches"](name) -> bool``; :func:`backbone_source` tries them in order, the ``fallback`` one (timm) last
(robustft/models/build.py)."""
DATASETS = Registry("dataset", "data.name")
"""Datasets; ``build(data_config) -> (splits, class names)`` with splits ``{"train", "test"[, "val"]: ImageSource}``
(robustft/data/datasets.py, robustft/data/paper.py)."""
TUNE_MODES = Registry("tune mode", "finetune.mode", optional=("rank", "alpha", "targets"), section=FinetuneConfig)
"""What fine-tuning trains; ``build(model, finetune_config) -> None`` adapts the model in place (adapters) and
sets which parameters train (robustft/train/tune.py)."""
HEAD_STARTS = Registry("head start", "finetune.head", optional=("probe_epochs",), section=FinetuneConfig)
"""How the new head starts; ``build(eps_target) -> ε of the probing epochs`` (None: no probing), with
``defaults["probe_epochs"]`` (robustft/train/tune.py)."""
EVAL_ATTACKS = Registry("evaluation attack", "eval.attacks")
"""Evaluation attacks; ``build(eval_config, norm) -> Attack`` (robustft/attacks/__init__.py)."""


def backbone_source(name: str) -> Entry:
    """The :data:`BACKBONES` entry that builds the backbone ``name``."""
    entries = sorted(BACKBONES.entries(), key=lambda e: bool(e.extra.get("fallback")))
    for entry in entries:
        if entry.extra["matches"](name):
            return entry
    raise ConfigError(f"model.name: no backbone source takes {name!r} (sources: {', '.join(BACKBONES)})")


def is_clean_objective(name: str) -> bool:
    """Whether the objective ``name`` trains on clean inputs only (standard fine-tuning: the clean reference)."""
    return name in OBJECTIVES and OBJECTIVES[name].clean
