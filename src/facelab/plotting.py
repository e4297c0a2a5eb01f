"""One figure style for the whole book, and small helpers every chapter uses to show images."""

from __future__ import annotations

from typing import Sequence

import numpy as np

PALETTE = ["#1f5f8b", "#d1495b", "#edae49", "#00798c", "#66a182", "#8d6a9f", "#2e4057", "#c0c0c0"]


def figure_axes(ax=None, n: int = 1, figsize: tuple[float, float] = (5, 3.5)):
    """``(fig, [ax, ...])`` for a plot function with the book's signature ``plot_x(..., ax=None) -> Figure``.

    With ``ax=None`` a new figure with ``n`` axes side by side is made; otherwise ``ax`` (one axis, or a sequence of
    at least ``n`` axes) is drawn on and its figure returned.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        fig, axes = plt.subplots(1, n, figsize=figsize, squeeze=False)
        return fig, list(axes.flat)
    axes = list(np.ravel(ax)) if isinstance(ax, (list, tuple, np.ndarray)) else [ax]
    if len(axes) < n:
        raise ValueError(f"this figure needs {n} axes (it draws on {n}), got {len(axes)}")
    return axes[0].figure, axes


def use_style() -> None:
    """Apply the book's matplotlib/seaborn style (called by :func:`facelab.runtime.setup`)."""
    import matplotlib as mpl
    import seaborn as sns

    sns.set_theme(context="notebook", style="whitegrid", palette=PALETTE)
    mpl.rcParams.update({
        "figure.figsize": (7.0, 4.0),
        "figure.dpi": 100,
        "savefig.dpi": 120,
        "savefig.bbox": "tight",
        "axes.titlesize": 11,
        "axes.titleweight": "bold",
        "axes.labelsize": 10,
        "legend.fontsize": 9,
        "legend.frameon": False,
        "image.cmap": "viridis",
        "figure.constrained_layout.use": True,
    })


def to_display(image) -> np.ndarray:
    """Convert a torch (C,H,W) / numpy (H,W[,C]) image in [0,1] or uint8 to an (H,W,3|H,W) float array for imshow."""
    try:
        import torch

        if isinstance(image, torch.Tensor):
            image = image.detach().float().cpu().numpy()
            if image.ndim == 3 and image.shape[0] in (1, 3):
                image = np.moveaxis(image, 0, -1)
    except ImportError:  # pragma: no cover
        pass
    arr = np.asarray(image)
    if arr.dtype == np.uint8:
        arr = arr.astype(np.float32) / 255.0
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    return np.clip(arr, 0.0, 1.0)


def image_grid(images: Sequence, titles: Sequence[str] | None = None, ncols: int = 8, size: float = 1.4,
               cmap: str | None = None, suptitle: str | None = None):
    """Show a list of images in a grid and return the figure."""
    import matplotlib.pyplot as plt

    n = len(images)
    if n == 0:
        raise ValueError("image_grid needs at least one image")
    ncols = max(1, min(ncols, n))
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows * (1.18 if titles else 1.0)),
                             squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k < n:
            img = to_display(images[k])
            ax.imshow(img, cmap=cmap if cmap else ("gray" if img.ndim == 2 else None))
            if titles is not None:
                ax.set_title(str(titles[k]), fontsize=8, fontweight="normal")
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def slider_figure(draw, *, value: float, min: float, max: float, step: float, description: str,
                  readout_format: str = ".2f"):
    """A float slider with the figure ``draw(value)`` below it, as one ipywidgets box.

    The figure is put into an ``ipywidgets.Output`` with ``append_display_data`` rather than by capturing output or
    ``interactive``/``clear_output(wait=True)``, which make notebook executors (nbclient, papermill) hang
    intermittently. An executed notebook stores the first figure as a static snapshot in its widget state (what the
    static book shows); in a live kernel every move of the slider redraws.
    """
    import io

    import ipywidgets as widgets
    import matplotlib.pyplot as plt
    from IPython.display import Image

    slider = widgets.FloatSlider(value=value, min=min, max=max, step=step, description=description,
                                 continuous_update=False, readout_format=readout_format)
    out = widgets.Output()

    def render(v: float) -> None:
        fig = draw(v)
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        plt.close(fig)
        out.outputs = ()
        # a PNG built here, not the Figure object, so the snapshot exists whatever the backend or shell
        out.append_display_data(Image(data=buf.getvalue(), format="png"))

    slider.observe(lambda change: render(change["new"]), names="value")
    render(slider.value)
    return widgets.VBox([slider, out])


def source_code(obj, *, docstring: bool = False) -> str:
    """The source of a function or class as it is in the package, for chapters that show the code they run;
    without its docstring (replaced by ``...``) unless ``docstring``."""
    import ast
    import inspect
    import textwrap

    src = textwrap.dedent(inspect.getsource(obj))
    if docstring:
        return src
    node = ast.parse(src).body[0]
    first = node.body[0] if getattr(node, "body", None) else None
    if not (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str)):
        return src
    lines = src.splitlines(keepends=True)
    indent = lines[first.lineno - 1][:len(lines[first.lineno - 1]) - len(lines[first.lineno - 1].lstrip())]
    return "".join(lines[:first.lineno - 1] + [f"{indent}...  # docstring: help({obj.__name__})\n"]
                   + lines[first.end_lineno:])
