"""Selection on held-out data, and what a policy's own time costs it."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

import einet
from einet.evaluation.simulate import charged, planning_seconds
from einet.formats.profiles import CSProfile, ETRecord
from einet.policies import EveryExit, FixedPlan

LIGHT = Path(__file__).resolve().parents[1] / "benchmarks" / "fixtures" / "vgg16_fine_w025_cpu_light"


class SlowToObserve(EveryExit):
    """Runs every branch and takes a millisecond to take in each one."""

    name = "slow"

    def observe(self, block: int, confidence: float, elapsed: float) -> bool:
        time.sleep(1e-3)
        return False


def test_planning_seconds_is_the_policys_own_time_per_branch():
    cs = CSProfile(np.full((5, 3), 0.5, dtype=np.float32), np.zeros((5, 3), dtype=np.int64),
                   np.ones((5, 3), dtype=bool), np.zeros(5, dtype=np.int64))
    et = einet.ETProfile([1.0, 1.0, 1.0], [0.5, 0.5, 0.5])
    assert 1e-3 <= planning_seconds(SlowToObserve(), cs, et) < 0.5
    assert planning_seconds(FixedPlan(np.ones(3, dtype=bool), "all"), cs, et) < 0.5e-3  # a lookup, not a sleep
    profile = charged(et, 0.25)
    assert np.allclose(profile.branch, 0.75) and np.allclose(profile.conv, et.conv)
    for bad in (-1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="seconds_per_branch must be a finite number >= 0"):
            charged(et, bad)
    with pytest.raises(ValueError, match="need at least one sample"):
        planning_seconds(SlowToObserve(), cs, et, samples=0)


def test_selection_charges_einet_for_its_planning():
    """With light exits (~30 us each) EINet's re-planning is not free: charged an absurd second per
    branch, EINet scores far lower on held-out data and is never deployed."""
    pytest.importorskip("torch")
    from einet.evaluation.select import Candidate, select
    from einet.policies import PolicySpec

    et = ETRecord.load(LIGHT / "et.npz").profile
    holdout = CSProfile.load(LIGHT / "cs-holdout.npz").subset(np.arange(1000))
    settings = {"kinds": ("normal",), "rules": ("latest",), "time_zero": (False,), "predictor_epochs": 2,
                "progress": False}
    free, _ = select(et, holdout, planning=0.0, **settings)
    costly, _ = select(et, holdout, planning=1.0, **settings)
    assert not costly.policy.startswith("EINet")
    for kind in ("einet", "einet-paper"):
        name = Candidate(PolicySpec(kind), "latest", time_zero=False).label
        assert costly.validation[name] < free.validation[name] - 0.1
    statistics = Candidate(PolicySpec("statistics"), "latest", time_zero=False).label
    assert costly.validation[statistics] == free.validation[statistics]
    for bad in (-1e-6, float("inf")):
        with pytest.raises(ValueError, match="planning must be a finite number >= 0"):
            select(et, holdout, planning=bad, **settings)


def test_selection_times_the_paper_einet_once_and_records_it(monkeypatch):
    pytest.importorskip("torch")
    from einet.evaluation import simulate
    from einet.evaluation.select import select

    timed = []

    def planning_seconds(policy, *args, **kwargs):
        timed.append(policy.name)
        return 1e-5

    monkeypatch.setattr(simulate, "planning_seconds", planning_seconds)
    et = ETRecord.load(LIGHT / "et.npz").profile
    holdout = CSProfile.load(LIGHT / "cs-holdout.npz").subset(np.arange(600))
    deployment, _ = select(et, holdout, kinds=("uniform", "normal"), rules=("latest",), predictor_epochs=1,
                           progress=False)
    assert timed == ["EINet (paper)"]  # once per call, whatever the candidates and distributions
    assert deployment.planning_seconds == (1e-5 if deployment.policy.startswith("EINet") else 0.0)


JOINT = LIGHT.parent / "vgg16_fine_w025_cpu_joint"


def test_select_network_chooses_under_the_same_exit_times_in_seconds():
    """Two networks on the same held-out images, planned over the same seconds (the first one's full
    inference): the one shipped is the one whose configuration scored highest on held-out data, whichever
    that is (which one wins is a lab outcome, docs/anytime.md, not a property of the selection)."""
    pytest.importorskip("torch")
    from einet.distributions import full_inference_time
    from einet.evaluation.select import select_network

    profiles = {name: (ETRecord.load(folder / "et.npz").profile,
                       CSProfile.load(folder / "cs-holdout.npz").subset(np.arange(1000)))
                for name, folder in (("joint", JOINT), ("light", LIGHT))}
    settings = {"kinds": ("normal",), "rules": ("latest",), "time_zero": (False,), "predictor_epochs": 1,
                "planning": 0.0, "progress": False}
    deployment, _ = select_network(profiles, **settings)
    assert {key.split(" | ")[0] for key in deployment.validation} == {"joint", "light"}
    assert list(deployment.validation.values()) == sorted(deployment.validation.values(), reverse=True)
    assert next(iter(deployment.validation)).startswith(f"{deployment.network} | ")  # the best held-out score ships
    horizon = full_inference_time(profiles["joint"][0])  # the first network's full inference
    assert deployment.scale == pytest.approx(horizon / full_inference_time(profiles[deployment.network][0]))
    alone, _ = select_network({"joint": profiles["joint"]}, horizon=2 * horizon, **settings)
    assert (alone.network, alone.scale) == ("joint", pytest.approx(2.0))
    with pytest.raises(ValueError, match="'other' was profiled on other held-out images"):
        select_network({"joint": profiles["joint"], "other": (profiles["light"][0], CSProfile.load(
            LIGHT / "cs-holdout.npz").subset(np.arange(1, 1001)))}, **settings)
    with pytest.raises(ValueError, match=r"horizon must be a finite number of seconds > 0, got -1\.0"):
        select_network(profiles, horizon=-1.0, **settings)
    with pytest.raises(ValueError, match="need at least one candidate network"):
        select_network({}, **settings)
    with pytest.raises(TypeError, match="takes `horizon` in seconds"):
        select_network(profiles, scale=2.0, **settings)


def test_deployment_files_keep_the_network_and_only_the_current_version_loads(tmp_path):
    import json

    from einet.evaluation.select import Deployment, load_deployment, save_deployment
    from einet.formats.deployment import DEPLOYMENT_VERSION, _record_digest
    from einet.rules import AnswerRule

    deployment = Deployment("static 100%", AnswerRule("latest"), "normal", mask=(True, False), network="light")
    assert load_deployment(save_deployment(tmp_path / "d.json", deployment)) == deployment
    record = json.loads((tmp_path / "d.json").read_text())
    for version in (1, 4, DEPLOYMENT_VERSION + 1):  # no committed file is of an older version
        other = record | {"version": version}
        (tmp_path / "other.json").write_text(json.dumps(other | {"sha256": _record_digest(other)}))
        with pytest.raises(ValueError, match=f"it is deployment version {version}; this einet reads version "
                                             f"{DEPLOYMENT_VERSION}"):
            load_deployment(tmp_path / "other.json")


def test_the_bundle_deploys_the_policy_the_selection_scored_for_every_deployable_kind(tmp_path):
    """One policy factory: for each deployable kind, the policy a bundle builds from its stored deployment
    makes the same decisions on a CS-profile as the one selection scores (einet.evaluation.select.deployed_policy)."""
    pytest.importorskip("torch")
    from einet.bundle import exit_distribution, read_bundle
    from einet.distributions import full_inference_time
    from einet.evaluation.select import deployed_policy, planned_profile, select
    from einet.evaluation.simulate import evaluate
    from einet.formats.manifest import write_bundle
    from einet.formats.split import HeldOutSplit
    from einet.policies import DEPLOYABLE_KINDS
    from einet.variants import Variant

    et = ETRecord.load(LIGHT / "et.npz")
    holdout = CSProfile.load(LIGHT / "cs-holdout.npz")
    holdout = holdout.subset(np.sort(np.random.default_rng(0).choice(holdout.num_samples, 400, replace=False)))
    horizon_ms = 1e3 * full_inference_time(et.profile)
    devices, chosen = [], {}
    for threads, kind in enumerate(DEPLOYABLE_KINDS, 1):  # one device entry per kind
        deployment, model = select(et.profile, holdout, kinds=("normal",), rules=("latest",), time_zero=(True,),
                                   predictor_epochs=1, planning=2e-5, policies=[kind], progress=False)
        assert deployment.kind == kind
        devices.append(({"kind": "cpu", "name": "test", "threads": threads}, et, deployment, model))
        chosen[threads] = (deployment, model.to_native())
    (tmp_path / "network.pt").write_bytes(b"not read here")
    classes = 10  # CIFAR-10
    write_bundle(tmp_path / "bundle", name="kinds", checkpoint=tmp_path / "network.pt", variant=Variant(),
                 num_exits=et.profile.num_blocks, input_spec={"shape": [3, 32, 32], "mean": [0.0] * 3,
                                                              "std": [1.0] * 3,
                                                              "classes": [f"class {c}" for c in range(classes)]},
                 split=HeldOutSplit(0.1, 0, "0" * 64), holdout=holdout, test=None, test_data=None,
                 timing_images=np.zeros((1, 32, 32, 3), np.uint8), exit_times={"kind": "normal",
                                                                                "horizon_ms": horizon_ms},
                 runtime={"adapt": True, "threads": 1, "adaptation": {}},
                 select_options={"score_under": ["normal"], "rules": ["latest"], "time_zero": [True],
                                 "signals": ["confidence"], "policies": None, "predictor_epochs": 1, "seed": 0,
                                 "planning_us": 20.0},
                 devices=devices, provenance={}, log=lambda line: None)
    bundle = read_bundle(tmp_path / "bundle")
    dist = exit_distribution("normal", horizon_ms)
    for entry in bundle.devices:
        scored, native = chosen[entry.device["threads"]]
        deployed = bundle.policy(entry, et.profile, dist, bundle.predictor(entry))
        assert deployed.spec == scored.spec and entry.deployment.rule == scored.rule
        selected = deployed_policy(scored, et.profile, dist, native, holdout)
        profile = planned_profile(scored, et.profile)
        assert profile == bundle.planned_profile(entry, et.profile) or scored.planning_seconds == 0.0
        ours, theirs = (evaluate(policy, holdout, profile, dist, draws=1, rule=scored.rule)
                        for policy in (deployed, selected))
        np.testing.assert_array_equal(ours.per_sample_expected, theirs.per_sample_expected, err_msg=scored.kind)
