"""Issue 20: runs are safe to load, share and interrupt; every failure is a clear exit 2.

One test per case of the issue (docs/reliability.md has the table), then a property test that
interrupts, corrupts and resumes runs at random and checks the result against an uninterrupted
run, weight for weight.
"""

from __future__ import annotations

import ast
import json
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from fw.cli import main
from fw.errors import DataError, FwError
from fw.files import LOCK, load, locked
from fw.registry import set_registry
from fw_common.learner import IConLearner

ROOT = Path(__file__).resolve().parents[1]
TSNE = str(ROOT / "recipes" / "tsne_digits.yaml")
FAST = ["trainer.max_steps=3", "trainer.progress=false", "data.limit=120"]
CKPT = Path("checkpoints") / "last.ckpt"


class Evil:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def cli(registry):
    """``fw`` in-process against the test registry: (exit code, stderr)."""
    set_registry(registry)

    def call(capsys, *args: str) -> tuple[int, str]:
        code = main([str(a) for a in args])
        err = capsys.readouterr().err
        assert "Traceback" not in err
        return code, err.replace("\n", " ")

    yield call
    set_registry(None)


@pytest.fixture
def toy_run(cli, capsys, toy_recipe, tmp_path) -> Path:
    """A finished run of the toy recipe."""
    out = tmp_path / "run"
    assert cli(capsys, "run", toy_recipe, "--out", out)[0] == 0
    return out


def _poison(path: Path, marker: Path) -> None:
    torch.save({"learner": {}, "payload": Evil(marker)}, path)


# ---- 1. no pickle from files -------------------------------------------------------------


def test_no_file_loader_can_run_code():
    """Every torch.load is fw.files.load; no np.load allows pickles; no pickle.load of files."""
    offenders = []
    for path in [*ROOT.glob("framework/**/*.py"), *ROOT.glob("plugins/**/*.py")]:
        text = path.read_text(encoding="utf-8")
        assert "weights_only=False" not in text, path
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            owner = getattr(node.func.value, "id", "")
            name = f"{owner}.{node.func.attr}"
            kwargs = {k.arg: getattr(k.value, "value", None) for k in node.keywords}
            if name == "torch.load" and path.name != "files.py":
                offenders.append(f"{path}:{node.lineno} {name}")
            if name == "np.load" and kwargs.get("allow_pickle") is True:
                offenders.append(f"{path}:{node.lineno} np.load(allow_pickle=True)")
            if name == "pickle.load":  # pickle.loads of fw's own pipes (speech.py) is no file
                offenders.append(f"{path}:{node.lineno} {name}")
    assert offenders == []


def _chained_spec(cache: Path) -> dict:
    return {
        "name": "chained",
        "recipe": TSNE,
        "key": "z",
        "overrides": ["trainer.max_steps=3", "trainer.progress=false", "data.limit=60"],
        "cache_dir": str(cache),
    }


