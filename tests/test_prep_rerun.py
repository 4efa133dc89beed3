"""A rerun into an output written with other options is refused in one line that names each option that differs,
as the user types it, with both values, and leaves the output as it was. A layout that writes no shards says what
it wrote instead of counting shards."""
import hashlib
import shutil

import pytest

from prep import verify
from prep.imagenet import RECORDED, main
from prep.sample import write_sample

# Each option prep records: as the output was written with it, and as the rerun asks otherwise ([]: not given).
RERUNS = {
    "--shard-size": (["--shard-size", "2"], ["--shard-size", "3"]),
    "--seed": (["--seed", "0"], ["--seed", "1"]),
    "--splits": (["--splits", "train,val"], ["--splits", "train"]),
    "--layout": (["--layout", "both"], ["--layout", "folders"]),
    "--max-side": ([], ["--max-side", "64"]),
    "--quality": (["--quality", "95"], ["--quality", "80"]),
    "--full-decode": ([], ["--full-decode"]),
    "--max-member-bytes": (["--max-member-bytes", "67108864"], ["--max-member-bytes", "5000000"]),
}


def prep_args(src, out, changed=None):
    """The command that wrote the outputs, with the option `changed` as the rerun asks it."""
    options = [arg for flag, (written, rerun) in RERUNS.items() for arg in (rerun if flag == changed else written)]
    return ["--src", str(src), "--out", str(out), "--workers", "1", *options]


def typed(flag, args):
    return " ".join(args) or f"no {flag}"


def refusal(out, was, now):
    return (f"prep: --out {out} was written with {was}; this run asks {now} "
            "(use the same options to resume or complete it, or another --out)")


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    """Two classes of two train images, one of them truncated (so a run can be stopped part way), and one val
    image each; photo-sized, so that the folders' MB in the summary is more than 0.0."""
    return write_sample(tmp_path_factory.mktemp("ILSVRC2012"), classes=2, train_per_class=2, val_per_class=1,
                        size="imagenet", quirks=False, corrupt=True)["out"]


@pytest.fixture(scope="module")
def outputs(src, tmp_path_factory):
    """Outputs of prep_args(src, out): one finished, one unfinished (stopped at the first rejected image)."""
    finished, unfinished = (tmp_path_factory.mktemp("written") / stage for stage in ("finished", "unfinished"))
    assert main(prep_args(src, finished)) == 0
    with pytest.raises(SystemExit):
        main([*prep_args(src, unfinished), "--max-rejects", "0"])
    assert (unfinished / ".prep" / "run.json").exists() and not (unfinished / "manifest.json").exists()
    return {"finished": finished, "unfinished": unfinished}


def contents(out):
    """Every file's sha256 and every folder, by path under `out`."""
    return {str(path.relative_to(out)): hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "folder"
            for path in out.rglob("*")}


def refused(capsys, args):
    """The one line prep printed, all it printed, refusing the run with exit status 2."""
    with pytest.raises(SystemExit) as stop:
        main(args)
    printed = capsys.readouterr()
    assert stop.value.code == 2 and printed.out == "" and len(printed.err.splitlines()) == 1, printed
    return printed.err.rstrip("\n")


def test_the_table_has_each_option_prep_records():
    assert set(RERUNS) == set(RECORDED)


@pytest.mark.parametrize("stage", ["finished", "unfinished"])
@pytest.mark.parametrize("flag", RERUNS)
def test_a_rerun_with_another_option_is_refused_naming_it(outputs, src, tmp_path, capsys, stage, flag):
    out = shutil.copytree(outputs[stage], tmp_path / "out")
    before = contents(out)
    written, rerun = RERUNS[flag]
    assert refused(capsys, prep_args(src, out, flag)) == refusal(out, typed(flag, written), typed(flag, rerun))
    assert contents(out) == before


@pytest.mark.parametrize("stage", ["finished", "unfinished"])
def test_a_rerun_from_another_src_is_refused_naming_it(outputs, src, tmp_path, capsys, stage):
    out = shutil.copytree(outputs[stage], tmp_path / "out")
    before = contents(out)
    elsewhere = tmp_path / "same-archives-elsewhere"
    elsewhere.symlink_to(src)
    assert refused(capsys, prep_args(elsewhere, out)) == refusal(out, f"--src {src}", f"--src {elsewhere}")
    assert contents(out) == before


def test_every_difference_is_named_in_one_line(outputs, src, tmp_path, capsys):
    out = shutil.copytree(outputs["finished"], tmp_path / "out")
    args = [*prep_args(src, out, "--seed"), "--full-decode"]
    assert refused(capsys, args) == refusal(out, "--seed 0, no --full-decode", "--seed 1, --full-decode")


def test_a_folders_only_summary_counts_folders_not_shards(src, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["--src", str(src), "--out", str(out), "--workers", "1", "--layout", "folders"]) == 0
    printed = capsys.readouterr().out
    assert "shard" not in printed
    header, *rows = (line.split() for line in printed.splitlines()[:3])
    assert header == ["split", "images", "expected", "rejected", "re-encoded", "folders", "MB"]
    for split, *_, folders, megabytes in rows:
        images = [path for path in (out / split).rglob("*") if path.is_file()]
        assert int(folders) == len(list((out / split).iterdir())) == 2
        assert megabytes == f"{sum(path.stat().st_size for path in images) / 1e6:.1f}" != "0.0"
    assert verify.main([str(out)]) == 0
    verdict = capsys.readouterr().out.strip()
    assert verdict.startswith(f"verify: {out} ok: the folder layout, train ") and "shard" not in verdict
