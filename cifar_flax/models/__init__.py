"""Seed networks, their building blocks, and users' own networks."""

from cifar_flax.models.nets import NETWORKS, Network, create_model, network

__all__ = ["NETWORKS", "Network", "create_model", "network"]
