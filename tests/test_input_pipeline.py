"""Loading, slicing, statistics, the train/eval pipelines and the missing-data error."""

import os
import pathlib
import subprocess
import sys
import time

import albumentations as A
import numpy as np
import pytest

from cifar_flax import input_pipeline, splits
from cifar_flax.config_lib import augmentation, base_config
from cifar_flax.errors import CifarFlaxError
from tests.conftest import REAL_DATA_DIR, REPO_ROOT, e2e, needs_real_data, synthetic_data_dir


@pytest.fixture(scope="module")
def train_512():
    return input_pipeline.load_split(synthetic_data_dir(), "train[:512]")


def small_config(batch_size=64):
    config = base_config()
    config.batch_size = batch_size
    config.augment = augmentation(hflip_p=0.5, shift_scale_rotate_p=0.5, coarse_dropout_p=0.5)
    return config


def test_split_slicing(train_512):
    assert len(train_512) == 512
    assert train_512.images.shape == (512, 32, 32, 3) and train_512.images.dtype == np.uint8
    assert train_512.labels.dtype == np.int32
    assert len(input_pipeline.load_split(synthetic_data_dir(), "test[10%:20%]")) == 50
    assert train_512.class_names[:3] == ("airplane", "automobile", "bird")


@needs_real_data
def test_class_counts_and_statistics_of_the_real_test_split():
    test = input_pipeline.load_split(str(REAL_DATA_DIR), "test")
    np.testing.assert_array_equal(input_pipeline.class_counts(test), [1000] * 10)
    mean, std = input_pipeline.channel_stats(test)
    # The published statistics of CIFAR-10's test split, per channel.
    np.testing.assert_allclose(mean, (0.494214, 0.485131, 0.450409), atol=1e-4)
    np.testing.assert_allclose(std, (0.246653, 0.242892, 0.261592), atol=1e-4)


def test_bad_split_is_a_one_line_error():
    with pytest.raises(CifarFlaxError, match="bad split 'validation'") as error:
        input_pipeline.load_split(synthetic_data_dir(), "validation")
    assert "\n" not in str(error.value)


def test_missing_data_names_both_remedies(tmp_path, monkeypatch):
    monkeypatch.setattr(input_pipeline, "can_reach", lambda host: False)
    with pytest.raises(CifarFlaxError) as error:
        input_pipeline.load_split(str(tmp_path), "train")
    message = str(error.value)
    assert "--config.data_dir" in message and "scripts/prepare_cifar10.py" in message
    assert "\n" not in message
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_download_false_does_not_probe_the_network(tmp_path, monkeypatch):
    def fail(host):
        raise AssertionError("probed the network")

    monkeypatch.setattr(input_pipeline, "can_reach", fail)
    with pytest.raises(CifarFlaxError, match="cannot be downloaded"):
        input_pipeline.load_split(str(tmp_path), "train", download=False)


def test_a_resumed_epoch_and_each_process_shard_see_the_same_batches(train_512):
    config = small_config(batch_size=64)
    with input_pipeline.Augmenter(config.augment, config.normalize.mean) as augmenter:
        whole = collect(input_pipeline.train_batches(train_512, config, 2, augmenter))
        resumed = collect(input_pipeline.train_batches(train_512, config, 2, augmenter, 5))
        shards = [
            collect(
                input_pipeline.train_batches(
                    train_512, config, 2, augmenter, shard=splits.Shard(index, 4)
                )
            )
            for index in range(4)
        ]
    for got, expected in zip(resumed, whole, strict=True):
        assert len(got) == 3
        for a, b in zip(got, expected[5:], strict=True):
            np.testing.assert_array_equal(a, b)
    for part in (0, 1):  # images, labels
        for index, batch in enumerate(whole[part]):
            pieces = [shard[part][index] for shard in shards]
            assert all(len(piece) == 16 for piece in pieces)
            np.testing.assert_array_equal(np.concatenate(pieces), batch)


def test_batch_size_must_split_evenly_over_processes():
    with pytest.raises(CifarFlaxError, match="multiple of the 3 processes"):
        splits.Shard(0, 3).rows(128)


def collect(batches):
    batches = list(batches)
    return [b["image"] for b in batches], [b["label"] for b in batches]


def test_train_batches_shape_dtype_and_dropped_remainder(train_512):
    config = small_config(batch_size=100)
    with input_pipeline.Augmenter(config.augment, config.normalize.mean) as augmenter:
        images, labels = collect(input_pipeline.train_batches(train_512, config, 0, augmenter))
    assert [len(batch) for batch in labels] == [100] * 5  # 512 // 100, the rest dropped
    assert images[0].shape == (100, 32, 32, 3) and images[0].dtype == np.float32
    assert labels[0].dtype == np.int32
    assert input_pipeline.steps_per_epoch(train_512, 100) == 5
    assert len(set(np.concatenate(labels).tolist())) == 10


def test_train_batches_are_a_function_of_seed_and_epoch(train_512):
    config = small_config()
    with input_pipeline.Augmenter(config.augment, config.normalize.mean) as augmenter:
        first = collect(input_pipeline.train_batches(train_512, config, 3, augmenter))
        again = collect(input_pipeline.train_batches(train_512, config, 3, augmenter))
        next_epoch = collect(input_pipeline.train_batches(train_512, config, 4, augmenter))
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(np.stack(a), np.stack(b))
    assert not np.array_equal(np.stack(first[1]), np.stack(next_epoch[1]))  # reshuffled
    config.seed += 1
    with input_pipeline.Augmenter(config.augment, config.normalize.mean) as augmenter:
        other_seed = collect(input_pipeline.train_batches(train_512, config, 3, augmenter))
    assert not np.array_equal(np.stack(first[1]), np.stack(other_seed[1]))


