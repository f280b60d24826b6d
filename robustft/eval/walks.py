"""How an evaluation walks its ε grid, and what it attacks.

A :class:`Target` is what is attacked (the model on its examples, where, in what batches, and this process's
share under torchrun). A :class:`Walk` says, for each ε of the grid in its order, which examples the attacks
try there, which count as settled without an attack, where each attack starts an example (warm starts) and
what the points it found mean for the ε walked next. The three walks (``WALKS``, keyed by ``eval.mode``):

- :class:`Incremental` walks the grid upward and attacks at each ε only the examples still correct at the
  previous ε; a warm-started attack begins each example from its own highest-loss point of the ε below.
- :class:`Downward` attacks every clean-correct example at ε_g, then walks down and attacks at each ε only the
  examples broken at the ε above (an example no attack broke in the larger ball is robust in the smaller
  one); a warm start is the point that broke the example above, projected into the smaller ball, and a warm
  run that fails is followed by a cold one before the example counts as robust.
- :class:`Independent` attacks every clean-correct example at every ε, always cold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, cast

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from robustft import distributed as ddp
from robustft.attacks import Attack
from robustft.attacks.base import MinNormAttack, WarmStartable, accepts_start
from robustft.config import format_eps
from robustft.data import ImageSource, eval_batches
from robustft.eval.state import EvalState

Starts = tuple[torch.Tensor, np.ndarray]
"""An attack's warm starts at one ε: (a point per example, which examples start from theirs)."""


# ------------------------------------------------------------------------------------ what is attacked
@dataclass(frozen=True)
class Target:
    """The model an evaluation attacks, on its examples: where (``device``), at what image size, in batches of
    ``batch_size``, and this process's ``shard`` of every set of examples (torchrun). ``shape`` is one image's
    shape where attacked points are kept for warm starts, else ()."""

    model: nn.Module
    source: ImageSource
    device: torch.device
    image_size: int
    batch_size: int
    shard: ddp.Shard
    shape: tuple[int, ...] = ()

    def mine(self, rows: np.ndarray) -> np.ndarray:
        """This process's share of the examples ``rows``."""
        return np.array_split(rows, self.shard.world)[self.shard.rank]

    def attack(self, rows: np.ndarray, eps: float, attack: Attack | None, bar: tqdm,
               starts: torch.Tensor | None = None, keep: bool = False) -> tuple[np.ndarray, torch.Tensor | None]:
        """(alive, points): per example of ``rows``, still classified correctly after ``attack`` at ``eps``
        (clean without an attack or at ε = 0), and, with ``keep``, the attacked images (on the CPU).
        ``starts`` (one per example of ``rows``) are the attack's starting points (``x_init``)."""
        alive, points, done = [], [], 0
        for x, y in eval_batches(self.source.subset(rows), self.image_size, self.batch_size):
            x, y = x.to(self.device), y.to(self.device)
            if attack is None or eps == 0:
                x_adv = x
            elif starts is not None:
                x_adv = cast(WarmStartable, attack)(self.model, x, y, eps,
                                                    x_init=starts[done:done + len(y)].to(self.device))
            else:
                x_adv = attack(self.model, x, y, eps)
            done += len(y)
            with torch.no_grad():
                alive.append((self.model(x_adv).argmax(1) == y).cpu().numpy())
            if keep:
                points.append(x_adv.detach().float().cpu())
            bar.update(len(y))
        found = np.concatenate(alive) if alive else np.zeros(0, dtype=bool)
        return found, (torch.cat(points) if points else None) if keep else None

    def attack_share(self, rows: np.ndarray, eps: float, name: str, attack: Attack | None, starts: Starts | None,
                     keep: bool, retry_cold: bool) -> tuple[np.ndarray, torch.Tensor]:
        """(alive, points) of examples ``rows`` (this process's share) under ``attack`` at ``eps``: the
        examples with a warm start attacked from it, the others cold, and with ``retry_cold`` the warm-started
        ones the attack could not break attacked once more, cold; ``points`` holds the attacked images when
        ``keep`` (else it is empty)."""
        alive, points = np.zeros(len(rows), dtype=bool), torch.zeros((len(rows) if keep else 0, *self.shape))
        todo: list[tuple[np.ndarray, torch.Tensor | None]] = [(np.ones(len(rows), dtype=bool), None)] \
            if starts is None else [(~starts[1][rows], None), (starts[1][rows], starts[0])]
        while todo:
            part, start = todo.pop(0)
            if not part.any():
                continue
            desc = f"eval ε={format_eps(eps)} {name}" + (" (warm)" if start is not None else "")
            with tqdm(total=int(part.sum()), desc=desc, unit="img", disable=None if self.shard.main else True,
                      leave=False) as bar:
                alive[part], got = self.attack(rows[part], eps, attack, bar,
                                               None if start is None else start[rows[part]], keep)
            if got is not None:
                points[torch.from_numpy(np.flatnonzero(part))] = got
            if start is not None and retry_cold:
                todo.append((part & alive, None))
        return alive, points

    def radii(self, rows: np.ndarray, attack: MinNormAttack, bar: tqdm,
              keep: bool = False) -> tuple[np.ndarray, torch.Tensor]:
        """Per example of ``rows``: the smallest radius at which ``attack`` found a misclassified point (+inf
        where it found none), and with ``keep`` that point (on the CPU; the example itself where none was
        found; else an empty tensor)."""
        out, points = [], []
        for x, y in eval_batches(self.source.subset(rows), self.image_size, self.batch_size):
            x_adv, radius = attack.min_norm(self.model, x.to(self.device), y.to(self.device))
            out.append(radius.double().cpu().numpy())
            if keep:
                points.append(x_adv.detach().float().cpu())
            bar.update(len(y))
        return (np.concatenate(out) if out else np.zeros(0)), (torch.cat(points) if points else torch.zeros(0))


