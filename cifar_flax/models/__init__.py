"""Seed networks and their building blocks."""

from cifar_flax.models.nets import MODELS, create_model

__all__ = ["MODELS", "create_model"]
