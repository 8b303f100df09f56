"""The throughput benchmark's compute figure and its report (the bench itself is not timed)."""

from __future__ import annotations

import json

import pytest

from bench.__main__ import main
from bench.throughput import sd15_tflop


def test_the_sd15_cost_follows_the_issues_figures() -> None:
    # 43 TFLOP per 512x512 25-step CFG image; at an H100/H200's ~790 TFLOP/s that is a floor of
    # about 54 ms an image, 18 images/s (issue 23).
    assert sd15_tflop(512, 512, 25) == pytest.approx(43.0)
    assert sd15_tflop(512, 512, 25) / 790 == pytest.approx(0.054, abs=0.001)
    assert 790 / sd15_tflop(512, 512, 25) == pytest.approx(18.4, abs=0.1)
    assert sd15_tflop(768, 512, 25) == pytest.approx(64.5)  # 1.5x the pixels
    assert sd15_tflop(512, 512, 50) == pytest.approx(86.0)  # twice the steps
    assert sd15_tflop(1024, 1024, 20) == pytest.approx(43.0 * 4 * 0.8)


def test_the_report_has_every_figure_the_issue_asks_for(capsys) -> None:
    args = ["throughput", "--jobs", "2", "--users", "1", "--size", "64x64", "--steps", "2"]
    assert main([*args, "--max-batch", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    for key in ("s_per_batch", "lone_request_s", "peak_rss_mb", "compile_s"):
        assert report[key] >= 0, key
    assert report["batched"]["images_per_s"] > 0
    assert report["tflop_per_s"] is None  # the tiny model costs nothing like SD1.5
    assert report["settings"]["compile"] == "off" and report["settings"]["device"]


def test_calibrate_says_it_needs_a_gpu_on_a_cpu(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["calibrate", "--model", "tiny"])
    assert exit_.value.code == 2
    assert "run it on a machine with a GPU" in capsys.readouterr().err
