"""cifar_flax: the advanced-convolution CIFAR-10 networks in JAX/Flax."""
