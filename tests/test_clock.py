"""The scaled test clock: origin, and wall-clock steps read from a file."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from concentrator.clock import ScaledClock, scaled_start
from hil_sim.clock import SimClock


def test_scaled_start_is_one_time_line_for_every_process() -> None:
    origin = 1_000_000.0
    assert scaled_start(30.0, origin, now=origin) == origin
    assert scaled_start(30.0, origin, now=origin + 10) == origin + 300
    assert scaled_start(30.0, None, now=5.0) == 5.0
    sim = SimClock.from_origin(30.0, origin)
    assert sim.start == pytest.approx(scaled_start(30.0, origin), abs=30.0)


def test_step_file_steps_the_wall_clock_and_bad_text_keeps_the_last_step(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    step = tmp_path / "step"
    clock = ScaledClock(scale=1.0, start=1000.0, step_file=step, step_every_s=0.0)
    before = clock.wall()  # no file yet: no step
    assert before == pytest.approx(1000.0, abs=5.0)
    step.write_text("600\n")
    assert clock.wall() - before == pytest.approx(600.0, abs=5.0)
    step.write_text("-120")
    assert clock.wall() - before == pytest.approx(-120.0, abs=5.0)
    with caplog.at_level(logging.WARNING):
        step.write_text("ten minutes")
        assert clock.wall() - before == pytest.approx(-120.0, abs=5.0)
    assert "'ten minutes' is not a number of seconds" in caplog.text
    step.unlink()
    assert clock.wall() - before == pytest.approx(0.0, abs=5.0)


def test_step_file_is_read_at_most_once_per_interval(tmp_path: Path) -> None:
    step = tmp_path / "step"
    step.write_text("0")
    clock = ScaledClock(scale=1.0, start=0.0, step_file=step, step_every_s=3600.0)
    clock.wall()
    step.write_text("600")
    assert clock.offset == 0.0 and clock.wall() < 600  # not re-read within the interval


def test_run_refuses_a_clock_step_file_on_the_real_clock(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from concentrator.cli import main

    result = CliRunner().invoke(
        main, ["run", "--config", str(tmp_path / "c.toml"), "--clock-step-file", "x"]
    )
    assert result.exit_code == 2
    assert "--clock-step-file needs --time-scale" in result.output
