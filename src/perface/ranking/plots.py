"""Pictures of a ranking: contact sheet (PIL), similarity histogram and heatmap (matplotlib Agg).

PIL and matplotlib are imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

import torch

from .._io import atomic_write
from .._plotting import count_axis, pyplot, save_figure

if TYPE_CHECKING:
    from PIL import Image, ImageDraw, ImageFont

__all__ = ["face_thumbnail", "contact_sheet", "similarity_histogram", "similarity_heatmap"]

PathLike = Union[str, Path]


def face_thumbnail(
    src: Any, box: Optional[Sequence[float]] = None, size: int = 160, margin: float = 0.3
) -> Image.Image:
    """A ``size`` x ``size`` RGB PIL thumbnail of the face in ``src`` (a path or anything
    :func:`perface.load_image` reads): the square around ``box`` (x1, y1, x2, y2, photo pixels)
    widened by ``margin`` of its side, or the central square when ``box`` is None/NaN."""
    from PIL import Image

    from ..imageio import load_image

    img = load_image(src)  # (3, H, W) in [0, 1], EXIF applied as for detection
    h, w = img.shape[1:]
    if box is not None and all(math.isfinite(float(v)) for v in box):
        x1, y1, x2, y2 = (float(v) for v in box)
        side = max(x2 - x1, y2 - y1) * (1.0 + 2.0 * margin)
        cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
    else:
        side, cx, cy = float(min(h, w)), w / 2.0, h / 2.0
    left, top = round(cx - side / 2.0), round(cy - side / 2.0)
    side_px = max(1, round(side))
    pixels = (img.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
    # crop() pads with black outside the photo, keeping the face centred. Image.BILINEAR: Pillow
    # sets it at runtime but its stubs only know Image.Resampling (Pillow >= 9.1; we support 9.0)
    box_px = (left, top, left + side_px, top + side_px)
    return Image.fromarray(pixels).crop(box_px).resize((size, size), Image.BILINEAR)  # type: ignore[attr-defined]


def _font(size: int) -> Union[ImageFont.FreeTypeFont, ImageFont.ImageFont]:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _fit(
    draw: ImageDraw.ImageDraw, text: str, font: Union[ImageFont.FreeTypeFont, ImageFont.ImageFont], width: int
) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while len(text) > 1 and draw.textlength("…" + text, font=font) > width:
        text = text[1:]
    return "…" + text


def contact_sheet(
    target: tuple[Image.Image, str],
    candidates: Sequence[tuple[Image.Image, str]],
    path: PathLike,
    *,
    tile: int = 160,
    columns: int = 6,
    title: str = "",
) -> Path:
    """Write a PNG: the target thumbnail on the left, the candidate thumbnails in rank order in
    a grid beside it, each captioned (e.g. "#1  0.873" and its file name).

    Args:
        target: ``(thumbnail PIL image, caption)`` of the target.
        candidates: ``(thumbnail, caption)`` per candidate, best first; captions may hold one
            newline (two lines).
        path: output PNG.
        tile: thumbnail side in pixels.
        columns: candidate tiles per row.
        title: line of text above everything (e.g. the selection rule and model).
    """
    from PIL import Image, ImageDraw

    font = _font(max(10, tile // 12))
    line = max(12, tile // 10)
    pad, caption_h = 8, 2 * line + 4
    title_h = line + 2 * pad if title else 0
    cols = max(1, min(columns, len(candidates)))
    rows = max(1, math.ceil(len(candidates) / cols))
    cell_w, cell_h = tile + pad, tile + caption_h + pad
    gap = 3 * pad  # between target and candidates
    width = pad + cell_w + gap + cols * cell_w
    height = title_h + pad + max(cell_h, rows * cell_h)
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((pad, pad), _fit(draw, title, font, width - 2 * pad), fill="black", font=font)

    def put(thumb: Image.Image, caption: str, x: int, y: int, frame: str) -> None:
        sheet.paste(thumb.resize((tile, tile)), (x, y))
        draw.rectangle((x - 2, y - 2, x + tile + 1, y + tile + 1), outline=frame, width=2)
        for i, text in enumerate(caption.split("\n")[:2]):
            draw.text((x, y + tile + 3 + i * line), _fit(draw, text, font, tile), fill="black", font=font)

    top = title_h + pad
    put(target[0], target[1], pad, top, "#d62728")
    x0 = pad + cell_w + gap
    draw.line((x0 - gap // 2, top, x0 - gap // 2, height - pad), fill="#999999", width=1)
    for i, (thumb, caption) in enumerate(candidates):
        r, c = divmod(i, cols)
        put(thumb, caption, x0 + c * cell_w, top + r * cell_h, "#1f77b4")
    return atomic_write(path, lambda tmp: sheet.save(tmp, format="PNG"))


def similarity_histogram(
    scores: torch.Tensor,
    path: PathLike,
    *,
    band: Optional[tuple[float, float]] = None,
    exclude_above: Optional[float] = None,
    chosen: Optional[torch.Tensor] = None,
    title: str = "",
    bins: int = 100,
    footer: Sequence[str] = (),
) -> Path:
    """Write a PNG histogram of pool similarities (NaN entries ignored) with the band shaded,
    the same-identity threshold dashed and the chosen candidates' scores as ticks below, each
    labelled with its value; whole numbers on the count axis; ``footer`` lines (e.g. the metric
    signature) under the plot."""
    plt = pyplot()
    scores = scores.detach().float().cpu()
    finite = scores[torch.isfinite(scores)]
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    try:
        if finite.numel():
            lo, hi = min(-0.2, float(finite.min())), max(1.0, float(finite.max()))
            counts = torch.histc(finite, bins=bins, min=lo, max=hi)
            edges = torch.linspace(lo, hi, bins + 1)
            ax.stairs(
                counts.numpy(),
                edges.numpy(),
                fill=True,
                color="#7f7f7f",
                alpha=0.7,
                label=f"pool ({finite.numel()} faces)",
            )
        if band is not None:
            ax.axvspan(band[0], band[1], color="#2ca02c", alpha=0.2, label=f"band [{band[0]:g}, {band[1]:g}]")
        if exclude_above is not None:
            ax.axvline(exclude_above, color="#d62728", ls="--", label=f"same identity > {exclude_above:g}")
        if chosen is not None and chosen.numel():
            ax.plot(
                chosen.float().cpu().numpy(),
                [0] * chosen.numel(),
                "|",
                color="#1f77b4",
                ms=14,
                mew=1.5,
                label=f"chosen ({chosen.numel()})",
                clip_on=False,
            )
        ax.set_xlabel("cosine similarity to the target's face (higher = more alike)")
        ax.set_ylabel("faces")
        count_axis(ax.yaxis)
        ax.set_title(title, fontsize=10)
        if ax.get_legend_handles_labels()[0]:  # an empty pool draws nothing to explain
            ax.legend(loc="upper left", fontsize=8)
        return save_figure(fig, path, footer=footer)
    finally:
        plt.close(fig)


def similarity_heatmap(
    matrix: torch.Tensor,
    labels: Sequence[str],
    path: PathLike,
    *,
    title: str = "",
    footer: Sequence[str] = (),
    bands: Sequence[tuple[float, float, str]] = (),
) -> Path:
    """Write a PNG heatmap of a square similarity matrix (N, N) with labelled rows/columns and
    the value in every cell (when N <= 30); NaN cells (failed images) are grey and say "n/a".

    ``bands``: ``(low, high, label)`` ranges marked on the colour bar (e.g. where a reference
    set's same-person pairs fall), each labelled with its values; ``footer``: lines in small type
    under the plot (e.g. the metric signature)."""
    plt = pyplot()
    m = matrix.detach().float().cpu().numpy()
    n = m.shape[0]
    side = min(20.0, max(4.0, 0.6 * n + 2.5))
    fig, ax = plt.subplots(figsize=(side + 1.5, side), dpi=100)
    try:
        cmap = plt.get_cmap("viridis").with_extremes(bad="#cccccc")
        im = ax.imshow(m, cmap=cmap, vmin=-0.2, vmax=1.0)
        ax.set_xticks(range(n), labels, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(n), labels, fontsize=8)
        if n <= 30:
            for i in range(n):
                for j in range(n):
                    v = m[i, j]
                    text = "n/a" if v != v else f"{v:.2f}"
                    ax.text(
                        j,
                        i,
                        text,
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="black" if v == v and v > 0.6 else "white",
                    )
        bar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="cosine similarity (higher = more alike)")
        for k, (low, high, label) in enumerate(bands):
            color = ("white", "#ff7f0e", "#d62728")[k % 3]
            low_c, high_c = max(low, -0.2), min(high, 1.0)  # the colour bar's range
            bar.ax.axhspan(low_c, high_c, xmin=0.0, xmax=1.0, fill=False, edgecolor=color, hatch="//", lw=1.2)
            bar.ax.annotate(
                f"{label}\n{low:.2f} to {high:.2f}",
                xy=(0.0, (low_c + high_c) / 2),
                xycoords=("axes fraction", "data"),
                xytext=(-4, 0),
                textcoords="offset points",
                ha="right",
                va="center",
                fontsize=6,
                rotation=90,
            )
        ax.set_title(title, fontsize=10)
        return save_figure(fig, path, footer=footer)
    finally:
        plt.close(fig)
