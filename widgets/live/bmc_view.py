"""The node's BMC readings: one row per chassis of the BMC (blades, trays, a GPU baseboard), with its health and
the components it names."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QHeaderView, QLabel, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget

from console.live.fleet_state import NodeStatus
from console.samples.schema import ChassisSample, Health, NodeSample
from widgets.common.style import STATUS_COLORS

COLUMNS = ("Chassis", "Health", "Inlet °C", "Exhaust °C", "Power W", "Fans RPM", "Coolant in/out °C", "Conditions")
NO_DATA = "—"
_HEALTH_COLORS = {
    Health.WARNING: STATUS_COLORS[NodeStatus.WARNING],
    Health.CRITICAL: STATUS_COLORS[NodeStatus.CRITICAL],
}


def _number(value: float | None, digits: int = 1) -> str:
    return NO_DATA if value is None else f"{value:.{digits}f}"


def chassis_cells(name: str, chassis: ChassisSample) -> tuple[str, ...]:
    """The cells of one chassis row, in ``COLUMNS`` order."""
    fans = NO_DATA if not chassis.fans_rpm else " ".join(f"{rpm:.0f}" for rpm in chassis.fans_rpm)
    coolant = (
        NO_DATA
        if chassis.coolant_supply_c is None and chassis.coolant_return_c is None
        else f"{_number(chassis.coolant_supply_c)} / {_number(chassis.coolant_return_c)}"
    )
    return (
        name,
        str(chassis.health) if chassis.health is not None else NO_DATA,
        _number(chassis.inlet_c),
        _number(chassis.exhaust_c),
        _number(chassis.power_w, 0),
        fans,
        coolant,
        "; ".join(chassis.conditions) or "",
    )


def chassis_rows(chassis: ChassisSample) -> list[tuple[tuple[str, ...], Health | None]]:
    """Each chassis of a multi-chassis BMC, else the node's one chassis."""
    if chassis.parts:
        return [(chassis_cells(part.name, part.readings), part.readings.health) for part in chassis.parts]
    return [(chassis_cells("chassis", chassis), chassis.health)]


class BmcView(QWidget):
    def __init__(self) -> None:
        super().__init__()
        self.title = QLabel("Select a node to see its BMC readings.")
        self.title.setTextFormat(Qt.TextFormat.PlainText)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().hide()
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)
        layout = QVBoxLayout(self)
        layout.addWidget(self.title)
        layout.addWidget(self.table, 1)
        self._shown: tuple[str, ChassisSample] | None = None

    def show_node(self, node: str, sample: NodeSample | None) -> None:
        if sample is None:
            self.title.setText(f"{node}: no sample yet")
            self.table.setRowCount(0)
            self._shown = None
            return
        if self._shown == (node, sample.chassis):
            return  # unchanged since the last refresh: keep the user's selection and scroll position
        self._shown = (node, sample.chassis)
        chassis = sample.chassis
        count = len(chassis.parts) or 1
        self.title.setText(
            f"{node} · {count} chassis · health {chassis.health or 'not reported'} · from {sample.source}"
        )
        rows = chassis_rows(chassis)
        self.table.setRowCount(len(rows))
        for row, (cells, health) in enumerate(rows):
            for column, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if column == len(cells) - 1:
                    item.setToolTip(text.replace("; ", "\n"))
                if health in _HEALTH_COLORS and column in (1, len(cells) - 1):
                    item.setForeground(QColor(_HEALTH_COLORS[health]))
                self.table.setItem(row, column, item)
