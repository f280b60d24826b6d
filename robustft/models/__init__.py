"""Models: ``build_model`` = input normalisation ∘ pretrained backbone ∘ new linear head."""

from robustft.models.build import (
    InputNormalization,
    Normalized,
    RobustClassifier,
    build_model,
    load_backbone_checkpoint,
)
from robustft.models.embedded import EMBEDDED

__all__ = ["EMBEDDED", "InputNormalization", "Normalized", "RobustClassifier", "build_model", "load_backbone_checkpoint"]
