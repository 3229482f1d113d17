from study.progress import clock, progress_line


def test_progress_line_by_hand():
    # 10 of 40 epochs in 60 s: 30 to go at 6 s each is 180 s.
    line = progress_line(done=1, running=2, pending=5, epochs_done=10, epochs_total=40, elapsed_s=60.0)
    assert line == ("progress: 1 of 8 trials done, 2 running, 5 pending; epochs 10 of 40; 1m 00s elapsed, "
                    "about 3m 00s left")


def test_no_estimate_before_the_first_epoch_or_after_the_last():
    assert "left" not in progress_line(0, 2, 6, 0, 40, 5.0)
    assert progress_line(8, 0, 0, 40, 40, 3725.0).endswith("1h 02m elapsed")


def test_clock():
    assert [clock(s) for s in (0, 59.6, 61, 3600, 7322)] == ["0m 00s", "1m 00s", "1m 01s", "1h 00m", "2h 02m"]