@e2e
def test_worker_processes_give_the_same_batches(train_512):
    config = small_config(batch_size=128)
    with input_pipeline.Augmenter(config.augment, config.normalize.mean, workers=0) as inline:
        expected = collect(input_pipeline.train_batches(train_512, config, 1, inline))
    with input_pipeline.Augmenter(config.augment, config.normalize.mean, workers=2) as pool:
        got = collect(input_pipeline.train_batches(train_512, config, 1, pool))
    np.testing.assert_array_equal(np.stack(expected[0]), np.stack(got[0]))
    np.testing.assert_array_equal(np.stack(expected[1]), np.stack(got[1]))


def test_train_images_are_augmented_and_normalized(train_512):
    config = small_config(batch_size=512)
    config.augment = augmentation(hflip_p=1.0)
    with input_pipeline.Augmenter(config.augment, config.normalize.mean) as augmenter:
        (batch,) = input_pipeline.train_batches(train_512, config, 0, augmenter)
    mean, std = np.array(config.normalize.mean), np.array(config.normalize.std)
    pixels = np.rint((batch["image"] * std + mean) * 255)  # normalisation inverts
    originals = {
        image.tobytes(): label
        for image, label in zip(train_512.images, train_512.labels, strict=True)
    }
    for image, label in zip(pixels.astype(np.uint8), batch["label"], strict=True):
        assert originals[image[:, ::-1].tobytes()] == label  # flipped, label kept


def test_eval_batches_only_normalize_in_order_and_keep_the_last_batch():
    split = input_pipeline.load_split(synthetic_data_dir(), "test[:100]")
    config = small_config(batch_size=32)
    batches = list(input_pipeline.eval_batches(split, 32, config.normalize))
    assert [len(b["label"]) for b in batches] == [32, 32, 32, 32]  # the last one padded
    mask = np.concatenate([b["mask"] for b in batches])
    np.testing.assert_array_equal(mask, np.arange(128) < 100)
    normalize = A.Normalize(mean=config.normalize.mean, std=config.normalize.std)
    expected = np.stack([normalize(image=image)["image"] for image in split.images])
    images = np.concatenate([b["image"] for b in batches])[:100]
    np.testing.assert_allclose(images, expected, atol=1e-5)
    np.testing.assert_array_equal(np.concatenate([b["label"] for b in batches])[:100], split.labels)


def test_shards_of_eval_batches_make_up_the_whole_batches():
    split = input_pipeline.load_split(synthetic_data_dir(), "test[:100]")
    normalize = small_config().normalize
    whole = list(input_pipeline.eval_batches(split, 32, normalize))
    halves = [
        list(input_pipeline.eval_batches(split, 32, normalize, splits.Shard(i, 2)))
        for i in range(2)
    ]
    for batch, first, second in zip(whole, *halves, strict=True):
        for key in batch:
            np.testing.assert_array_equal(np.concatenate([first[key], second[key]]), batch[key])


ORPHAN = """
import sys, time
import numpy as np
from cifar_flax import input_pipeline
from cifar_flax.config_lib import augmentation

if __name__ == "__main__":
    augmenter = input_pipeline.Augmenter(augmentation(hflip_p=0.5), (0.5, 0.5, 0.5), workers=2)
    augmenter(np.zeros((2, 32, 32, 3), np.uint8), np.arange(2))
    print(" ".join(map(str, augmenter._pool._processes)), flush=True)
    time.sleep(600)
"""


@e2e
def test_workers_exit_when_the_training_process_is_killed(tmp_path):
    script = tmp_path / "orphan.py"
    script.write_text(ORPHAN)
    process = subprocess.Popen(
        [sys.executable, str(script)], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        workers = [int(pid) for pid in process.stdout.readline().split()]
        assert workers and all(alive(pid) for pid in workers)
    finally:
        process.kill()  # SIGKILL: no chance to shut the pool down
        process.wait()
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(alive(pid) for pid in workers)


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = pathlib.Path(f"/proc/{pid}/stat")
    return not (status.exists() and status.read_text().split()[2] == "Z")  # zombies are gone


WORKER_LIBRARIES = """
import pathlib
import sys


def loaded(pid):
    maps = pathlib.Path(f"/proc/{pid}/maps").read_text()
    return [name for name in ("libtensorflow", "libjax", "libtorch") if name in maps]


if __name__ == "__main__":  # a worker imports this script too, as main.py: TensorFlow only here
    import numpy as np

    from cifar_flax import input_pipeline
    from cifar_flax.config_lib import augmentation

    augmenter = input_pipeline.Augmenter(augmentation(hflip_p=0.5), (0.5, 0.5, 0.5), workers=1)
    augmenter(np.zeros((2, 32, 32, 3), np.uint8), np.arange(2))
    (worker,) = augmenter._pool._processes
    trainer_has_torch = "torch" in sys.modules
    import torch  # where installed, the training process can still import it

    print(loaded(worker), trainer_has_torch, torch.__name__)
    augmenter.close()
"""


@pytest.mark.skipif(not pathlib.Path("/proc/self/maps").exists(), reason="reads /proc (Linux)")
def test_neither_trainer_nor_workers_load_torch_nor_workers_tensorflow_or_jax(tmp_path):
    pytest.importorskip("torch")  # Albumentations imports torch only where it is installed
    script = tmp_path / "worker_libraries.py"
    script.write_text(WORKER_LIBRARIES)
    result = subprocess.run(
        [sys.executable, str(script)], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["[]", "False", "torch"]