def test_malicious_files_run_no_code_and_exit_2_naming_the_file(
    cli, capsys, toy_run, toy_recipe, registry, tmp_path, monkeypatch
):
    """Loaders: load_run, fw localize, --resume, a chained stage's checkpoint and output,
    backbone weights, FeatUp upsampler weights, STEGO's knn_file (fw.files.load), the arrays
    dataset (.npy/.npz), CIFAR-10 batches (md5-checked before torchvision unpickles them)."""
    from fw.recipe import build
    from fw.runs import load_run
    from fw_backbones.weights import read_checkpoint
    from fw_data.cifar10 import cifar10
    from fw_featup.upsamplers import read_upsampler_file

    marker = tmp_path / "PWNED"
    ckpt = toy_run / CKPT
    _poison(ckpt, marker)
    with pytest.raises(DataError, match="objects other than tensors") as info:
        load_run(toy_run, registry)
    assert str(ckpt) in str(info.value)
    monkeypatch.setattr(IConLearner, "localize", lambda *a: None, raising=False)
    code, err = cli(capsys, "localize", toy_run, "--image", "x.png", "--audio", "x.wav")
    assert code == 2 and str(ckpt) in err
    (toy_run / "metrics.json").unlink()
    code, err = cli(capsys, "run", toy_recipe, "--out", toy_run, "--resume")
    assert code == 2 and str(ckpt) in err
    for path, read in [
        (tmp_path / "w.pt", read_checkpoint),
        (tmp_path / "upsampler.pt", read_upsampler_file),
        (tmp_path / "knn.pt", load),
    ]:
        _poison(path, marker)
        with pytest.raises(DataError, match=str(path)):
            read(path)
    np.save(tmp_path / "x.npy", np.array([Evil(marker)], dtype=object), allow_pickle=True)
    arrays = ["data.name=arrays", f"data.path={tmp_path / 'x.npy'}", "--out", tmp_path / "a"]
    code, err = cli(capsys, "run", TSNE, *arrays)
    assert code == 2 and "x.npy" in err
    batches = tmp_path / "cifar" / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    for name in ["batches.meta", "test_batch", *(f"data_batch_{i}" for i in range(1, 6))]:
        (batches / name).write_bytes(pickle.dumps(Evil(marker)))
    with pytest.raises(DataError, match="cifar"):
        cifar10(str(tmp_path / "cifar"))
    # a chained stage: its checkpoint, then its cached output
    spec = _chained_spec(tmp_path / "cache")
    build("dataset", spec, registry)
    (stage,) = (tmp_path / "cache").glob("tsne_digits-*")
    (stage / "output-z.pt").unlink()
    _poison(stage / CKPT, marker)
    with pytest.raises(DataError, match=str(stage / CKPT)):
        build("dataset", spec, registry)
    _poison(stage / "output-z.pt", marker)
    with pytest.raises(DataError, match=str(stage / "output-z.pt")):
        build("dataset", spec, registry)
    assert not marker.exists()


def test_corrupt_stage_output_is_rebuilt_and_a_read_only_cache_is_named(registry, tmp_path, capsys):
    from fw.recipe import build

    spec = _chained_spec(tmp_path / "cache")
    first = build("dataset", spec, registry).tensors["z"]
    (out,) = (tmp_path / "cache").glob("tsne_digits-*/output-z.pt")
    out.write_bytes(out.read_bytes()[:100])
    assert torch.equal(build("dataset", spec, registry).tensors["z"], first)
    assert str(out) in capsys.readouterr().err and load(out).shape == first.shape
    blocked = tmp_path / "a_file"  # a cache that cannot be written (even by root)
    blocked.write_text("")
    with pytest.raises(DataError, match="cache_dir") as info:
        build("dataset", _chained_spec(blocked / "cache"), registry)
    assert str(blocked / "cache") in str(info.value)


# ---- 2. one writer per run directory ---------------------------------------------------


def test_a_second_writer_exits_2_naming_the_holders_pid(cli, capsys, toy_recipe, tmp_path):
    out = tmp_path / "run"
    with locked(out):
        code, err = cli(capsys, "run", toy_recipe, "--out", out)
    assert code == 2 and f"PID {os.getpid()}" in err and str(out) in err
    assert not out.exists()  # the holder made it and left it empty
    assert cli(capsys, "run", toy_recipe, "--out", out)[0] == 0


def _installed_recipe(path: Path, steps: int = 40) -> Path:
    """A recipe of installed components only, for `fw` subprocesses."""
    path.write_text(
        "seed: 0\ndata: {name: digits, limit: 200}\n"
        "learner:\n  name: icon\n  p: {name: gaussian, perplexity: 10}\n"
        "  q: {name: student_t}\n  mapper: {name: mlp, dim: 2, hidden: [16]}\n"
        "  batch_size: 50\n  optimizer: {name: adam, lr: 0.01}\n"
        f"trainer: {{max_steps: {steps}, log_every: 5, progress: false, threads: 1}}\n"
    )
    return path


def _fw(*args: object, **kw) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "fw.cli", *map(str, args)]
    return subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True, **kw)


