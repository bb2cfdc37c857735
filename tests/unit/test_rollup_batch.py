"""The rollup writer's batched accumulation and the skip of a repeated sample object: what ends up in a minute's
row when samples arrive together, repeat, change GPUs, or are malformed. Real SQLite files in tmp_path; a long
batch window makes "one batch" deterministic (flush cuts it short)."""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from console.history.rings import CHASSIS_METRICS, chassis_row
from console.history.rollup import RollupStore
from console.samples.schema import ChassisSample, GpuSample, NodeSample, ThrottleReason, throttle_mask

ONE_BATCH_S = 30.0  # longer than any test: every sample observed before a flush lands in one drained batch


def _sample(
    node: str,
    t: float,
    power: float | None,
    *,
    uuids: tuple[str, ...] = ("a", "b"),
    chassis: ChassisSample | None = None,
    reasons: tuple[ThrottleReason, ...] = (),
) -> NodeSample:
    return NodeSample(
        node,
        "site",
        "test",
        t,
        tuple(
            GpuSample(i, f"GPU-{node}-{u}", power_w=None if power is None else power + i, throttle_reasons=reasons)
            for i, u in enumerate(uuids)
        ),
        chassis if chassis is not None else ChassisSample(inlet_c=20.0),
    )


def _minute_start(minutes_ago: int) -> float:
    return (math.floor(time.time() / 60) - minutes_ago) * 60.0


def _count_and_power(rollup: RollupStore, node: str, gpu: str, minute_t: float) -> tuple[float, float, float, float]:
    """(count, min, mean, max) of power_w for one GPU in the minute starting at ``minute_t``."""
    minutes, stats = rollup.reader.block(node, gpu, minute_t, minute_t + 60)
    assert len(minutes) == 1, f"expected one row for {node}/{gpu}, got {len(minutes)}"
    column = rollup.reader.metric_of(minutes, stats, "gpu", "power_w")
    n = float(stats[0, 0, 1])  # power_w is the second GPU metric
    return n, float(column.min[0]), float(column.mean[0]), float(column.max[0])


def test_a_node_twice_in_one_batch_counts_both_samples_in_the_mean(tmp_path: Path) -> None:
    m0 = _minute_start(10)
    cap, thermal = (ThrottleReason.SW_POWER_CAP,), (ThrottleReason.HW_THERMAL_SLOWDOWN, ThrottleReason.SW_POWER_CAP)
    rollup = RollupStore.open(tmp_path / "h.sqlite3", batch_window_s=ONE_BATCH_S)
    try:
        started = time.monotonic()
        rollup.observe(_sample("n1", m0 + 1, 100.0, reasons=cap))
        rollup.observe(_sample("n2", m0 + 1, 7.0))
        rollup.observe(_sample("n1", m0 + 2, 200.0, reasons=thermal))
        rollup.observe(_sample("n1", m0 + 3, 600.0, reasons=cap))  # a third time, same minute, same batch
        rollup.observe(_sample("n1", m0 + 61, 50.0, uuids=("a",)))  # the next minute: GPU b has left
        rollup.flush()
        assert time.monotonic() - started < 5  # flush cut the 30 s batch window short
        assert _count_and_power(rollup, "n1", "GPU-n1-a", m0) == (3.0, 100.0, 300.0, 600.0)
        assert _count_and_power(rollup, "n1", "GPU-n1-b", m0) == (3.0, 101.0, 301.0, 601.0)
        assert _count_and_power(rollup, "n2", "GPU-n2-a", m0) == (1.0, 7.0, 7.0, 7.0)
        assert _count_and_power(rollup, "n1", "GPU-n1-a", m0 + 60) == (1.0, 50.0, 50.0, 50.0)
        gone, _ = rollup.reader.block("n1", "GPU-n1-b", m0 + 60, m0 + 120)
        assert len(gone) == 0  # a GPU that left the node gets no row for the minute it was missing
        masks = rollup.reader.series("n1", "GPU-n1-a", "throttle_mask", m0, m0 + 60)
        assert masks.min[0] == throttle_mask(cap) and masks.max[0] == throttle_mask(thermal)
        _, inlet = rollup.reader.block("n1", None, m0, m0 + 60)
        assert inlet[0, 0, 0] == 3.0  # the chassis row counted all three too
    finally:
        rollup.close()


def test_the_same_sample_object_again_is_not_counted_twice_but_an_equal_new_one_is(tmp_path: Path) -> None:
    m0 = _minute_start(10)
    rollup = RollupStore.open(tmp_path / "h.sqlite3")
    try:
        first = _sample("n1", m0 + 1, 100.0)
        other_node = _sample("n2", m0 + 1, 5.0)
        rollup.observe(first)
        rollup.observe(first)  # a poll that found nothing new handed the previous sample on
        rollup.observe(other_node)
        rollup.observe(first)  # still the last one seen from n1, even with n2 in between
        rollup.flush()
        assert _count_and_power(rollup, "n1", "GPU-n1-a", m0) == (1.0, 100.0, 100.0, 100.0)
        rollup.observe(_sample("n1", m0 + 30, 300.0))
        rollup.observe(dataclasses.replace(first))  # equal values, a new object: a new reading
        rollup.flush()
        n, lo, mean, hi = _count_and_power(rollup, "n1", "GPU-n1-a", m0)
        assert (n, lo, hi) == (3.0, 100.0, 300.0) and mean == pytest.approx(500.0 / 3, rel=1e-6)
    finally:
        rollup.close()


