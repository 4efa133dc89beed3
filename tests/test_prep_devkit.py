"""meta.mat as MATLAB writes it (compressed or not, doubles, non-leaf synsets) gives the leaf classes."""
import io

import numpy as np
import pytest
import scipy.io

from prep import devkit


def meta_mat(rows, compress):
    fields = ("ILSVRC2012_ID", "WNID", "words", "num_children", "children", "num_train_images")
    table = np.empty((len(rows), 1), dtype=[(name, object) for name in fields])
    for r, row in enumerate(rows):
        table[r, 0] = row
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, {"synsets": table}, do_compression=compress)
    return buffer.getvalue()


ROWS = [(3.0, "n01440764", "tench", 0.0, np.zeros((1, 0)), 1300.0),
        (1.0, "n01443537", "goldfish", 0.0, np.zeros((1, 0)), 1299.0),
        (2.0, "n00001740", "entity", 2.0, np.array([[3.0, 1.0]]), 2599.0)]


@pytest.mark.parametrize("compress", [True, False])
def test_leaves_map_ids_to_wnids(compress):
    expected = ({3: "n01440764", 1: "n01443537"}, {"n01440764": 1300, "n01443537": 1299})
    assert devkit.leaf_synsets(meta_mat(ROWS, compress), "meta.mat") == expected


def test_garbage_meta_mat_is_one_label_error():
    with pytest.raises(devkit.LabelError, match="no usable synsets table"):
        devkit.leaf_synsets(b"MATLAB 5.0 MAT-file" + bytes(200), "devkit.tar.gz")
