"""A small live line plot of the training loss, drawn with QPainter (no plotting library)."""

from __future__ import annotations

import math

from qtpy.QtCore import QPointF, QRectF, Qt
from qtpy.QtGui import QColor, QPainter, QPainterPath, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget

_MARGIN = (44, 8, 8, 22)  # left, top, right, bottom (px)


class LossPlot(QWidget):
    """Loss per step (thin, pale) and its running mean (thick) against the step."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setMinimumHeight(140)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.setToolTip("training loss (pale: per step, bold: running mean)")
        self.steps: list[int] = []
        self.loss: list[float] = []
        self.smoothed: list[float] = []
        self.total = 0

    def clear(self, total: int = 0) -> None:
        self.steps, self.loss, self.smoothed, self.total = [], [], [], total
        self.update()

    def add(self, step: int, loss: float, smoothed: float) -> None:
        if math.isfinite(loss) and math.isfinite(smoothed):
            self.steps.append(step)
            self.loss.append(loss)
            self.smoothed.append(smoothed)
            self.update()

    def paintEvent(self, _event) -> None:
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        fg = self.palette().windowText().color()
        left, top, right, bottom = _MARGIN
        area = QRectF(left, top, self.width() - left - right, self.height() - top - bottom)
        p.setPen(QPen(fg, 1))
        p.drawRect(area)
        if not self.steps:
            p.drawText(area, Qt.AlignmentFlag.AlignCenter, "loss will appear here")
            p.end()
            return
        x_max = max(self.total, self.steps[-1], 1)
        lo, hi = min(self.loss), max(self.loss)
        if hi - lo < 1e-9:
            lo, hi = lo - 0.5, hi + 0.5

        def point(step: int, value: float) -> QPointF:
            x = area.left() + area.width() * step / x_max
            y = area.bottom() - area.height() * (value - lo) / (hi - lo)
            return QPointF(x, y)

        for values, color, width in (
            (self.loss, QColor(120, 160, 220, 140), 1.0),
            (self.smoothed, QColor(255, 160, 40), 2.0),
        ):
            path = QPainterPath(point(self.steps[0], values[0]))
            for s, v in zip(self.steps[1:], values[1:], strict=True):
                path.lineTo(point(s, v))
            p.setPen(QPen(color, width))
            p.drawPath(path)
        p.setPen(QPen(fg, 1))
        p.drawText(QRectF(0, top - 4, left - 4, 16), Qt.AlignmentFlag.AlignRight, f"{hi:.3g}")
        p.drawText(
            QRectF(0, area.bottom() - 12, left - 4, 16), Qt.AlignmentFlag.AlignRight, f"{lo:.3g}"
        )
        p.drawText(
            QRectF(left, area.bottom() + 2, area.width(), 18),
            Qt.AlignmentFlag.AlignCenter,
            f"step {self.steps[-1]} / {x_max}, loss {self.smoothed[-1]:.3f}",
        )
        p.end()
