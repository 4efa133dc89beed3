"""bench train's verdict names the bottleneck from measured figures, and its plot is written headless."""
from bench import plot
from bench.train import verdict


def row(fps, synthetic_fps, wait):
    return {"train_fps_mean": fps, "ratio_to_synthetic": fps / synthetic_fps, "data_wait_share": wait}


def test_a_loader_close_to_synthetic_is_compute_bound():
    loaders = {"synthetic": row(100, 100, 0.0), "cpu": row(80, 100, 0.2), "dali": row(97, 100, 0.01)}
    assert verdict(loaders).startswith("compute-bound: dali reaches 97% ")


def test_a_slow_loader_that_keeps_the_step_waiting_is_data_bound():
    assert verdict({"synthetic": row(100, 100, 0.0), "cpu": row(40, 100, 0.55)}).startswith(
        "data-bound: cpu reaches 40% of the synthetic loader's throughput and waits for data 55% ")


def test_a_slow_loader_without_waiting_is_contending_for_cores():
    assert verdict({"synthetic": row(100, 100, 0.0), "cpu": row(70, 100, 0.02)}).startswith(
        "data-bound (shared cores): cpu reaches 70%")


def test_train_plot_is_a_png(tmp_path):
    result = {"model": "resnet18", "crop_size": 64, "batch_size": 32, "amp": "off", "device": "cpu",
              "bare_loop": {"images_per_s": 60.0},
              "loaders": {"synthetic": {"train_fps_mean": 58.0, "windows": [[6, 57.0], [9, 59.0]]},
                          "cpu": {"train_fps_mean": 50.0, "windows": [[6, 49.0], [9, 51.0]]}}}
    loaders = {"crop_size": 224, "loaders": {"cpu": {"images_per_s": 650.0}, "synthetic": {"images_per_s": 1e7}}}
    path = plot.plot_train(result, tmp_path / "train.png", loaders)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
