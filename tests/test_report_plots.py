"""Report plots read correctly by themselves: direction of the mask plot, every method (the base
model included) as its own labelled point in the score plot."""

import matplotlib.pyplot as plt
import torch

from avid.pipelines.report import mask_per_step_figure, score_vs_params_figure


def test_mask_plot_reads_in_sampling_order_and_says_so():
    steps = torch.tensor([199.0, 100.0, 0.0])  # sampling order, as sample_videos records it
    fig = mask_per_step_figure({"avid": torch.stack([steps, torch.tensor([0.9, 0.7, 0.5])], 1)}, 200)
    ax = fig.axes[0]
    left, right = ax.get_xlim()
    assert (left, right) == (199, 0)  # pure noise on the left: sampling runs left to right ...
    assert "left to right" in ax.get_xlabel() and "199 = pure noise" in ax.get_xlabel()  # ... and the label agrees
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["avid"]
    plt.close(fig)


def test_score_plot_has_one_labelled_point_per_method_base_included():
    points = {"base": (0, 0.2), "avid": (2_500_000, 0.8), "scratch": (2_500_000, 0.1)}
    fig = score_vs_params_figure(points, ["ssim", "psnr"])
    ax = fig.axes[0]
    offsets = [tuple(c.get_offsets()[0]) for c in ax.collections]
    assert offsets == [(0, 0.2), (2_500_000, 0.8), (2_500_000, 0.1)]  # equal sizes do not merge points
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[0].startswith("base (0 trainable)") and len(labels) == 3
    assert ax.get_xlim()[0] < 0 < ax.get_xlim()[1]  # the base model's 0 is on the axis
    assert "SSIM, PSNR" in ax.get_title() and "trainable parameters" in ax.get_xlabel()
    plt.close(fig)
