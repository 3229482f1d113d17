"""Writes into an output folder: whole or not at all, never through a link, and processes sharing a
folder never trip each other."""

import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from study.files import replace_file, save_figure  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def test_a_link_at_the_target_is_replaced_and_what_it_pointed_to_is_untouched(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("not yours\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "CLAIMS.md").symlink_to(outside)
    replace_file(out / "CLAIMS.md", "the report\n")
    assert outside.read_text() == "not yours\n"
    assert not (out / "CLAIMS.md").is_symlink() and (out / "CLAIMS.md").read_text() == "the report\n"
    figure = plt.figure()
    (out / "fig.png").symlink_to(outside)
    save_figure(figure, out / "fig.png", dpi=20)
    plt.close(figure)
    assert outside.read_text() == "not yours\n" and (out / "fig.png").read_bytes().startswith(b"\x89PNG")
    assert sorted(p.name for p in out.iterdir()) == ["CLAIMS.md", "fig.png"]  # no temporary file left


def test_a_failed_write_leaves_the_old_file_whole_and_no_temporary(tmp_path):
    target = tmp_path / "table.csv"
    target.write_text("old\n")
    during = []

    class Unencodable(str):
        def encode(self, *args):
            during.extend(p.name for p in tmp_path.iterdir())
            raise RuntimeError("interrupted mid-write")

    try:
        replace_file(target, Unencodable("new"))
    except RuntimeError:
        pass
    assert target.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["table.csv"]
    # The temporary lay beside the target, so that the final rename never crosses file systems.
    assert len(during) == 2 and any(name.startswith(".table.csv.") for name in during)


def test_many_processes_writing_and_checking_one_folder_never_trip_each_other(tmp_path):
    script = ("import sys\nfrom pathlib import Path\nfrom study.files import replace_file\n"
              "from trainers.checkpoint import check_writable\n"
              "folder = Path(sys.argv[1])\n"
              "for round in range(20):\n"
              "    check_writable(folder, 'shared folder')\n"
              "    replace_file(folder / 'shared.json', sys.argv[2] * 1000)\n")
    writers = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path), str(i)], cwd=ROOT,
                                stderr=subprocess.PIPE, text=True) for i in range(12)]
    errors = [writer.communicate(timeout=300)[1] for writer in writers]
    assert [writer.returncode for writer in writers] == [0] * 12, errors
    assert (tmp_path / "shared.json").read_text() in {str(i) * 1000 for i in range(12)}  # one writer's, whole
    assert [p.name for p in tmp_path.iterdir()] == ["shared.json"]
