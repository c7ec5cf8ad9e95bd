"""The benchmark scripts run end to end at the tiny preset and print well-formed tables.

They measure speed, which tests never judge (benchmarks/RESULTS.md holds the numbers); this only
keeps the scripts from breaking as the code under them changes.
"""

from __future__ import annotations

import pytest
import torch

from benchmarks import frame_linears, sampler_speed
from dreamer4_torch.prepack import available as prepack_available


def table_rows(text: str) -> list[list[str]]:
    """Data rows of the markdown tables in text (header and separator rows dropped)."""
    rows = [line.strip("|").split("|") for line in text.splitlines() if line.startswith("|")]
    return [[c.strip() for c in r] for r in rows if not set(r[0].strip()) <= {"-"} and r[0].strip() not in
            ("preset", "backend")]


@pytest.fixture(autouse=True)
def keep_torch_threads():
    """The scripts set torch's thread count (--threads); give the rest of the session its own back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_frame_linears_table(capsys):
    assert frame_linears.main(["--presets", "tiny", "--threads", "1", "--repeats", "2"]) == 0
    rows = table_rows(capsys.readouterr().out)
    assert len(rows) == 1
    preset, threads, n_rows, matrices, mb, ms, gbps, packed_ms, packed_gbps, read_gbps = rows[0]
    assert (preset, threads) == ("tiny", "1")
    assert int(n_rows) > 0 and int(matrices) > 0
    assert float(mb) > 0 and float(ms) > 0 and float(gbps) > 0 and float(read_gbps) > 0
    if prepack_available():
        assert float(packed_ms) > 0 and float(packed_gbps) > 0
    else:
        assert (packed_ms, packed_gbps) == ("n/a", "n/a")


def test_frame_linears_rejects_an_unknown_preset(capsys):
    with pytest.raises(SystemExit):
        frame_linears.main(["--presets", "dmc256"])
    assert "unknown preset 'dmc256'" in capsys.readouterr().err


def test_sampler_speed_table(capsys):
    assert sampler_speed.main(["--presets", "tiny", "--contexts", "4", "--steps", "2", "--roll", "4:2",
                               "--frames", "1", "--warmup", "1", "--threads", "1"]) == 0
    rows = table_rows(capsys.readouterr().out)
    assert [(r[0], r[1], r[2], r[3], r[4]) for r in rows] == [("torch", "tiny", "slide", "4", "2"),
                                                              ("torch", "tiny", "roll", "4", "2")]
    for r in rows:
        assert all(float(v.rstrip("x")) > 0 for v in r[5:])
