"""Perturbations carried across epochs (Zheng et al. 2020, "Efficient adversarial training with transferable
adversarial examples", ATTA): each training example's attack starts from where its attack of the previous
epoch ended, so a few attack steps per epoch add up to many.

The perturbation δ = x_adv − x of every training example is kept in the frame of the stored image, before
augmentation. When the example comes back, δ is moved with the example's new augmentation (the same flip and
crop, zero where the crop shows padding) and added to the augmented image; the attack projects that start into
the current ε-ball (an ε schedule may have grown or shrunk it). After the attack the new δ is moved back (the
crop's inverse: the pixels the crop did not show start from zero next time). An example seen for the first time
starts at a random point of the ball, as a cold attack would. Only flips and crops move pixels without changing
them, so carried perturbations refuse colour jitter and rotation.

The memory is part of the training state: it is saved in every checkpoint and restored on resume, so a resumed
run attacks exactly as an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from robustft.data.loader import Augmentation, flip_and_crop
from robustft.errors import ConfigError, DataError


def move_with(delta: torch.Tensor, aug: Augmentation) -> torch.Tensor:
    """Stored-frame perturbations [B, C, H, W] as they look after ``aug``'s flip and crop (zero padding)."""
    if aug.jitter is not None or aug.rotation is not None:
        raise ConfigError("carried perturbations follow flips and crops only; turn off data.color_jitter and "
                          "data.rotation, or attack.carry")
    return flip_and_crop(delta, aug)


def move_back(delta: torch.Tensor, aug: Augmentation) -> torch.Tensor:
    """The inverse of :func:`move_with` where the crop showed the stored image; zero where it did not."""
    if aug.offsets is not None:
        b, c, h, w = delta.shape
        p = aug.pad_crop
        canvas = delta.new_zeros(b, c, h + 2 * p, w + 2 * p)
        for i, (dy, dx) in enumerate(aug.offsets.tolist()):
            canvas[i, :, dy:dy + h, dx:dx + w] = delta[i]
        delta = canvas[:, :, p:p + h, p:p + w]
    if aug.flip is not None:
        delta = torch.where(aug.flip.view(-1, 1, 1, 1), delta.flip(-1), delta)
    return delta


@dataclass
class CarriedPerturbations:
    """Every training example's last perturbation, in the stored frame (float16 to halve the memory).

    Args:
        size: number of training examples.
        shape: (C, H, W) of the images the model takes.
    """

    delta: torch.Tensor
    seen: torch.Tensor

    @classmethod
    def empty(cls, size: int, shape: tuple[int, ...]) -> "CarriedPerturbations":
        return cls(torch.zeros((size, *shape), dtype=torch.float16), torch.zeros(size, dtype=torch.bool))

    def starts(self, x: torch.Tensor, index: torch.Tensor, aug: Augmentation, eps: float) -> torch.Tensor:
        """Starting points of the attack on the augmented batch ``x`` of examples ``index``: their carried
        perturbation moved with ``aug``, or a uniform point of the ε-ball for examples not attacked before
        (drawn from torch's global generator, as a cold attack's random start), clipped to [0, 1]."""
        carried = move_with(self.delta[index].to(x), aug)
        fresh = (torch.rand_like(x) * 2 - 1) * eps
        seen = self.seen[index].view(-1, *([1] * (x.dim() - 1))).to(x.device)
        return (x + torch.where(seen, carried, fresh)).clamp(0, 1)

    def update(self, x: torch.Tensor, x_adv: torch.Tensor, index: torch.Tensor, aug: Augmentation) -> None:
        """Keep ``x_adv − x`` of examples ``index`` (moved back to the stored frame) for their next attack."""
        self.delta[index] = move_back((x_adv - x).detach().float(), aug).cpu().to(self.delta.dtype)
        self.seen[index] = True

    def state(self) -> dict[str, torch.Tensor]:
        """What a checkpoint keeps."""
        return {"delta": self.delta, "seen": self.seen}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`state` returned.

        Raises:
            DataError: the saved memory is for other examples or image sizes.
        """
        if state["delta"].shape != self.delta.shape:
            raise DataError(f"the checkpoint's carried perturbations have shape {tuple(state['delta'].shape)}, "
                            f"this run's training data {tuple(self.delta.shape)}; resume with the run's own data")
        self.delta.copy_(state["delta"])
        self.seen.copy_(state["seen"])
