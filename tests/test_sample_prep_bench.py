"""bench prep runs end to end on a tiny source: both methods timed, a ratio printed and saved (into ./bench-results,
not over the package's bench/results behind the README's figures), scratch removed."""
import json

from bench import prep as bench_prep
from bench import results


def package_record():
    return {path.name: path.read_bytes() for path in sorted(results.RECORD_DIR.iterdir())}


def test_bench_prep_times_prep_against_dle_and_saves_the_ratio(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the default --results is ./bench-results
    record = package_record()
    scratch = tmp_path / "scratch"
    bench_prep.main(["--size-mb", "2", "--rounds", "1", "--workers", "1", "--out", str(scratch)])

    printed = capsys.readouterr().out
    assert "ratio prep/DLE = " in printed
    path = next((tmp_path / "bench-results").glob("prep-*.json"))
    assert f"saved {path.relative_to(tmp_path)}" in printed
    assert package_record() == record, "the README's figures are left as they were"
    saved = json.loads(path.read_text())
    assert saved["source"]["bytes"] >= 2e6
    assert saved["ratio_prep_over_dle"] == saved["prep_s"] / saved["dle_s"] > 0
    assert saved["images"] > 0 and saved["prep_images_per_s"] == saved["images"] / saved["prep_s"]
    assert list(scratch.iterdir()) == [], "the run's scratch directory is removed"
