"The `unet-fastai` command end to end: train, kill, resume, predict, export, and bad input."
import csv, json, os, signal, subprocess, sys, time
from pathlib import Path
import numpy as np
import pytest
from PIL import Image
from unet_fastai.segmentation.synth import make_synth_camvid

CLI = [sys.executable, "-c", "import sys; from unet_fastai.cli import main; sys.exit(main())"]


def run(*args, timeout=600):
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_synth_camvid(tmp_path_factory.mktemp("d")/"camvid", n_train=8, n_valid=4)


def _epochs(run_dir):
    with open(run_dir/"metrics.csv") as f: return [r["epoch"] for r in csv.DictReader(f)]


def test_kill_mid_epoch_then_resume(data, tmp_path):
    out = tmp_path/"run"
    args = ["train", "--data", data, "--out", out, "--arch", "resnet18", "--epochs", "3", "--bs", "2", "--no-pretrained",
            "--no-progress"]
    p = subprocess.Popen(CLI + [str(a) for a in args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         start_new_session=True)
    deadline = time.time() + 600
    try:
        while time.time() < deadline:                       # wait for the first checkpoint, then into epoch 2
            st = out/"state.json"
            if st.exists() and json.loads(st.read_text())["epochs_done"] >= 1: break
            assert p.poll() is None, p.stdout.read()
            time.sleep(0.2)
        time.sleep(1.0)
        os.killpg(p.pid, signal.SIGKILL)                    # killed mid-epoch: no clean shutdown
        p.wait(timeout=60)
    finally:
        if p.poll() is None: os.killpg(p.pid, signal.SIGKILL)
    done = json.loads((out/"state.json").read_text())["epochs_done"]
    assert 1 <= done < 3
    r = run("train", "--data", data, "--out", out, "--resume", "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]
    assert _epochs(out) == ["0", "1", "2"]                  # continues, no duplicated or missing epoch
    assert json.loads((out/"state.json").read_text())["epochs_done"] == 3
    m = json.loads((out/"metrics.json").read_text())
    assert 0 <= m["acc_camvid"] <= 1 and 0 <= m["miou"] <= 1
    assert m["arch"] == "resnet18" and m["epochs"] == 3        # the run's settings, not the CLI's defaults

    # predict and export from the trained model
    imgs = sorted((data/"val").glob("*.png"))[:2]
    r = run("predict", "--model", out/"model", "--out", tmp_path/"pred", *imgs, "--overlays")
    assert r.returncode == 0, r.stderr[-3000:]
    lab = Image.open(tmp_path/"pred"/imgs[0].name)
    assert lab.mode == "P" and lab.size == (128, 96) and np.array(lab).max() < 12
    assert (tmp_path/"pred"/f"{imgs[0].stem}_overlay.png").exists()
    r = run("predict", "--model", out/"model", "--out", data/"val", *imgs)   # would overwrite the inputs
    assert r.returncode == 1 and "refusing to overwrite" in r.stderr
    r = run("export", "--model", out/"model", "--format", "onnx")
    assert r.returncode == 0, r.stderr[-3000:]
    assert (out/"model"/"model.onnx").stat().st_size > 1_000_000


def test_resume_without_checkpoint(tmp_path, data):
    r = run("train", "--data", data, "--out", tmp_path/"none", "--resume", "--no-pretrained")
    assert r.returncode == 1 and "nothing to resume" in r.stderr


@pytest.mark.parametrize("case", ["out_of_range", "size_mismatch", "corrupt", "empty", "bad_size", "out_is_data"])
def test_bad_input_names_the_file(case, data, tmp_path):
    import shutil
    d = tmp_path/"bad"; shutil.copytree(data, d)
    target, extra = "train_0003.png", []
    if case == "out_of_range": Image.fromarray(np.full((96, 128), 12, np.uint8)).save(d/"trainannot"/target)
    elif case == "size_mismatch": Image.fromarray(np.zeros((90, 128), np.uint8)).save(d/"trainannot"/target)
    elif case == "corrupt": (d/"train"/target).write_bytes((d/"train"/target).read_bytes()[:300])
    elif case == "empty":
        for f in (d/"train").iterdir(): f.unlink()
        target = "empty"
    elif case == "bad_size": extra, target = ["--size", "0", "64"], "--size 0 64"
    out = d if case == "out_is_data" else tmp_path/"out"
    if case == "out_is_data": target = "data folder"
    r = run("train", "--data", d, "--out", out, "--no-pretrained", "--epochs", "1", *extra)
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-2000:]
    assert target in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]


def test_demo_writes_metrics_picture_and_model(tmp_path):
    "`make demo`'s command, small: it trains from scratch offline and writes what the README promises."
    out = tmp_path/"demo"
    r = run("demo", "--out", out, "--data", tmp_path/"synth", "--arch", "resnet18", "--epochs", "1", "--n-train", "8",
            "--n-valid", "4", "--bs", "4", "--no-progress")
    assert r.returncode == 0, r.stderr[-2000:]
    m = json.loads((out/"metrics.json").read_text())
    assert 0 <= m["acc_camvid"] <= 1 and 0 <= m["miou"] <= 1
    assert Image.open(out/"show_results.png").size[0] > 100
    assert {p.name for p in (out/"model").iterdir()} >= {"model.safetensors", "config.json"}
    from unet_fastai.inference.io import load_model
    import torch
    with torch.no_grad(): y = load_model(out/"model")(torch.rand(1, 3, 40, 56))
    assert y.shape == (1, 12, 40, 56)
