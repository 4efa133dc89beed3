"""bench prep runs end to end on a tiny source: both methods timed, a ratio printed and saved, scratch removed."""
import functools
import json

from bench import prep as bench_prep
from bench import results


def test_bench_prep_times_prep_against_dle_and_saves_the_ratio(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(results, "save", functools.partial(results.save, out_dir=tmp_path / "results"))
    scratch = tmp_path / "scratch"
    bench_prep.main(["--size-mb", "2", "--rounds", "1", "--workers", "1", "--out", str(scratch)])

    printed = capsys.readouterr().out
    assert "ratio prep/DLE = " in printed
    saved = json.loads(next((tmp_path / "results").glob("prep-*.json")).read_text())
    assert saved["source"]["bytes"] >= 2e6
    assert saved["ratio_prep_over_dle"] == saved["prep_s"] / saved["dle_s"] > 0
    assert saved["images"] > 0 and saved["prep_images_per_s"] == saved["images"] / saved["prep_s"]
    assert list(scratch.iterdir()) == [], "the run's scratch directory is removed"