def test_two_concurrent_runs_into_one_directory(tmp_path):
    recipe = _installed_recipe(tmp_path / "r.yaml", steps=100)
    out = tmp_path / "run"
    procs = [_fw("run", recipe, "--out", out, f"seed={i}") for i in range(2)]
    results = [(p.communicate(timeout=300)[1], p.returncode)[::-1] for p in procs]
    assert sorted(code for code, _ in results) == [0, 2], results
    (winner,) = [i for i, (code, _) in enumerate(results) if code == 0]
    loser_err = results[1 - winner][1]
    assert "Traceback" not in loser_err and str(out) in loser_err.replace("\n", " ")
    saved = (out / "recipe.yaml").read_text()
    assert f"seed: {winner}" in saved
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if r["split"] == "train"]
    assert steps == sorted(steps) and len(steps) == len(set(steps))
    assert "final_loss" in json.loads((out / "metrics.json").read_text())


# ---- 3. checkpoints and interrupts -----------------------------------------------------


def _kill_at(monkeypatch, at_step: int, how: str) -> None:
    """At ``at_step`` send SIGINT/SIGTERM, or die at once as SIGKILL would (`_Killed`)."""
    original = IConLearner.training_step

    def step(self, batch, step):
        if step == at_step:
            if how == "kill":
                raise _Killed
            signal.raise_signal(getattr(signal, how))
        return original(self, batch, step)

    monkeypatch.setattr(IConLearner, "training_step", step)


class _Killed(BaseException):
    """Stands for SIGKILL in-process: nothing of fw's runs after it."""


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load(run / CKPT)["learner"]


def _finished(run: Path) -> dict:
    metrics = json.loads((run / "metrics.json").read_text())
    metrics.pop("train_seconds")
    return metrics


def test_sigterm_saves_and_resume_is_bit_identical(cli, capsys, toy_run, toy_recipe, monkeypatch):
    at = random.Random(20).randrange(1, 19)  # a step drawn once; the property test draws more
    cut = toy_run.parent / "cut"
    _kill_at(monkeypatch, at, "SIGTERM")
    code, err = cli(capsys, "run", toy_recipe, "--out", cut)
    assert code == 143 and f"after step {at + 1}" in err and "--resume" in err
    seconds = load(cut / CKPT)["seconds"]
    monkeypatch.undo()
    assert cli(capsys, "run", toy_recipe, "--out", cut, "--resume")[0] == 0
    full, resumed = _weights(toy_run), _weights(cut)
    assert full.keys() == resumed.keys()
    assert all(torch.equal(full[k], resumed[k]) for k in full)
    assert _finished(cut) == _finished(toy_run)
    assert json.loads((cut / "metrics.json").read_text())["train_seconds"] >= seconds


def test_resume_after_a_kill_before_any_checkpoint_says_what_to_do(
    cli, capsys, toy_recipe, tmp_path, monkeypatch
):
    out = tmp_path / "run"
    _kill_at(monkeypatch, 5, "kill")
    with pytest.raises(_Killed):
        main(["run", str(toy_recipe), "--out", str(out)])
    monkeypatch.undo()
    code, err = cli(capsys, "run", toy_recipe, "--out", out, "--resume")
    assert code == 2 and "before its first checkpoint" in err and "checkpoint_every" in err


def test_resume_of_a_finished_run_changes_nothing(cli, capsys, toy_run, toy_recipe):
    before = {p.name: p.read_bytes() for p in toy_run.iterdir() if p.is_file()}
    code, err = cli(capsys, "run", toy_recipe, "--out", toy_run, "--resume")
    assert code == 2 and "finished run" in err and str(toy_run) in err
    assert {p.name: p.read_bytes() for p in toy_run.iterdir() if p.is_file()} == before


def test_a_kill_during_a_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    from fw.files import save

    path = tmp_path / "last.ckpt"
    save({"step": 1}, path)

    def dies(obj, f):  # noqa: ARG001
        Path(f).write_bytes(b"half a checkpoint")
        raise _Killed

    monkeypatch.setattr(torch, "save", dies)
    with pytest.raises(_Killed):
        save({"step": 2}, path)
    assert load(path) == {"step": 1} and os.listdir(tmp_path) == ["last.ckpt"]