# ------------------------------------------------------------------------------------ how the grid is walked
@dataclass(frozen=True)
class Walk:
    """What every walk shares; ``warm``: attacks that take a starting point begin each example from one the
    walk kept (see the module docstring)."""

    warm: bool = False
    retry_cold: ClassVar[bool] = False
    """A warm-started attack that fails is followed by a cold one."""

    def order(self, num_eps: int) -> list[int]:
        """The grid indices in the order they are walked (index 0 is ε = 0, the clean row)."""
        return list(range(num_eps))

    def base(self, e: int) -> int:
        """The grid index whose surviving examples are the candidates at ``e`` (> 0): the clean row."""
        return 0

    def attacked(self, state: EvalState, e: int, prev: int) -> tuple[np.ndarray, np.ndarray]:
        """(row, settled) at grid index ``e``, walked after ``prev`` (-1 at the start): the examples counted
        correct before this ε's attacks, of which ``settled`` count as robust without one. Sets the breakers
        carried over from the base row."""
        base = self.base(e)
        row = state.correct[base].copy() if e > 0 else np.ones(state.correct.shape[1], dtype=bool)
        state.breaker[e] = state.breaker[base] if e > 0 else -1
        return row, self.settled(state, prev, row)

    def settled(self, state: EvalState, prev: int, row: np.ndarray) -> np.ndarray:
        """Of ``row``, the examples the walk counts as robust here without attacking them."""
        return np.zeros_like(row)

    def slot(self, name: str) -> str:
        """Under which name an attack's points are kept for the next ε: its own."""
        return name

    def keeps(self, attack: Attack | None) -> bool:
        """Whether the points ``attack`` finds are kept as starts for the next ε."""
        return self.warm and attack is not None and accepts_start(attack)

    @property
    def min_norm_slot(self) -> str | None:
        """Where the minimum-norm pass's points are kept as starts (None: they are not)."""
        return None

    def starts(self, state: EvalState, slot: str, attack: Attack | None, prev: int) -> Starts | None:
        """``attack``'s warm starts at the ε walked after ``prev``, or None when every example starts cold."""
        if not self.warm or attack is None or not accepts_start(attack) or state.starts_at != prev \
                or slot not in state.starts:
            return None
        return state.starts[slot], self.has_start(state.breaker[prev])

    def has_start(self, breaker_before: np.ndarray) -> np.ndarray:
        """Which examples start from their kept point, given each example's breaker at the ε walked before."""
        return np.ones(len(breaker_before), dtype=bool)

    def remember(self, state: EvalState, slot: str, todo: np.ndarray, alive: np.ndarray,
                 points: torch.Tensor) -> None:
        """Keep the points an attack found on examples ``todo`` for the next ε: every example's last point."""
        state.keep_start(slot, todo, points)


class Incremental(Walk):
    """Upward: at each ε, the examples still correct at the ε below."""

    def base(self, e: int) -> int:
        return e - 1


@dataclass(frozen=True)
class Independent(Walk):
    """Every clean-correct example at every ε, cold (its curve may rise with ε: the ``monotone`` check)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "warm", False)


DOWNWARD = "downward"
"""The slot of a downward walk's warm starts: per example, the point that broke it at the ε above."""


class Downward(Walk):
    """Clean first, then from ε_g down: at each ε below ε_g, only the examples broken at the ε above."""

    retry_cold: ClassVar[bool] = True

    def order(self, num_eps: int) -> list[int]:
        return [0] + list(range(num_eps - 1, 0, -1))

    def settled(self, state: EvalState, prev: int, row: np.ndarray) -> np.ndarray:
        return state.correct[prev] & row if prev > 0 else np.zeros_like(row)

    def slot(self, name: str) -> str:
        return DOWNWARD

    def keeps(self, attack: Attack | None) -> bool:
        return self.warm and attack is not None

    @property
    def min_norm_slot(self) -> str | None:
        return DOWNWARD if self.warm else None

    def has_start(self, breaker_before: np.ndarray) -> np.ndarray:
        return breaker_before > 0

    def remember(self, state: EvalState, slot: str, todo: np.ndarray, alive: np.ndarray,
                 points: torch.Tensor) -> None:
        """Keep the point that broke each example, for the ε below."""
        state.keep_start(slot, todo[~alive], points[torch.from_numpy(~alive)])


WALKS: dict[str, type[Walk]] = {"incremental": Incremental, "downward": Downward, "independent": Independent}
"""``eval.mode`` → its walk (the names of :data:`robustft.config.EVAL_MODES`)."""
