"""Seed networks and their building blocks."""

from cifar_flax.models.nets import MODELS, SEEDS, create_model

__all__ = ["MODELS", "SEEDS", "create_model"]
