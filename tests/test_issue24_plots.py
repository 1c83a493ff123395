"""Figures fit for slides: legends outside the plot area, one sans-serif font, PNGs at 150-200 dpi."""

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from acdc_engine.evaluation import plots
from acdc_engine.evaluation.faithfulness import FaithfulnessCurve
from acdc_engine.evaluation.roc import RocCurve, RocPoint

ROC = {
    method: {level: RocCurve(level, [RocPoint(0.1 * k, min(1.0, 0.3 * k), 1.0 / k, k, k, k) for k in range(1, 4)]) for level in ("edge", "node")}
    for method in ("acdc", "eap-ig")
}
FAITHFULNESS = {
    method: FaithfulnessCurve(cuts=[0.01, 0.1, 0.5], edges=[3, 30, 150], metric=[1.0, 0.5, 0.1], faithfulness=[0.2, 0.7, 0.95],
                              total_edges=300, ranked=True)
    for method in ("eap", "eap-ig")
}


@pytest.fixture(params=["roc", "faithfulness"])
def figure(request):
    with plots.matplotlib.rc_context(plots.STYLE):
        figure = plots._roc_figure(ROC, "t") if request.param == "roc" else plots._faithfulness_figure(FAITHFULNESS, "t", "kl")
        FigureCanvasAgg(figure).draw()
    return figure


def test_legends_sit_outside_every_plot_area(figure):
    renderer = figure.canvas.get_renderer()
    legends = [ax.get_legend() for ax in figure.axes]
    assert all(legends)
    for legend in legends:
        box = legend.get_window_extent(renderer)
        assert not any(box.overlaps(ax.get_window_extent(renderer)) for ax in figure.axes)


def test_every_text_is_in_one_sans_serif_family(figure):
    families = {tuple(text.get_fontfamily()) for text in figure.findobj(lambda o: hasattr(o, "get_fontfamily"))}
    assert families == {("sans-serif",)}


def test_pngs_are_written_at_a_resolution_fit_for_slides(tmp_path):
    from PIL import Image

    png, _ = plots.plot_faithfulness(FAITHFULNESS, tmp_path / "f")
    assert 150 <= plots.PNG_DPI <= 200
    assert Image.open(png).info["dpi"] == pytest.approx((plots.PNG_DPI, plots.PNG_DPI), abs=1)
