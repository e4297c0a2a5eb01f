import numpy as np
import pytest

from facelab.studies import getting_started as overview


def test_error_rates_hand_worked():
    genuine = np.array([0.9, 0.8, 0.4, 0.7])
    impostor = np.array([0.1, 0.5, 0.3, 0.6, 0.2])
    far, frr = overview.error_rates(genuine, impostor, 0.5)
    assert far == pytest.approx(2 / 5)  # 0.5 and 0.6 are accepted
    assert frr == pytest.approx(1 / 4)  # 0.4 is rejected


def test_error_rates_reject_empty_input():
    with pytest.raises(ValueError, match="non-empty"):
        overview.error_rates([], [0.1], 0.0)


def test_simulated_scores_have_the_requested_separation():
    g, i = overview.simulate_scores(5_000, 5_000, separation=2.0, rng=np.random.default_rng(0))
    assert g.mean() - i.mean() == pytest.approx(2.0, abs=0.1)
    with pytest.raises(ValueError):
        overview.simulate_scores(0, 10)


def test_chapter_table_marks_existing_chapters(tmp_path):
    (tmp_path / "00_getting_started.ipynb").write_text("{}")
    table = overview.chapter_table(notebook_dir=tmp_path, timings_file=tmp_path / "none.json")
    assert table.loc["00", "status"] == "in this book"
    assert table.loc["01", "status"] == "in preparation"
    assert len(table) == len(overview.CHAPTERS)


def test_threshold_widget_holds_a_figure_snapshot_and_redraws_on_slide():
    g, i = overview.simulate_scores(200, 200, rng=np.random.default_rng(1))
    box = overview.threshold_widget(g, i, value=1.0)
    slider, out = box.children
    assert slider.value == 1.0 and slider.min <= g.min() and slider.max >= g.max()
    assert len(out.outputs) == 1 and "image/png" in out.outputs[0]["data"]
    first = out.outputs[0]["data"]["image/png"]
    slider.value = 2.5
    assert len(out.outputs) == 1, "a redraw replaces the figure instead of appending"
    assert out.outputs[0]["data"]["image/png"] != first
