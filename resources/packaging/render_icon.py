"""Render the application icon from ``gpu-ops-console.svg`` into the raster files installers need.

Writes, next to the SVG: a 256x256 PNG (Linux hicolor theme), an .ico (the Windows executable) and an .icns
(the macOS app bundle). The .ico and .icns simply wrap the same PNG, which both formats allow, so no Pillow
or platform tool is needed. Run from the repository root with the GUI extra installed:

    .venv/bin/python resources/packaging/render_icon.py
"""

from __future__ import annotations

import os
import struct
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SVG = HERE / "gpu-ops-console.svg"
PNG = HERE / "gpu-ops-console.png"
ICO = HERE / "gpu-ops-console.ico"
ICNS = HERE / "gpu-ops-console.icns"
SIZE = 256


def render_png(svg: Path, size: int, target: Path) -> bytes:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QGuiApplication, QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer

    _app = QGuiApplication.instance() or QGuiApplication(sys.argv[:1])
    renderer = QSvgRenderer(str(svg))
    if not renderer.isValid():
        raise SystemExit(f"render_icon: {svg} is not a valid SVG")
    image = QImage(size, size, QImage.Format.Format_ARGB32)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    renderer.render(painter)
    painter.end()
    if not image.save(str(target)):  # the format follows the .png suffix
        raise SystemExit(f"render_icon: cannot write {target}")
    return target.read_bytes()


def ico_from_png(png: bytes) -> bytes:
    # ICONDIR + one ICONDIRENTRY; width/height 0 mean 256 in the ICO format.
    header = struct.pack("<HHH", 0, 1, 1)
    entry = struct.pack("<BBBBHHII", 0, 0, 0, 0, 1, 32, len(png), 6 + 16)
    return header + entry + png


def icns_from_png(png: bytes) -> bytes:
    # 'ic08' is the 256x256 slot; macOS 10.7+ accepts PNG data in it.
    element = b"ic08" + struct.pack(">I", 8 + len(png)) + png
    return b"icns" + struct.pack(">I", 8 + len(element)) + element


def main() -> int:
    png = render_png(SVG, SIZE, PNG)
    ICO.write_bytes(ico_from_png(png))
    ICNS.write_bytes(icns_from_png(png))
    for path in (PNG, ICO, ICNS):
        print(f"wrote {path.relative_to(HERE.parents[1])} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
