"""The model catalogue: the checkpoints the engine runs, what each needs, whether it fits this machine,
download with progress (resumed by the hub client when cut off) and one click to use it.

The needs are the measured peaks of `app.hardware.KNOWN_MODELS`. A download fetches only what the
engine loads (config, safetensors, tokenizer and generation files; never code or pickles) into the hub
cache, then the window loads it without a restart. "Local only" blocks every download. It knows nothing
of tensors.
"""

from __future__ import annotations

from typing import Any

from app.hardware import KNOWN_MODELS, Hardware, ModelNeed, fits
from app.qt import Qt, QtWidgets
from app.workers import Task

ALLOW = ["*.json", "*.safetensors", "tokenizer*"]  # what load_checkpoint reads; no code, no pickles


def needs_text(need: ModelNeed) -> str:
    if need.source == "bundled":
        return "any CPU (about 30 MB of RAM)"
    return (
        f"GPU: ~{need.gpu_gb:.0f} GB bfloat16, ~{need.gpu_int8_gb:.0f} GB int8; "
        f"CPU: ~{need.ram_gb:.0f} GB RAM (slow)"
    )


def download(repo_id: str, progress_class: type | None, local_only: bool) -> str:
    """Fetch a checkpoint into the hub cache (resumes a partial download) and check the weights'
    SHA-256 against the hub's record of them; returns its folder."""
    from engine.loading import LoadError, resolve

    try:
        folder = resolve(repo_id, local_only=local_only, progress=progress_class)
    except LoadError as e:
        raise RuntimeError(str(e)) from None
    if not local_only:
        verify(repo_id, folder)
    return str(folder)


def sha256(path) -> str:
    import hashlib

    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def verify(repo_id: str, folder) -> int:
    """Each safetensors file of `folder` against the SHA-256 the hub lists for it; a file that does not
    match is removed from the cache (the next download fetches it again) and RuntimeError says so.
    Returns the number of files checked."""
    from pathlib import Path

    from huggingface_hub import HfApi

    info = HfApi().model_info(repo_id, files_metadata=True)
    checked = 0
    for sib in info.siblings or []:
        lfs = getattr(sib, "lfs", None)
        name = sib.rfilename
        path = Path(folder) / name
        if lfs is None or not name.endswith(".safetensors") or not path.exists():
            continue
        want = lfs.sha256 if hasattr(lfs, "sha256") else lfs["sha256"]
        if sha256(path) != want:
            target = path.resolve()
            path.unlink(missing_ok=True)
            target.unlink(missing_ok=True)
            raise RuntimeError(
                f"{name} of {repo_id} did not match its checksum and was removed; download it again."
            )
        checked += 1
    return checked


class CatalogDialog(QtWidgets.QDialog):
    def __init__(self, window, hardware: Hardware | None = None) -> None:
        super().__init__(window)
        self.window = window
        self.setObjectName("model-catalogue")
        self.setWindowTitle("Models")
        self.hardware = hardware
        self.table = QtWidgets.QTableWidget(len(KNOWN_MODELS), 3)
        self.table.setObjectName("catalogue-table")
        self.table.setHorizontalHeaderLabels(["Model", "Needs", "On this machine"])
        self.table.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QtWidgets.QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.local_only = QtWidgets.QCheckBox("Local only: never use the network")
        self.local_only.setChecked(window.settings.local_only)
        self.local_only.toggled.connect(self._local_only_changed)
        self.progress = QtWidgets.QProgressBar()
        self.progress.setObjectName("catalogue-progress")
        self.progress.setVisible(False)
        self.status = QtWidgets.QLabel()
        self.status.setObjectName("catalogue-status")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.use_btn = QtWidgets.QPushButton("Download and use")
        self.use_btn.setObjectName("catalogue-use")
        self.use_btn.clicked.connect(self.use_selected)
        close = QtWidgets.QPushButton("Close")
        close.clicked.connect(self.reject)
        row = QtWidgets.QHBoxLayout()
        row.addWidget(self.local_only)
        row.addStretch(1)
        row.addWidget(self.use_btn)
        row.addWidget(close)
        lay = QtWidgets.QVBoxLayout(self)
        lay.addWidget(self.table, 1)
        lay.addWidget(self.progress)
        lay.addWidget(self.status)
        lay.addLayout(row)
        self.resize(1000, 380)
        self._task: Task | None = None
        self.fill()
        self.table.selectRow(0)

    def fill(self) -> None:
        for i, need in enumerate(KNOWN_MODELS):
            where = "-"
            if self.hardware is not None:
                ok, why = fits(self.hardware, need)
                where = ("✓ " if ok else "✗ ") + why
            source = "bundled" if need.source == "bundled" else need.source
            for j, text in enumerate((f"{need.name}\n{source}", needs_text(need), where)):
                item = QtWidgets.QTableWidgetItem(text)
                item.setToolTip(text)
                self.table.setItem(i, j, item)
        self.table.resizeColumnToContents(0)
        self.table.setColumnWidth(1, 330)
        self.table.resizeRowsToContents()

    def selected(self) -> ModelNeed | None:
        rows = self.table.selectionModel().selectedRows()
        return KNOWN_MODELS[rows[0].row()] if rows else None

    def _local_only_changed(self, on: bool) -> None:
        self.window.apply_settings(self.window.settings.replace(local_only=on))

    # ---- download and use ----------------------------------------------------------------------------
    def use_selected(self) -> Task | None:
        need = self.selected()
        if need is None:
            return None
        if need.source == "bundled":
            self.window.apply_settings(self.window.settings.replace(model=""))
            self.status.setText("The bundled model is loading.")
            return None
        from app.backend import download_progress_class

        self.use_btn.setEnabled(False)
        self.progress.setVisible(True)
        self.progress.setRange(0, 0)
        self.status.setText(f"Getting {need.source}…")
        local_only = self.local_only.isChecked()

        def work(report: Any) -> str:
            return download(need.source, download_progress_class(report), local_only)

        self._task = Task("model-download", work, self)
        self._task.connect(
            lambda folder: self._downloaded(need, folder), self._failed, self._progress
        ).start()
        return self._task

    def _progress(self, fraction: float, text: str) -> None:
        if fraction < 0:
            self.progress.setRange(0, 0)
        else:
            self.progress.setRange(0, 1000)
            self.progress.setValue(int(fraction * 1000))
        self.status.setText(text)

    def _downloaded(self, need: ModelNeed, folder: str) -> None:
        self.use_btn.setEnabled(True)
        self.progress.setVisible(False)
        self.status.setText(f"{need.name} is in {folder}; loading it now.")
        self.window.apply_settings(self.window.settings.replace(model=need.source))  # loads, no restart

    def _failed(self, message: str) -> None:
        self.use_btn.setEnabled(True)
        self.progress.setVisible(False)
        self.status.setText(message)
