"""Models: ``build_model`` = input normalisation ∘ pretrained backbone ∘ new linear head."""

from robustft.models.build import InputNormalization, RobustClassifier, build_model, load_backbone_checkpoint
from robustft.models.embedded import EMBEDDED

__all__ = ["EMBEDDED", "InputNormalization", "RobustClassifier", "build_model", "load_backbone_checkpoint"]
