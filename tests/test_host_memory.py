"""The restart under glibc's tunables: it happens once, respects the user's, and stops the
page faults that made every CPU step zero its memory again."""

import json
import os
import subprocess
import sys

import pytest

from cifar_flax.host_memory import TUNABLES, trains_on_the_cpu, uses_glibc
from tests.conftest import e2e

glibc_only = pytest.mark.skipif(not uses_glibc(), reason="the tunables are glibc's")

# Restarts itself, then reports its tunables and the page faults of a jitted step that
# returns a fresh 64 MiB array, as XLA's CPU runtime allocates one every call.
PROGRAM = """
import json, os, resource, sys
from cifar_flax.host_memory import restart_reusing_freed_memory
restart_reusing_freed_memory()
import jax, jax.numpy as jnp
x = jnp.zeros((16, 1024, 1024), jnp.float32)
step = jax.jit(lambda x: x + 1)
for _ in range(3):
    x = step(x).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    x = step(x).block_until_ready()
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5
print(json.dumps([os.environ.get("GLIBC_TUNABLES"), faults, sys.argv[1:]]))
"""


def run_program(**environment):
    env = {key: value for key, value in os.environ.items() if key != "GLIBC_TUNABLES"}
    result = subprocess.run(
        [sys.executable, "-c", PROGRAM, "--flag=1", "two"],
        env={**env, **environment},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(result.stdout)


@e2e
@glibc_only
def test_restarts_once_under_the_tunables_with_the_same_arguments():
    tunables, faults, args = run_program()
    assert tunables == TUNABLES
    assert args == ["--flag=1", "two"]
    assert faults < 1_000  # 64 MiB of fresh 4 KiB pages would be 16,384 faults


@e2e
@glibc_only
def test_keeps_the_users_tunables_and_glibcs_page_faults_show():
    tunables, faults, _ = run_program(GLIBC_TUNABLES="")
    assert tunables == ""
    assert faults > 8_000


@pytest.mark.parametrize(
    ("installed", "platforms", "on_cpu"),
    [
        (["jax", "jaxlib", "flax"], "", True),
        (["jax", "jaxlib", "jax-cuda12-plugin", "jax-cuda12-pjrt"], "", False),
        (["jax", "jaxlib", "jax_cuda13_plugin"], "", False),
        (["jax", "jaxlib", "libtpu"], "", False),
        (["jax", "jaxlib", "libtpu"], "cpu", True),
        (["jax", "jaxlib"], "cuda", False),
    ],
)
def test_the_tunables_are_kept_off_gpu_and_tpu_hosts(installed, platforms, on_cpu):
    assert trains_on_the_cpu(installed, platforms) == on_cpu
