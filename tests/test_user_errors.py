"""A user's data mistakes are one line, not a traceback or a silent wrong result: a manifest edited by hand (a shard
outside the dataset, an unknown version, a class list cut short, no JSON), a file gone from the folder layout, a
batch of one image for a BatchNorm model, prep.verify pointed at a directory that is no dataset. Exit status 1 for
damaged data, 2 for data not where it was said to be (or a flag the data refutes)."""
import json
import re
import shutil

import pytest

import pipeline
from common.errors import BadManifest, DamagedShard, MissingSample
from common.layout import MANIFEST, outside_problem
from prep import verify
from trainer.fit import main as train

TINY = ["--device", "cpu", "--loader", "cpu", "--model", "resnet18", "--crop-size", "32", "--val-size", "36",
        "--workers", "1", "--batch-size", "8", "--epochs", "1", "--training_step_per_epoch", "2",
        "--eval_step_per_epoch", "1", "--print-freq", "1", "--skip_steps", "0"]

try:
    import nvidia.dali  # noqa: F401
    HAVE_DALI = True
except ImportError:
    HAVE_DALI = False

BACKENDS = ["cpu", pytest.param("dali-cpu", marks=pytest.mark.skipif(not HAVE_DALI, reason="needs nvidia-dali"))]

def tiny_loader(data, backend, batch_size=8, **settings):
    """A train loader of 32 px crops and one worker on the CPU."""
    options = pipeline.DataOptions(loader=backend, batch_size=batch_size, crop_size=32, val_size=36, workers=1,
                                   **settings)
    return pipeline.make_loader(data, "train", options, device="cpu")



