import numpy as np
import pytest

from cifar_flax import plots

RECORDS = [
    dict(
        epoch=e,
        train_loss=2.0 / e,
        train_accuracy=0.3 * e,
        eval_loss=1.8 / e,
        eval_accuracy=0.3 + 0.1 * e,
    )
    for e in (1, 2, 3)
]


@pytest.fixture
def closed_figures(monkeypatch):
    """The figures the plotting functions close, for inspection after they return."""
    figures = []
    monkeypatch.setattr(plots.plt, "close", figures.append)
    return figures


@pytest.mark.parametrize("held_out", ["test", "val"])
def test_training_curves_label_the_held_out_split(tmp_path, closed_figures, held_out):
    path = plots.save_training_curves(RECORDS, tmp_path / "curves.png", "net", held_out)
    assert path.stat().st_size > 10_000
    (figure,) = closed_figures
    loss_axis, accuracy_axis = figure.axes
    assert [t.get_text() for t in accuracy_axis.get_legend().get_texts()] == ["train", held_out]
    held_out_line = accuracy_axis.get_lines()[1]
    np.testing.assert_allclose(held_out_line.get_ydata(), [40.0, 50.0, 60.0])
    np.testing.assert_allclose(loss_axis.get_lines()[1].get_ydata(), [1.8, 0.9, 0.6])


def test_image_grid_titles_every_image(tmp_path, closed_figures):
    images = np.zeros((5, 32, 32, 3), np.uint8)
    path = plots.save_image_grid(images, list("abcde"), tmp_path / "sub" / "grid.png", columns=4)
    assert path.exists()
    (figure,) = closed_figures
    assert len(figure.axes) == 8  # two rows of four; the last three stay empty
    assert [axis.get_title() for axis in figure.axes] == [*"abcde", "", "", ""]
