"""Relative conditioner density (thesis Eq. 3.2) and blind spots on the thesis's 2-D toy."""

from __future__ import annotations

import numpy as np

from fw_retrieval.rcd import (
    blind_spots,
    frechet_distance,
    relative_conditioner_density,
    row_rcd,
    toy_generators,
)
from fw_retrieval.tree import ConditionalTree


def test_rcd_matches_equation_3_2_by_hand():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((600, 3)).astype(np.float32)
    member = rng.random(600) < 0.3
    tree = ConditionalTree(X, leaf_size=20)
    rcd = relative_conditioner_density(tree, member)
    for node in range(tree.n_nodes):
        rows = set(tree.perm[tree.start[node] : tree.end[node]].tolist())
        inside = sum(1 for i in rows if member[i])
        expect = (inside / len(rows)) * (600 / member.sum())
        assert abs(rcd[node] - expect) < 1e-12
    assert rcd[0] == 1.0  # the root holds everything


def test_rcd_separates_generators_with_equal_frechet_distance():
    """Real N(0, I) against three generators with mean 0 and covariance I (equal Fréchet
    distance, ~0): RCD finds the missing tails of the uniform square and the missing centre of
    the bimodal one, and nothing for a fresh normal sample."""
    n = 4000
    real = np.random.default_rng(1).standard_normal((n, 2))
    gens = toy_generators(n, seed=2)
    fd = {name: frechet_distance(real, g) for name, g in gens.items()}
    assert max(fd.values()) < 0.01  # indistinguishable by the Fréchet distance
    tails = np.abs(real[:, 1]) > 2.2  # the uniform square stops at √3
    centre = np.abs(real[:, 0]) < 0.3  # the bimodal sample's gap
    rcd, spots = {}, {}
    for name, g in gens.items():
        X = np.concatenate([real, g]).astype(np.float32)
        generated = np.r_[np.zeros(n, bool), np.ones(n, bool)]
        tree = ConditionalTree(X, leaf_size=50, seed=0)
        r = row_rcd(tree, generated)[:n]
        rcd[name] = (r[tails].mean(), r[centre].mean())
        spots[name] = blind_spots(tree, generated, threshold=0.6, alpha=0.01, min_size=50)
    assert min(rcd["normal"]) > 0.8 and not spots["normal"]
    assert rcd["uniform"][0] < 0.3 and rcd["uniform"][1] > 0.5
    assert rcd["bimodal"][0] > 0.6 and rcd["bimodal"][1] < 0.3
    # the reported blind spots hold real points where each generator has none
    for name, region in (("uniform", lambda p: np.abs(p).max(1) > 1.5), ("bimodal", None)):
        rows = np.concatenate([s.others for s in spots[name]])
        assert all(s.rcd < 0.6 and s.p_value < 0.01 for s in spots[name])
        if region is not None:
            assert region(real[rows]).mean() > 0.6
    rows = np.concatenate([s.others for s in spots["bimodal"]])
    assert (np.abs(real[rows, 0]) < 0.6).mean() > 0.6


def test_fw_blindspots_reports_the_missing_tails(tmp_path, capsys):
    """`fw blindspots` on feature files: the report equals `blind_spots` on the same tree, and
    every reported region is one the uniform generator leaves empty."""
    import json

    from fw.cli import main

    n = 3000
    # a constant third coordinate keeps the 2-D geometry through the cosine normalisation
    real = np.c_[np.random.default_rng(1).standard_normal((n, 2)), np.full(n, 20.0)]
    fake = np.c_[toy_generators(n, seed=2)["uniform"], np.full(n, 20.0)]
    np.savez(tmp_path / "real.npz", features=real)
    np.savez(tmp_path / "fake.npz", features=fake)
    out = tmp_path / "out"
    argv = ["blindspots", "--real", str(tmp_path / "real.npz"), "--generated"]
    argv += [str(tmp_path / "fake.npz"), "--out", str(out), "--min-size", "40"]
    assert main(argv) == 0
    report = json.loads((out / "blind_spots.json").read_text())
    X = np.concatenate([real, fake]).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    generated = np.r_[np.zeros(n, bool), np.ones(n, bool)]
    expect = blind_spots(ConditionalTree(X, leaf_size=50, seed=0), generated, min_size=40)
    assert [s["node"] for s in report["blind_spots"]] == [s.node for s in expect]
    assert expect and all(s["rcd"] < 0.6 and s["p_value"] < 0.01 for s in report["blind_spots"])
    rows = np.concatenate([s["real_rows"] for s in report["blind_spots"]])
    assert (np.abs(real[rows, :2]).max(1) > 1.5).mean() > 0.6  # the square has no tails
    assert (out / "blind_spot_1.png").is_file()
    assert "blind spots" in capsys.readouterr().out
