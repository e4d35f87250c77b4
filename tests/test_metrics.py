"""The epoch records: the console line, and records of earlier versions read with today's keys."""

import json

from cifar_flax import metrics

RECORD = {
    "epoch": 2,
    "train_loss": 1.25,
    "train_accuracy": 0.5,
    "eval_split": "test",
    "eval_loss": 1.5,
    "eval_accuracy": 0.4,
    "learning_rate": 0.01,
    "epoch_seconds": 12.0,
    "train_images_per_second": 400.0,
}


def test_epoch_line_names_the_held_out_split():
    line = metrics.format_epoch(RECORD, 3)
    assert line.startswith("epoch   2/3  train loss 1.2500 acc  50.00%  test loss 1.5000 acc")
    line = metrics.format_epoch({**RECORD, "eval_split": "train[45000:]"}, 3)
    assert " val loss 1.5000 acc  40.00% " in line and "test" not in line


def test_records_that_named_the_held_out_figures_test_are_read_as_eval(tmp_path):
    old = {k: v for k, v in RECORD.items() if not k.startswith("eval_")}
    old.update(test_loss=1.5, test_accuracy=0.4, test_correct=4, test_count=10)
    (tmp_path / metrics.METRICS_FILE).write_text(json.dumps(old) + "\n")
    (record,) = metrics.read_metrics(tmp_path, eval_split="train[45000:]")
    assert record == {**RECORD, "eval_split": "train[45000:]", "eval_correct": 4, "eval_count": 10}
    assert not any(key.startswith("test_") for key in record)