def copy_of(shards, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(shards, data)
    return data


def edit_manifest(data, edit):
    manifest = json.loads((data / MANIFEST).read_text())
    edit(manifest)
    (data / MANIFEST).write_text(json.dumps(manifest))


def first_train_shard(key, value):
    def edit(manifest):
        manifest["splits"]["train"]["shards"][0][key] = value
    return edit


def cut_the_class_list(manifest):
    manifest["classes"] = manifest["classes"][:6]


# (id, what is done to the manifest, the line every reader prints after "<command>: ")
REFUSE = "; a shard and its index are file names in the dataset's own directory"
MANIFEST_EDITS = [
    ("traversal", first_train_shard("name", "../other/train-000000.tar"),
     "{manifest}: refused the train shard name '../other/train-000000.tar': a path traversal, outside the dataset"
     + REFUSE),
    ("traversal-of-an-index", first_train_shard("index", "../../etc/train-000000.idx"),
     "{manifest}: refused the train shard index '../../etc/train-000000.idx': a path traversal, outside the dataset"
     + REFUSE),
    ("absolute", first_train_shard("name", "/tmp/train-000000.tar"),
     "{manifest}: refused the train shard name '/tmp/train-000000.tar': an absolute path, outside the dataset"
     + REFUSE),
    ("a-slash", first_train_shard("name", "sub/train-000000.tar"),
     "{manifest}: refused the train shard name 'sub/train-000000.tar': a path with a directory in it, not a file "
     "name" + REFUSE),
    ("unknown-version", lambda manifest: manifest.update(version=2),
     "{manifest}: manifest version 2 is not supported (supported: 1); it was written by another version of "
     "imagenet-feed: read it with that one, or prep the data again with this one"),
    ("no-version", lambda manifest: manifest.pop("version"),
     "{manifest}: manifest version None is not supported (supported: 1); it was written by another version of "
     "imagenet-feed: read it with that one, or prep the data again with this one"),
    ("class-list-cut", cut_the_class_list,
     "{manifest}: split 'train' counts images of 10 classes (per_class) but the class list names 6: the manifest "
     "was edited (a class list cut short?); restore the manifest prep wrote"),
]
NOT_JSON = ("{manifest} is not JSON (Unterminated string starting at: line 1 column 28 (char 27)): not a manifest "
            "that prep wrote; restore it, or run python -m prep.imagenet again into a new --out")


def not_json(data):
    (data / MANIFEST).write_text('{"format": "imagenet-wds", "spl')


@pytest.fixture(params=[*MANIFEST_EDITS, ("not-json", None, NOT_JSON)], ids=lambda row: row[0])
def edited(request, sample_shards, tmp_path):
    """(data, the expected line): a copy of the sample's shards with its manifest edited. The traversal's target
    exists, so nothing but the check stops a reader from reading it."""
    _, edit, line = request.param
    data = copy_of(sample_shards, tmp_path)
    (tmp_path / "other").mkdir()
    shutil.copy(data / "train-000000.tar", tmp_path / "other")
    if edit is None:
        not_json(data)
    else:
        edit_manifest(data, edit)
    return data, line.format(manifest=data / MANIFEST)


def test_verify_refuses_an_edited_manifest_in_one_line(edited, capsys):
    data, line = edited
    assert verify.main([str(data)]) == 1
    assert capsys.readouterr().err == f"verify: {line}\n"


@pytest.mark.parametrize("backend", [*BACKENDS, "synthetic"])
def test_the_loaders_refuse_an_edited_manifest_at_open(edited, backend):
    data, line = edited
    with pytest.raises(BadManifest) as refused:
        tiny_loader(data, backend)
    assert str(refused.value) == line


def test_the_trainer_refuses_an_edited_manifest_in_one_line(edited, tmp_path, capsys):
    data, line = edited
    with pytest.raises(SystemExit) as stop:
        train([*TINY, "--data-path", str(data), "--output-dir", str(tmp_path / "run")])
    assert stop.value.code == 1
    assert capsys.readouterr().err == f"trainer: {line}\n"
    assert not (tmp_path / "run" / "report.json").exists()


@pytest.mark.parametrize("name, problem", [
    ("train-000000.tar", None),
    ("..", "a path traversal, outside the dataset"),
    ("..\\train-000000.tar", "a path traversal, outside the dataset"),
    ("\\\\server\\share\\train-000000.tar", "an absolute path, outside the dataset"),
    ("a/b/train-000000.tar", "a path with a directory in it, not a file name"),
    ("", "not a file name"),
    (".", "not a file name"),
    ("train\0.tar", "not a file name"),
])
def test_a_shard_name_is_a_file_name_in_the_dataset(name, problem):
    assert outside_problem(name) == problem


# --- a class list cut together with its counts: the labels read say so ----------------------------------------------

def cut_classes_and_counts(manifest):
    manifest["classes"] = manifest["classes"][:6]
    for split in manifest["splits"].values():
        split["per_class"] = split["per_class"][:6]


LABEL_BEYOND = re.compile(r"sample (train|val)-\d{6}\.tar:\S+\.jpg in (?P<data>\S+): label (?P<label>\d+) is not below "
                          r"the manifest's 6 classes \(its class list was cut, or the shard is another dataset's\); "
                          r"check the data with python -m prep.verify (?P=data)")


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_label_beyond_the_class_list_is_damaged_data_naming_the_sample(sample_shards, tmp_path, backend):
    data = copy_of(sample_shards, tmp_path)
    edit_manifest(data, cut_classes_and_counts)
    loader = tiny_loader(data, backend)
    with pytest.raises(DamagedShard) as stopped:
        for _ in loader:
            pass
    found = LABEL_BEYOND.fullmatch(str(stopped.value))
    assert found and found["data"] == str(data) and int(found["label"]) >= 6, stopped.value
    assert loader.skipped == 0


def test_the_trainer_stops_on_a_label_beyond_the_class_list_in_one_line(sample_shards, tmp_path, capsys):
    """Not torch's `IndexError: Target 6 is out of bounds` from inside the loss."""
    data = copy_of(sample_shards, tmp_path)
    edit_manifest(data, cut_classes_and_counts)
    with pytest.raises(SystemExit) as stop:
        train([*TINY, "--data-path", str(data), "--output-dir", str(tmp_path / "run")])
    assert stop.value.code == 1
    error = capsys.readouterr().err
    assert error.startswith("trainer: ") and error.endswith("\n") and error.count("\n") == 1
    assert LABEL_BEYOND.fullmatch(error[len("trainer: "):-1]), error


# --- the DeepLearningExamples folder layout --------------------------------------------------------------------------

@pytest.fixture
def folders(sample_shards, tmp_path):
    """The folder layout of the sample alone (train/, val/ and their lists, no manifest or shards)."""
    data = tmp_path / "folders"
    for name in ("train", "val"):
        shutil.copytree(sample_shards / name, data / name)
        shutil.copy(sample_shards / f"{name}_list.txt", data)
    return data


def listed(data, split="train"):
    return [line.rsplit(" ", 1)[0] for line in (data / f"{split}_list.txt").read_text().splitlines()]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_file_gone_from_the_folder_layout_is_one_data_error_naming_it(folders, backend):
    gone = folders / "train" / listed(folders)[500]
    gone.unlink()
    loader = tiny_loader(folders, backend, 50)
    with pytest.raises(MissingSample) as stopped:
        for _ in loader:
            pass
    assert str(stopped.value) == (f"{gone} is listed in {folders / 'train_list.txt'} but missing (deleted or moved "
                                  "after prep)")
    assert stopped.value.exit_status == 1


def test_the_trainer_names_a_file_gone_from_the_folder_layout_in_one_line(folders, tmp_path, capsys):
    for name in listed(folders):  # whichever the first step reads
        (folders / "train" / name).unlink()
    with pytest.raises(SystemExit) as stop:
        train([*TINY, "--data-path", str(folders), "--output-dir", str(tmp_path / "run")])
    assert stop.value.code == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert re.fullmatch(rf"trainer: {re.escape(str(folders))}/train/n\d+/\S+\.JPEG is listed in "
                        rf"{re.escape(str(folders / 'train_list.txt'))} but missing \(deleted or moved after prep\)\n",
                        error), error


def test_a_file_list_label_beyond_the_class_folders_is_refused_at_open(folders):
    lines = (folders / "train_list.txt").read_text().splitlines()
    lines[3] = f"{lines[3].rsplit(' ', 1)[0]} 10"
    (folders / "train_list.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(BadManifest) as refused:
        tiny_loader(folders, "cpu")
    assert str(refused.value) == (f"{folders / 'train_list.txt'}:4: label 10 of {lines[3].rsplit(' ', 1)[0]} is not "
                                  f"below the 10 class folders of {folders / 'train'}: the classes or the list "
                                  "changed after prep")


# --- a batch of one image ---------------------------------------------------------------------------------------------

BATCH_OF_ONE = ("trainer: a batch of 1 image per rank (--batch-size) cannot train --model resnet18: its BatchNorm "
                "layers need more than one value per channel; the smallest batch per rank that trains it is 2\n")


def test_a_batch_of_one_for_a_batchnorm_model_is_refused_at_start(sample_shards, tmp_path, capsys):
    """Not torch's `Expected more than 1 value per channel when training` from the first step."""
    args = [*TINY, "--data-path", str(sample_shards), "--output-dir", str(tmp_path / "run")]
    args[args.index("--batch-size") + 1] = "1"
    with pytest.raises(SystemExit) as stop:
        train(args)
    assert stop.value.code == 2
    assert capsys.readouterr().err == BATCH_OF_ONE


@pytest.mark.parametrize("model, batch, refused", [
    ("resnet18", 1, True),
    ("resnet18", 2, False),
    ("mobilenet_v3_small", 1, True),
    ("vgg11", 1, False),       # no BatchNorm: a batch of one trains
    ("vgg11_bn", 1, True),
    ("vit_b_16", 1, False),    # LayerNorm normalises each image alone
])
def test_which_batches_of_one_are_refused(model, batch, refused):
    from types import SimpleNamespace

    from common.errors import UsageError
    from trainer.data import _check_batch_norm

    config = SimpleNamespace(model=model, batch_size=batch)
    if refused:
        with pytest.raises(UsageError, match=f"cannot train --model {model}: .* is 2$"):
            _check_batch_norm(config)
    else:
        _check_batch_norm(config)


# --- prep.verify on a directory that is no prep output ---------------------------------------------------------------

def nothing(place):
    pass


def only_the_folder_layout(place):
    (place / "train").mkdir()
    (place / "train_list.txt").write_text("")


def an_unfinished_run(place):
    (place / ".prep").mkdir()
    (place / "train-000000.tar").write_bytes(b"")


# (what the directory holds, exit status, the line)
NOT_A_DATASET = [
    (nothing, 2, "verify: {dir} is not a dataset: no manifest.json; verify checks the --out of python -m "
                 "prep.imagenet"),
    (only_the_folder_layout, 2, "verify: {dir} holds the folder layout's file lists but no manifest.json; verify "
                                "checks the --out of python -m prep.imagenet"),
    (an_unfinished_run, 1, "verify: {dir}: no manifest.json: its prep run never finished; run the same python -m "
                           "prep.imagenet command again to finish it"),
]


@pytest.mark.parametrize("holds, status, line", NOT_A_DATASET, ids=[row[0].__name__ for row in NOT_A_DATASET])
def test_verify_of_a_directory_that_is_no_dataset(holds, status, line, tmp_path, run_module):
    place = tmp_path / "place"
    place.mkdir()
    holds(place)
    done = run_module("prep.verify", place)
    assert done.returncode == status
    assert done.stderr == line.format(dir=place) + "\n" and done.stdout == ""


def test_a_missing_sample_is_damaged_data():
    from common.errors import DataError

    assert issubclass(MissingSample, DataError) and MissingSample.exit_status == 1


def test_a_manifest_at_a_url_gets_the_same_checks(sample_shards, http_store, tmp_path):
    data = http_store.root / f"edited-{tmp_path.name}"
    data.mkdir()
    for name in (MANIFEST, "train-000000.tar", "train-000000.idx"):
        shutil.copy(sample_shards / name, data)
    edit_manifest(data, first_train_shard("name", "../other/train-000000.tar"))
    url = f"{http_store.url}/{data.name}"
    with pytest.raises(BadManifest) as refused:
        tiny_loader(url, "cpu", cache_limit=10**9, cache_dir=tmp_path / "cache")
    assert str(refused.value) == (f"{url}/{MANIFEST}: refused the train shard name '../other/train-000000.tar': a "
                                  f"path traversal, outside the dataset{REFUSE}")


def raw_archives(sample_src, tmp_path):
    return sample_src


def an_archive_file(sample_src, tmp_path):
    return sample_src / "ILSVRC2012_img_train.tar"


def an_extracted_tree(sample_src, tmp_path):
    (tmp_path / "tree" / "train" / "n01440764").mkdir(parents=True)
    return tmp_path / "tree"


# (what --data-path is given, the line after "trainer: "): what prep reads is named, with the command that reads it
WHAT_PREP_READS = [
    (raw_archives, "--data-path {path} holds ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar and "
                   "ILSVRC2012_devkit_t12.tar.gz (.tar or .tar.gz each), what prep reads, not prepared data: "
                   "`python -m prep.imagenet --src {path} --out shards/`, then --data-path shards/"),
    (an_archive_file, "--data-path {path} is a file; the trainer reads prepared data: give the folder holding the "
                      "ILSVRC2012 archives to `python -m prep.imagenet --src {path.parent} --out shards/`, then "
                      "--data-path shards/"),
    (an_extracted_tree, "--data-path {path} holds an extracted tree train/<wnid>/*.JPEG + val/, what prep reads, "
                        "not prepared data: `python -m prep.imagenet --src {path} --out shards/`, then --data-path "
                        "shards/"),
]


@pytest.mark.parametrize("given, line", WHAT_PREP_READS, ids=[row[0].__name__ for row in WHAT_PREP_READS])
def test_what_prep_reads_given_as_data_path_is_named_with_the_prep_command(given, line, sample_src, tmp_path, capsys):
    path = given(sample_src, tmp_path)
    with pytest.raises(SystemExit) as stop:
        train([*TINY, "--data-path", str(path), "--output-dir", str(tmp_path / "run")])
    assert stop.value.code == 2
    assert capsys.readouterr().err == "trainer: " + line.format(path=path) + "\n"
    assert not (tmp_path / "run").exists()
