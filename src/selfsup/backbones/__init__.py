"""Encoders behind one interface: ``forward(x) -> (B, D)`` features and a ``.dim`` attribute."""

from selfsup.backbones.vision import (
    VISION_BACKBONES,
    VisionBackbone,
    create_vision_backbone,
    load_exported_vision,
)

__all__ = ["VISION_BACKBONES", "VisionBackbone", "create_vision_backbone", "load_exported_vision"]
