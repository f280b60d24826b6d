"""Models: ``build_model`` = input normalisation ∘ pretrained backbone ∘ new linear head."""

from robustft.models.build import (
    InputNormalization,
    Normalized,
    RobustClassifier,
    build_model,
    load_backbone_checkpoint,
)
from robustft.models.embedded import EMBEDDED
from robustft.models.fold import NotFoldableError, fold_batchnorm

__all__ = ["EMBEDDED", "InputNormalization", "Normalized", "RobustClassifier", "build_model", "NotFoldableError", "fold_batchnorm", "load_backbone_checkpoint"]
