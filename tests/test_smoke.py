"""The GPU smoke command, forced through on the CPU: each method runs straight through and stopped and
resumed, and the command says whether the two agree."""

import math

import pytest
import torch

from study.measure import smoke
from trainers import data as datasets

CPU_SIZED = ["--set", "device=cpu", "--set", "network=small-cnn", "--set", "image_size=16", "--set", "cnn_width=8",
             "--set", "batch_size=32"]


@pytest.mark.slow
def test_the_smoke_command_resumes_every_method_it_runs_exactly(capsys):
    code = smoke.main(["--methods", "mocov2-interclr", "byol-interclr", *CPU_SIZED])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "precision bf16, deterministic True, device cpu" in out
    assert out.count("resumed run equals uninterrupted: yes") == 4 and "5 of 5 runs passed" in out
    assert "(the next two runs: mocov2-interclr)" in out
    assert "decoding trial     ok" in out and "fast kernels       ok" in out
    assert "decode_on_device   ok     24 JPEGs decoded on cpu: sizes equal to the loader workers': yes; pixels " \
           "differing: 0, by 0.00 levels on average and at most 0" in out


@pytest.mark.slow
def test_the_smoke_runs_trials_over_two_ranks_where_asked(capsys):
    """The 2-GPU part, on a CPU over gloo: bf16, deterministic, stopped and resumed over 2 ranks."""
    code = smoke.main(["--methods", "byol-interclr", "--ranks", "2", "--methods-only", *CPU_SIZED])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "byol-interclr      over 2 ranks ok" in out and "3 of 3 runs passed" in out
    assert out.count("resumed run equals uninterrupted: yes") == 2 and "decoding trial" not in out
    assert "last loss over 2 ranks / on one device - 1" in out


def test_a_run_that_resumes_differently_fails_the_smoke(capsys, monkeypatch):
    monkeypatch.setattr(smoke, "same_rows", lambda first, second: False)
    assert smoke.main(["--methods", "npidv2", "--methods-only", *CPU_SIZED]) == 1
    assert "1 of 2 runs passed; failed: npidv2" in capsys.readouterr().out


def test_rows_compare_equal_on_what_was_computed_only():
    row = {"epoch": 1, "loss": 0.5, "knn_top1": math.nan, "iter_time_s": 0.1, "hostname": "a"}
    assert smoke.same_rows([row], [{**row, "iter_time_s": 0.2, "hostname": "b"}])  # timings and machine aside
    assert not smoke.same_rows([row], [{**row, "loss": 0.5000001}])
    assert not smoke.same_rows([row], [row, row])


def test_decoding_that_moves_pixels_too_far_or_changes_sizes_fails_the_smoke(capsys, monkeypatch):
    """The decoding check's verdict alone (the methods' runs stubbed as passing)."""
    monkeypatch.setattr(smoke, "smoke", lambda config: {"seconds": 0.0, "loss": 1.0, "peak_memory_mb": 0.0,
                                                        "resumes_exactly": True})
    for decoding in ({"largest": 40, "sizes_equal": True, "pixels_differing": 3, "mean": smoke.DECODE_TOLERANCE},
                     {"largest": 0, "sizes_equal": False, "pixels_differing": 0, "mean": 0.0}):
        monkeypatch.setattr(smoke, "decode_difference", lambda device, decoding=decoding: decoding)
        assert smoke.main(["--methods", "npidv2", *CPU_SIZED]) == 1
        assert "3 of 4 runs passed; failed: decode_on_device" in capsys.readouterr().out
    monkeypatch.setattr(smoke, "decode_difference", lambda device: {"largest": 40, "sizes_equal": True,
                                                                    "pixels_differing": 9, "mean": 1.9})
    assert smoke.main(["--methods", "npidv2", *CPU_SIZED]) == 0


def test_decoding_on_a_cpu_gives_the_loader_workers_pixels_exactly():
    assert smoke.decode_difference("cpu") == {"largest": 0, "sizes_equal": True, "pixels_differing": 0, "mean": 0.0}


def test_the_decoding_check_averages_over_the_images_own_pixels(monkeypatch):
    """A decoder one level off at every pixel of every image, and right on the padding: a mean of exactly 1
    (over the whole canvases, the padding's zeros would pull it below 1)."""
    decode = datasets.EncodedImages.to

    def one_level_off(self, device, non_blocking=False):
        canvases = decode(self, device, non_blocking)
        height, width = canvases.sizes[:, 0, None, None, None], canvases.sizes[:, 1, None, None, None]
        rows, columns = torch.arange(32)[None, None, :, None], torch.arange(32)[None, None, None, :]
        inside = (rows < height) & (columns < width)
        pixels = canvases.pixels
        moved = torch.where(pixels < 255, pixels + 1, pixels - 1)
        return datasets.Canvases(torch.where(inside, moved, pixels), canvases.sizes)

    monkeypatch.setattr(datasets.EncodedImages, "to", one_level_off)
    found = smoke.decode_difference("cpu")
    assert found["mean"] == 1.0 and found["largest"] == 1 and found["sizes_equal"]
