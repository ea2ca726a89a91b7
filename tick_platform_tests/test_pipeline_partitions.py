"""The fact partitions a pipeline or demo run gets: the data's days unless the user chose them."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from tick_platform.partitions import fact_partitions
from tick_tools.pipeline.partitions_env import END, HOURS, START, data_days, partitions_env


@pytest.fixture
def unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(START, raising=False)
    monkeypatch.delenv(END, raising=False)
    monkeypatch.delenv(HOURS, raising=False)


def test_a_historical_replay_gets_the_days_of_its_data(sample_path: Path, unset: None) -> None:
    env = partitions_env([str(sample_path)], realtime=False)
    assert env == {START: "2010-02-17", END: "2010-02-18"}  # 09:30-15:45 ET = 14:30-20:45 UTC
    parts = fact_partitions(env[START], env[END])
    assert parts.get_num_partitions() == 78  # one NYSE regular session, 09:30 to 16:00 New York
    assert parts.get_first_partition_key() == "2010-02-17-09:30"
    assert parts.get_last_partition_key() == "2010-02-17-15:55"


def test_a_live_run_starts_today_and_stays_open(sample_path: Path, unset: None) -> None:
    today = datetime.now(tz=UTC).date().isoformat()
    # Shifted to now, the data may fall on a night or a weekend: partitions around the clock.
    assert partitions_env([str(sample_path)], realtime=True) == {START: today, HOURS: "always"}


def test_the_users_choice_wins(sample_path: Path, unset: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env_file = tmp_path / "user.env"
    env_file.write_text(f"{START}=2010-01-01\n")
    assert partitions_env([str(sample_path)], realtime=False, env_file=str(env_file)) == {}
    monkeypatch.setenv(START, "2009-01-01")
    assert partitions_env([str(sample_path)], realtime=False) == {}


def test_data_days_spans_files_and_ignores_bad_rows(tmp_path: Path) -> None:
    a = tmp_path / "AAA_tickbidask.txt"
    a.write_text("03/08/2024,09:30:00,10.0,9.9,10.1,100\nnot a tick\n03/08/2024,19:59:59,10.0,9.9,10.1,100\n")
    b = tmp_path / "BBB_tickbidask.txt"
    b.write_text("03/11/2024,09:30:00,20.0,19.9,20.1,100\n")
    first, last = data_days([str(a), str(b)]) or (None, None)
    # 19:59:59 EST is 00:59:59 UTC of the next day, but still Friday on the exchange's calendar.
    assert (str(first), str(last)) == ("2024-03-08", "2024-03-11")
    empty = tmp_path / "CCC_tickbidask.txt"
    empty.write_text("03/08/2024,09:30:00,-1.0,9.9,10.1,100\n")  # a negative price: rejected
    assert data_days([str(empty)]) is None