# ---- 4. every failure is exit 2 naming the key or path --------------------------------


@pytest.mark.parametrize(
    ("override", "names"),
    [
        ("trainer.precision=bogus", ["trainer.precision", "bf16-mixed"]),
        ("trainer.strategy=bogus", ["trainer.strategy", "ddp"]),
        ("trainer.devices=0", ["trainer.devices", ">= 1"]),
        ("trainer.epochs=0", ["trainer.epochs"]),
        ("trainer.accelerator=tpux", ["trainer.accelerator", "cpu"]),
        pytest.param(
            "trainer.accelerator=cuda",
            ["no CUDA device", "trainer.accelerator=cpu"],
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA"),
        ),
    ],
)
def test_trainer_settings_are_checked_before_fabric(cli, capsys, tmp_path, override, names):
    out = tmp_path / "r"
    code, err = cli(capsys, "run", TSNE, *FAST, override, "--out", out)
    assert code == 2 and all(n in err for n in names), err
    assert not out.exists()


def test_a_refused_run_leaves_no_default_runs_directory(cli, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, err = cli(capsys, "run", TSNE, *FAST, "trainer.devices=0")
    assert code == 2 and "trainer.devices" in err
    assert not (tmp_path / "runs").exists()


def test_shipped_gpu_recipe_on_a_cpu_machine(cli, capsys, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    recipe = ROOT / "recipes" / "denseav_places.yaml"
    code, err = cli(capsys, "run", recipe, f"data.root={tmp_path}", "--out", tmp_path / "r")
    assert code == 2 and "trainer.accelerator=cpu" in err


def test_zero_byte_checkpoint_and_out_naming_a_file(cli, capsys, toy_run, toy_recipe, tmp_path):
    (toy_run / "metrics.json").unlink()
    (toy_run / CKPT).write_bytes(b"")
    code, err = cli(capsys, "run", toy_recipe, "--out", toy_run, "--resume")
    assert code == 2 and str(toy_run / CKPT) in err and "empty or truncated" in err
    afile = tmp_path / "afile"
    afile.write_text("mine")
    code, err = cli(capsys, "run", toy_recipe, "--out", afile)
    assert code == 2 and f"{afile} is a file" in err and afile.read_text() == "mine"


@pytest.mark.parametrize(
    ("make", "names"),
    [
        (lambda d: d, ["is a directory", "data.path"]),
        (
            lambda d: np.savez(d / "s.npz", x=np.ones((6, 2)), label=np.array(list("ababab"))),
            ["data.label", "integers"],
        ),
        (
            lambda d: (d / "t.csv").write_text("a,b,label\n1,x,0\n2,y,1\n"),
            ["column 'b'", "text"],
        ),
    ],
)
def test_user_data_messages_name_the_key(cli, capsys, tmp_path, make, names):
    make(tmp_path)
    path = next((p for p in tmp_path.iterdir() if p.suffix in (".npz", ".csv")), tmp_path)
    code, err = cli(
        capsys, "run", TSNE, "data.name=arrays", f"data.path={path}", "--out", tmp_path / "r"
    )
    assert code == 2 and all(n in err for n in names), err


def test_the_error_gets_its_own_line_after_the_progress_bar(
    cli, capsys, toy_recipe, tmp_path, monkeypatch
):
    original = IConLearner.training_step

    def nan_at_3(self, batch, step):
        out = original(self, batch, step)
        return {**out, "loss": out["loss"] * float("nan")} if step == 3 else out

    monkeypatch.setattr(IConLearner, "training_step", nan_at_3)
    code = main(["run", str(toy_recipe), "trainer.progress=true", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and "\nfw: error: the loss became nan" in err


def test_summary_lists_only_the_files_the_run_wrote(cli, capsys, toy_recipe, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("the user's own file")
    assert main(["run", str(toy_recipe), "--out", str(out)]) == 0
    line = capsys.readouterr().out
    assert "metrics.json" in line and "notes.txt" not in line and LOCK not in line


def _image(path: Path, side: int = 64) -> Path:
    from PIL import Image

    Image.fromarray(np.full((side, side, 3), 90, np.uint8)).save(path)
    return path


def test_decompression_bomb_is_a_data_error(tmp_path, monkeypatch, capsys):
    from PIL import Image

    from fw.lib.images import read_image

    image = _image(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 64 * 64 // 3)  # 3x over: PIL's error
    with pytest.raises(DataError, match="too large"):
        read_image(image)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 64 * 64 - 1)  # just over: PIL's warning
    with pytest.raises(DataError, match="too large"):
        read_image(image)
    recipe = ROOT / "recipes" / "explain" / "ksam.yaml"
    code = main(["explain", str(recipe), "--query", str(image), "--match", str(image)])
    assert code == 2 and "big.png" in capsys.readouterr().err


def test_explain_keeps_an_existing_out_and_leaves_nothing_when_it_fails(
    tmp_path, monkeypatch, capsys
):
    import fw_ksam.protocol

    recipe = ROOT / "recipes" / "explain" / "ksam.yaml"
    image = _image(tmp_path / "q.png")
    args = ["explain", str(recipe), "--query", str(image), "--match", str(image), "--out"]
    done = tmp_path / "done"
    done.mkdir()
    (done / "metrics.json").write_text("{}")
    assert main([*args, str(done)]) == 2 and "--overwrite" in capsys.readouterr().err
    assert (done / "metrics.json").read_text() == "{}"

    def fails(*a, **k):
        raise FwError("the explainer failed")

    monkeypatch.setattr(fw_ksam.protocol, "explain_images", fails)
    assert main([*args, str(tmp_path / "new")]) == 2
    assert not (tmp_path / "new").exists()


def _wav(path: Path, samples: int) -> Path:
    with wave.open(str(path), "wb") as fh:
        fh.setnchannels(1)
        fh.setsampwidth(2)
        fh.setframerate(22050)
        fh.writeframes((np.random.default_rng(0).standard_normal(samples) * 3000).astype(np.int16))
    return path


def test_localize_on_a_run_that_cannot_localize(cli, capsys, toy_run, tmp_path):
    image, audio = _image(tmp_path / "i.png"), _wav(tmp_path / "a.wav", 22050)
    code, err = cli(capsys, "localize", toy_run, "--image", image, "--audio", audio)
    assert code == 2 and "cannot localize" in err and "recipe.yaml" in err


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("flite") is None or not Path("/usr/share/datasets/fashion-mnist").is_dir(),
    reason="needs apt packages espeak-ng, flite and dataset-fashion-mnist",
)
def test_localize_short_clips_and_bombs_on_a_denseav_run(cli, capsys, tmp_path, monkeypatch):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(
        "seed: 0\ndata: {name: spoken_objects, split: test, limit: 8, progress: false, "
        "workers: 1}\nlearner:\n  name: denseav\n  image: {name: mobilenet_v2_tap, tap: s16d, "
        "weights: null}\n  audio: {name: log_mel_encoder, dim: 16, width: 16}\n  dim: 16\n"
        "  audio_aligner: none\n  batch_size: 4\n  steps: 2\n  prompts: false\n  pictures: 1\n"
        "trainer: {max_steps: 2, progress: false}\n"
    )
    run = tmp_path / "run"
    assert cli(capsys, "run", recipe, "--out", run)[0] == 0
    image = _image(tmp_path / "i.png")
    for samples in (0, 100):
        audio = _wav(tmp_path / f"a{samples}.wav", samples)
        code, err = cli(capsys, "localize", run, "--image", image, "--audio", audio)
        assert code == 2 and f"a{samples}.wav" in err and "1 s" in err
    from PIL import Image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    audio = _wav(tmp_path / "ok.wav", 22050)
    code, err = cli(capsys, "localize", run, "--image", image, "--audio", audio)
    assert code == 2 and "i.png" in err and "too large" in err


def test_debug_keeps_exit_2(cli, capsys, tmp_path):
    assert main(["run", TSNE, *FAST, "trainer.devices=0", "--out", str(tmp_path), "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "trainer.devices" in err


# ---- 5. property: interrupt, corrupt, resume at random; the result never changes ---------


def _property_case(rng: random.Random, cli, capsys, toy_recipe, base: Path, monkeypatch):
    """One random history of a run; it must end equal to the uninterrupted run."""
    every = rng.choice([0, 3, 7])
    args = ["run", toy_recipe, f"trainer.checkpoint_every={every}", "--out", base / "run"]
    ckpt, resume = base / "run" / CKPT, False
    for attempt in range(rng.randint(1, 3) + 1):
        last = attempt > 0 and rng.random() < 0.4
        if not last:
            _kill_at(monkeypatch, rng.randrange(0, 20), rng.choice(["SIGINT", "SIGTERM", "kill"]))
        try:
            code, err = cli(capsys, *args, "--resume" if resume else "--overwrite")
        except _Killed:
            code, err = None, ""
        monkeypatch.undo()
        if code == 0:
            return
        assert code in (None, 130, 143), err
        if ckpt.exists() and rng.random() < 0.3:  # a disk error: the checkpoint is cut short
            ckpt.write_bytes(ckpt.read_bytes()[: rng.randrange(0, 200)])
            code, err = cli(capsys, *args, "--resume")
            assert code == 2 and str(ckpt) in err
        resume = ckpt.exists() and _loads(ckpt)
    code, err = cli(capsys, *args, "--resume" if resume else "--overwrite")
    assert code == 0, err


def _loads(path: Path) -> bool:
    try:
        load(path)
    except DataError:
        return False
    return True


def _check_property(cases: int, seed: int, cli, capsys, toy_run, toy_recipe, monkeypatch):
    rng = random.Random(seed)
    expected = {p.relative_to(toy_run) for p in toy_run.rglob("*")}
    for case in range(cases):
        base = toy_run.parent / f"case{case}"
        _property_case(rng, cli, capsys, toy_recipe, base, monkeypatch)
        run = base / "run"
        assert {p.relative_to(run) for p in run.rglob("*")} == expected
        assert _finished(run) == _finished(toy_run)
        full, got = _weights(toy_run), _weights(run)
        assert all(torch.equal(full[k], got[k]) for k in full)


def test_random_interrupts_corruptions_and_resumes(cli, capsys, toy_run, toy_recipe, monkeypatch):
    _check_property(3, 20, cli, capsys, toy_run, toy_recipe, monkeypatch)


@pytest.mark.slow
def test_random_interrupts_corruptions_and_resumes_many(
    cli, capsys, toy_run, toy_recipe, monkeypatch
):
    _check_property(25, 2020, cli, capsys, toy_run, toy_recipe, monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_real_signals_to_a_fw_process(tmp_path, sig):
    """A real ``fw run`` process signalled mid-run, then resumed: the same weights."""
    import time

    recipe = _installed_recipe(tmp_path / "r.yaml", steps=1000)
    every = ["trainer.checkpoint_every=20"]
    full = tmp_path / "full"
    first = _fw("run", recipe, *every, "--out", full)
    assert first.communicate(timeout=600) and first.returncode == 0
    cut = tmp_path / "cut"
    proc = _fw("run", recipe, *every, "--out", cut)
    while not (cut / CKPT).exists() and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(sig)
    proc.communicate(timeout=600)
    assert proc.returncode in (128 + signal.SIGTERM, -signal.SIGKILL)
    resumed = _fw("run", recipe, *every, "--out", cut, "--resume")
    err = resumed.communicate(timeout=600)[1]
    assert resumed.returncode == 0, err
    a, b = _weights(full), _weights(cut)
    assert all(torch.equal(a[k], b[k]) for k in a)
