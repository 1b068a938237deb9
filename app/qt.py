"""The one seam through which the app imports Qt (PySide6).

Every other module in app/ writes `from app.qt import QtCore, QtGui, QtWidgets, Qt, Signal, Slot`
instead of naming PySide6, so a binding change (or a version check) happens here and nowhere else.
It knows nothing of the app itself.

PySide6 is pinned to 6.11.3: 6.12.0 crashes Python 3.11 after a few thousand Qt calls (PYSIDE-3474).
"""

from __future__ import annotations

from PySide6 import QtCore, QtGui, QtWidgets
from PySide6.QtCore import QObject, Qt, QThread, QTimer, Signal, Slot

QT_VERSION = QtCore.qVersion()

__all__ = [
    "QtCore",
    "QtGui",
    "QtWidgets",
    "Qt",
    "QObject",
    "QThread",
    "QTimer",
    "Signal",
    "Slot",
    "QT_VERSION",
]