def test_chassis_rows_hold_the_same_values_as_the_live_charts(tmp_path: Path) -> None:
    m0 = _minute_start(10)
    chassis_by_node = {
        "no-fans": ChassisSample(inlet_c=21.0, exhaust_c=None, power_w=3000.0),
        "three-fans": ChassisSample(coolant_supply_c=30.0, coolant_flow_lpm=12.5, fans_rpm=(1000.0, 2000.0, 3000.0)),
        "ten-fans": ChassisSample(coolant_return_c=40.0, fans_rpm=tuple(float(i) for i in range(10))),
        "eight-fans": ChassisSample(exhaust_c=45.0, fans_rpm=tuple(100.0 * i for i in range(8))),
    }
    rollup = RollupStore.open(tmp_path / "h.sqlite3", batch_window_s=ONE_BATCH_S)
    try:
        for node, chassis in chassis_by_node.items():
            rollup.observe(_sample(node, m0 + 1, 1.0, chassis=chassis))
        rollup.flush()
        for node, chassis in chassis_by_node.items():
            _, stats = rollup.reader.block(node, None, m0, m0 + 60)
            assert stats.shape == (1, 4, len(CHASSIS_METRICS))
            expected = np.array(chassis_row(chassis), dtype=np.float32)
            np.testing.assert_array_equal(stats[0, 2], expected, err_msg=node)  # the mean of one sample
            np.testing.assert_array_equal(stats[0, 0], np.isfinite(expected).astype(np.float32), err_msg=node)
    finally:
        rollup.close()


def test_a_malformed_sample_costs_only_itself_and_the_writer_goes_on(tmp_path: Path) -> None:
    m0 = _minute_start(10)
    rollup = RollupStore.open(tmp_path / "h.sqlite3", batch_window_s=ONE_BATCH_S)
    try:
        hot: Any = "hot"  # a source's bug: a string where a number belongs
        broken = NodeSample("bad", "site", "test", m0 + 1, (GpuSample(0, "GPU-bad", power_w=hot),), ChassisSample())
        rollup.observe(_sample("n1", m0 + 1, 100.0))
        rollup.observe(broken)
        rollup.observe(_sample("n2", m0 + 1, 10.0))
        rollup.flush()
        assert rollup.writer_alive
        assert "a sample of node bad" in (rollup.last_error or "")
        assert _count_and_power(rollup, "n1", "GPU-n1-a", m0) == (1.0, 100.0, 100.0, 100.0)
        assert _count_and_power(rollup, "n2", "GPU-n2-a", m0) == (1.0, 10.0, 10.0, 10.0)
        assert len(rollup.reader.block("bad", "GPU-bad", m0, m0 + 60)[0]) == 0
    finally:
        rollup.close()


def test_a_long_batch_window_does_not_hold_up_close(tmp_path: Path) -> None:
    m0 = _minute_start(10)
    path = tmp_path / "h.sqlite3"
    rollup = RollupStore.open(path, batch_window_s=ONE_BATCH_S)
    rollup.observe(_sample("n1", m0 + 1, 100.0))
    started = time.monotonic()
    rollup.close()
    assert time.monotonic() - started < 5 and not rollup.writer_alive
    again = RollupStore.open(path)
    try:
        assert _count_and_power(again, "n1", "GPU-n1-a", m0) == (1.0, 100.0, 100.0, 100.0)  # written at close
    finally:
        again.close()


def test_each_minute_starts_from_empty_sums_and_only_reporting_gpus_get_rows(tmp_path: Path) -> None:
    m0 = _minute_start(10)
    gpus_by_minute = [("a", "b"), ("a", "b"), ("a",), ("a", "b")]
    rollup = RollupStore.open(tmp_path / "h.sqlite3", grace_s=0)
    try:
        for minute, uuids in enumerate(gpus_by_minute):
            base = 100.0 * (minute + 1)
            for second, offset in ((5, 0.0), (35, 20.0)):
                rollup.observe(_sample("n1", m0 + minute * 60 + second, base + offset, uuids=uuids))
            rollup.flush()  # each minute written before the next begins (its sums are then reused)
        for minute, uuids in enumerate(gpus_by_minute):
            base = 100.0 * (minute + 1)
            start = m0 + minute * 60
            assert _count_and_power(rollup, "n1", "GPU-n1-a", start) == (2.0, base, base + 10, base + 20), minute
            written, _ = rollup.reader.block("n1", "GPU-n1-b", start, start + 60)
            assert len(written) == (1 if "b" in uuids else 0), minute
    finally:
        rollup.close()
