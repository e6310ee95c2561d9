"""``einet build CONFIG``: from data and a network to a deployment bundle, every lever a config option.

Stages, each a library call, each resumable (a stage whose inputs are unchanged is not run again:
its key, a SHA-256 of its settings and of the files and data it reads, is kept in the work folder;
a build stopped anywhere resumes, a training only if it is this config's: :mod:`einet.build_stages`):

1. ``network``: train the network (a zoo model or the user's constructor, converted), or start
   from a checkpoint; the held-out split is recorded in it, once, and used by every later stage;
2. ``refit``: refit the early light exits at a finer pool where held-out data says it is better;
3. ``thumbnail``: a linear classifier on a thumbnail, as exit 0 (an answer from time zero);
4. ``profile``: the largest variant (thumbnail exit, a full second look) timed on this device and
   CS-profiled on the held-out and test splits; every candidate's profiles are cuts of these;
5. ``select``: candidates (with and without the thumbnail exit; no second look or each depth asked
   for) selected on held-out data under the same exit times in milliseconds: policy, rule, time-zero
   answer and network, never looking at the test split;
6. ``bundle``: the chosen variant, its profiles, predictor and configuration written as a bundle; a
   bundle replaced keeps the files it did not make, and other devices' entries while the network is
   the same (:func:`einet.formats.manifest.write_bundle`).

The config is TOML (see examples/); paths in it are relative to its own folder.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from .build_config import BuildConfig, LeverOptions
from .build_stages import BuildData, Stage, Stages, StageWork, check_paths, torch_state
from .errors import EinetValueError
from .variants import Variant, load_variant, variant_exits

_NETWORK_OPTIONS = ("network.zoo", "network.width", "network.exit_head", "network.constructor", "network.kwargs",
                    "network.exits", "network.checkpoint", "network.backbone_weights")
_TRAIN_OPTIONS = ("train.epochs", "train.batch_size", "train.optimizer", "train.lr", "train.schedule",
                  "train.recipe", "train.exit_weights", "train.threads")
_LEVERS_OF_THE_FULL_VARIANT = ("levers.thumbnail", "levers.thumbnail_size", "levers.second_look",
                               "levers.second_look_view")
_SELECT_OPTIONS = ("select.dist", "select.score_under", "select.horizon_ms", "select.rules", "select.time_zero",
                   "select.signals", "select.policies", "select.predictor_epochs", "select.seed",
                   "select.planning_us")


def _full(levers: LeverOptions) -> Variant:
    """The largest variant the levers ask for: every candidate's profiles are cuts of its."""
    return Variant(levers.thumbnail_size if levers.thumbnail else None,
                   levers.second_look_view if levers.second_look else None)


def _save_network(work: StageWork, model: Any, state: dict[str, Any], spec: dict[str, Any] | None = None,
                  **extra: Any) -> None:
    """`model` into the stage's one output file, with the build's held-out split recorded."""
    from .formats.checkpoint import save_checkpoint

    save_checkpoint(work.writes[0], model, dict(state["spec"]) if spec is None else spec,
                    config=state.get("config") or {}, split=work.data.split.as_dict(), **extra)


def _starting_network(work: StageWork) -> tuple[Any, dict[str, Any]]:
    """The network to train (a zoo model, or the user's constructor converted) and its spec."""
    net, data = work.config.network, work.data
    spec: dict[str, Any]
    if net.constructor is not None:
        from .models.constructor import build_converted

        spec = {"name": "converted", "constructor": net.constructor, "kwargs": net.kwargs, "exits": net.exits,
                "input_shape": [data.train_all.channels, *data.train_all.images.shape[1:3]],
                "num_classes": data.train_all.num_classes}
        weights = work.config.path(net.backbone_weights)
        model, _ = build_converted(net.constructor, net.kwargs, data.datasets["train"].images[:8], net.exits,
                                   None if weights is None else str(weights))
        return model, spec
    import torch

    from .models import build as build_zoo

    spec = {"name": net.zoo, "num_classes": data.train_all.num_classes, "in_channels": data.train_all.channels,
            "width": net.width}
    if net.exit_head != "paper":
        spec["exit_head"] = net.exit_head
    torch.manual_seed(work.config.data.seed)
    return build_zoo(**spec), spec


def _make_network(work: StageWork) -> None:
    """1. The network: trained (the test split only scores its epochs in the log: the weights never see
    it), or the checkpoint given, its held-out split checked against this build's."""
    from . import data as datasets
    from .formats.checkpoint import load_checkpoint, recorded_split
    from .training import TrainConfig, train
    from .training.loop import resume_mismatch

    config, data = work.config, work.data
    given = config.path(config.network.checkpoint)
    if given is not None:
        model, state = load_checkpoint(given, constructor=config.network.constructor)
        recorded = recorded_split(given, state)
        if recorded is not None and recorded != data.split:
            raise EinetValueError(f"{given} was trained with another held-out split ({recorded}) than [data] asks "
                                  f"for ({data.split})")
        _save_network(work, model, state)
        return
    model, spec = _starting_network(work)
    t = config.train
    settings = TrainConfig(epochs=t.epochs, batch_size=t.batch_size, optimizer=t.optimizer, lr=t.lr,
                           schedule=t.schedule, recipe=t.recipe, exit_weights=t.exit_weights, seed=config.data.seed)
    partial = work.writes[0].with_name("training.pt")  # train() resumes from it after an interruption, if ours
    stale = resume_mismatch(partial, model, settings, spec, data.split.as_dict()) if partial.exists() else None
    if stale:
        work.log(f"  {partial} {stale}: discarded, training starts afresh")
        partial.unlink()
    train(model, datasets.ImageDataset(data.train_part, *data.normalisation, augment=True), data.datasets["test"],
          settings, checkpoint=partial, model_spec=spec, progress=work.progress, split=data.split.as_dict())
    os.replace(partial, work.writes[0])


def _make_refit(work: StageWork) -> None:
    """2. The early light exits refitted at a finer pool where held-out data says it is better."""
    from .formats.checkpoint import load_checkpoint
    from .models.base import light_pools
    from .models.refit import refit_light_exits

    config, data = work.config, work.data
    model, state = load_checkpoint(work.reads[0], constructor=config.network.constructor)
    refitted, report = refit_light_exits(model, data.datasets["train"], data.datasets["holdout"],
                                         pool=config.levers.refit_pool, epochs=config.levers.refit_epochs,
                                         seed=config.data.seed, progress=work.progress)
    for r in report:
        work.log(f"  exit {r.exit + 1}: held-out {100 * r.old_accuracy:.2f}% ({r.old_pool}x{r.old_pool}) -> "
                 f"{100 * r.new_accuracy:.2f}% ({r.new_pool}x{r.new_pool}){', kept' if r.kept else ''}")
    _save_network(work, refitted, state, dict(state["spec"]) | {"exit_pools": light_pools(refitted)},
                  refit=[r.as_dict() for r in report])


def _make_final(work: StageWork) -> None:
    """3. The final network file: the base network's weights, as they are."""
    from .formats.checkpoint import load_checkpoint

    _save_network(work, *load_checkpoint(work.reads[0], constructor=work.config.network.constructor))


def _make_thumbnail(work: StageWork) -> None:
    """3. The final network file: the base network's weights and a thumbnail exit (exit 0)."""
    from .formats.checkpoint import load_checkpoint
    from .models.thumbnail import fit_thumbnail

    config, datasets = work.config, work.data.datasets
    model, state = load_checkpoint(work.reads[0], constructor=config.network.constructor)
    thumbnail = fit_thumbnail(datasets["train"].images, datasets["train"].labels, work.data.train_all.num_classes,
                              config.levers.thumbnail_size, seed=config.data.seed)
    correct = (thumbnail(datasets["holdout"].images).argmax(1) == datasets["holdout"].labels).float().mean()
    work.log(f"  thumbnail exit: held-out accuracy {100 * float(correct):.1f}%")
    _save_network(work, model, state, thumbnail=thumbnail.state_dict())


def _make_profiles(work: StageWork) -> None:
    """4. The largest variant timed here in its fastest verified form (which the bundle runs), or its
    ET-profile timed before (``profile.et``), and CS-profiled on the held-out and test splits."""
    from . import data as datasets
    from .formats.profiles import ETRecord
    from .profiling import fastest_form, profile_cs, profile_et

    config, data, (final_file,) = work.config, work.data, work.reads
    full = _full(config.levers)
    network = _network(config, final_file, full)
    measured_et = config.path(config.profile.et)
    if measured_et is not None:  # timed before on this device, e.g. back to back with a reference
        record = ETRecord.load(measured_et)
        if len(record.conv) != network.num_exits:
            raise EinetValueError(f"profile.et {measured_et} has {len(record.conv)} blocks; the network profiled "
                                  f"({full}) has {network.num_exits}")
    else:
        samples = datasets.ImageDataset(datasets.timing_arrays(data.holdout), *data.normalisation).images
        threads = config.runtime.threads
        form = fastest_form(_network(config, final_file, Variant()), samples, threads, work.log)
        record = profile_et(_network(config, final_file, full, form), tuple(samples.shape[1:]),
                            warmup=config.profile.warmup, repeats=config.profile.repeats, threads=threads,
                            samples=samples, name=config.name, progress=work.progress, form=form)
    et_file, *cs_files = work.writes
    record.save(et_file)
    for split_name, path in zip(("holdout", "test"), cs_files):
        profile_cs(network, data.datasets[split_name], name=config.name, split=split_name,
                   progress=work.progress).save(path)


def _candidates(levers: LeverOptions, blocks: int) -> dict[str, Variant]:
    """Every candidate variant by label: with and without the thumbnail exit, no second look or each depth."""
    full, depths = _full(levers), sorted(set(levers.second_look))
    variants: dict[str, Variant] = {}
    for thumb in ([False, True] if levers.thumbnail else [False]):
        for depth in [None, *depths]:
            if depth is not None and depth > blocks:
                raise EinetValueError(f"levers.second_look depth {depth} is more than the network's {blocks} blocks")
            variant = Variant(full.thumbnail if thumb else None, full.second_look if depth else None,
                              None if depth == blocks else depth)
            variants[variant.label(blocks)] = variant
    return variants


def _make_selection(work: StageWork) -> None:
    """5. The candidates selected on held-out data under the same exit times in milliseconds: policy, rule,
    time-zero answer and network, never looking at the test split."""
    from .distributions import full_inference_time
    from .evaluation.select import save_deployment, select_network
    from .formats.profiles import CSProfile, ETRecord

    s, full = work.config.select, _full(work.config.levers)
    et, holdout = ETRecord.load(work.reads[0]), CSProfile.load(work.reads[1])
    blocks = _blocks(full, et)
    variants = _candidates(work.config.levers, blocks)
    candidates = {name: (et.subset_blocks(keep).profile, holdout.subset_exits(keep))
                  for name, keep in ((name, variant_exits(blocks, full, v)) for name, v in variants.items())}
    plain = candidates[Variant().label(blocks)][0]
    horizon = full_inference_time(plain) if s.horizon_ms is None else s.horizon_ms * 1e-3
    work.log(f"  {len(candidates)} candidate network(s); exit times {s.dist} over {1e3 * horizon:.3f} ms")
    deployment, predictor = select_network(
        candidates, kinds=s.score_under, horizon=horizon, rules=s.rules, time_zero=s.time_zero,
        signals=s.signals, predictor_epochs=s.predictor_epochs, seed=s.seed, progress=work.progress,
        planning=None if s.planning_us is None else s.planning_us * 1e-6, policies=s.policies)
    deployment_file, selected_file = work.writes
    save_deployment(deployment_file, deployment, predictor)
    chosen = variants[str(deployment.network)]
    selected_file.write_text(json.dumps({"variant": chosen.as_dict(), "horizon_ms": 1e3 * horizon}) + "\n")
    work.log(f"  chosen: {deployment.network}, {deployment.policy}, rule {deployment.rule.label()}")
    for candidate, score in list(deployment.validation.items())[:5]:
        work.log(f"    {100 * score:6.2f}%  {candidate}")


FINAL, PROFILES, SELECTED = "final.pt", ("et.npz", "cs-holdout.npz", "cs-test.npz"), ("deployment.json",
                                                                                        "selected.json")
# Every stage, what it reads and writes; `after` of the final network and the profiles: by plan().
STAGES = (
    Stage("network", _make_network, ("network.pt",), (*_NETWORK_OPTIONS, *_TRAIN_OPTIONS, "data.seed"),
          ("data",)),
    Stage("refit", _make_refit, ("refit.pt",), ("levers.refit_pool", "levers.refit_epochs", "data.seed",
                                                "network.constructor"), ("data",), ("network",)),
    Stage("final", _make_final, (FINAL,), ("network.constructor",), ("data",)),
    Stage("thumbnail", _make_thumbnail, (FINAL,), ("levers.thumbnail_size", "data.seed", "network.constructor"),
          ("data",)),
    Stage("profile", _make_profiles, PROFILES, (*_LEVERS_OF_THE_FULL_VARIANT, "profile.repeats", "profile.warmup",
                                                "profile.et", "runtime.threads", "network.constructor"),
          ("data", "test_data", "name")),
    Stage("select", _make_selection, SELECTED, (*_SELECT_OPTIONS, *_LEVERS_OF_THE_FULL_VARIANT), (), ("profile",)),
)


def plan(config: BuildConfig) -> list[Stage]:
    """The stages `config` runs, in order: the refit only if asked for; the thumbnail exit fitted, or the
    network file taken as it is."""
    stages = {stage.name: stage for stage in STAGES}
    networks = [stages["network"], *([stages["refit"]] if config.levers.refit_exits else [])]
    final = replace(stages["thumbnail" if config.levers.thumbnail else "final"], after=(networks[-1].name,))
    return [*networks, final, replace(stages["profile"], after=(final.name,)), stages["select"]]


def prepare_data(config: BuildConfig, log: Callable[[str], None]) -> BuildData:
    """The dataset, split once into training and held-out parts, normalised (by the dataset's constants, or
    measured on the training part and recorded in the bundle)."""
    from . import data
    from .formats.split import HeldOutSplit, fingerprint

    d = config.data
    data_path = config.path(d.path)
    train_all = data.load(d.dataset, str(data_path), "train")
    test = data.load(d.dataset, str(data_path), "test")
    split = HeldOutSplit.of(train_all, d.holdout, d.seed)
    train_part, holdout = split.apply(train_all)
    mean, std = data.NORMALISATION.get(d.dataset, (None, None))
    if mean is None or std is None:
        measured = data.ImageDataset(train_part)
        mean, std = measured.mean, measured.std
    datasets = {name: data.ImageDataset(arrays, mean, std, augment=False)
                for name, arrays in (("train", train_part), ("holdout", holdout), ("test", test))}
    log(f"data: {len(train_part)} training, {len(holdout)} held-out (fraction {d.holdout}, seed {d.seed}), "
        f"{len(test)} test images")
    facts = {"data": [split.as_dict(), [float(v) for v in mean], [float(v) for v in std]],
             "test_data": fingerprint(test)}
    return BuildData(train_all, train_part, holdout, test, split, (mean, std), datasets, facts)


def build(config: BuildConfig, progress: bool = False, force: bool = False,
          log: Callable[[str], None] = print) -> Path:
    """Run the pipeline of `config` (stages skipped where unchanged, all re-run with `force`); returns the
    bundle. Torch's threads (``train.threads`` while it works) and random state are the caller's again after."""
    work = config.path(config.output.work)
    assert work is not None
    check_paths(config)
    work.mkdir(parents=True, exist_ok=True)
    stages = Stages(work, log, force)
    with torch_state(config.train.threads):
        data = prepare_data(config, log)
        stages.run_all(plan(config), config, data, progress)
        bundle = _write(config, data, stages)
        if config.profile.compile:
            _compile(config, bundle, log)
    return bundle


def _compile(config: BuildConfig, bundle: Path, log: Callable[[str], None]) -> None:
    """``profile.compile``: the bundle's blocks compiled for this CPU (unless cached), then timed and selected
    for as ``einet compile`` does; a failed compile leaves the prepared form's entry, said in one line."""
    from .bundle import read_bundle
    from .forms import add_timed_device, ensure_compiled
    from .models.compiled import CompileError

    threads, constructor = config.runtime.threads, config.network.constructor
    log(f"[compile] blocks and exits for this CPU, {threads} thread{'s' * (threads != 1)}")
    try:
        ensure_compiled(read_bundle(bundle), threads, constructor, log)
    except CompileError as error:
        log(f"[compile] {error}: the bundle runs its prepared form")
        return
    record, deployment = add_timed_device(bundle, "cpu", threads, config.profile.warmup, config.profile.repeats,
                                          constructor, log=log)
    log(f"[compile] timed in the {record.meta['form']['name']} form: full inference "
        f"{1e3 * record.profile.total():.3f} ms; chosen: {deployment.policy}, rule {deployment.rule.label()}")


def _blocks(full: Variant, et: Any) -> int:
    """The base network's blocks, from the full variant's profile."""
    n = len(et.conv) - (1 if full.thumbnail else 0)
    return n // 2 if full.second_look else n


def _network(config: BuildConfig, checkpoint: Path, variant: Variant, form: Any = None) -> Any:
    """`variant` of the network in `checkpoint` (its thumbnail exit from the same file), in `form` (None: as
    trained)."""
    return load_variant(checkpoint, variant, config.network.constructor, form)[0]


def _write(config: BuildConfig, data: BuildData, stages: Stages) -> Path:
    """6. The bundle: the chosen variant's profiles, cut from the full ones, and its configuration."""
    from . import __version__
    from .bundle import device_identity
    from .data import timing_arrays
    from .evaluation.select import load_deployment
    from .formats.manifest import write_bundle
    from .formats.profiles import CSProfile, ETRecord
    from .predictor import load_predictor

    work, full = stages.work, _full(config.levers)
    selected = json.loads((work / SELECTED[1]).read_text())
    chosen = Variant(**selected["variant"])
    et = ETRecord.load(work / PROFILES[0])
    blocks = _blocks(full, et)
    keep = variant_exits(blocks, full, chosen)
    deployment = load_deployment(work / SELECTED[0])
    predictor = load_predictor(work / deployment.predictor) if deployment.predictor else None
    s, r = config.select, config.runtime
    out = config.path(config.output.bundle)
    assert out is not None
    test = CSProfile.load(work / PROFILES[2]).subset_exits(keep) if config.output.keep_test_profile else None
    network = _network(config, work / FINAL, chosen)
    mean, std = data.normalisation
    select_options = {key: getattr(s, key) for key in ("score_under", "rules", "time_zero", "signals", "policies",
                                                       "predictor_epochs", "seed", "planning_us")}
    write_bundle(out, name=config.name, checkpoint=work / FINAL, variant=chosen, num_exits=network.num_exits,
                 input_spec={"shape": [data.holdout.channels, *data.holdout.images.shape[1:3]], "mean": list(mean),
                             "std": list(std), "classes": list(data.train_all.classes)},
                 split=data.split, holdout=CSProfile.load(work / PROFILES[1]).subset_exits(keep), test=test,
                 test_data=data.facts["test_data"], timing_images=timing_arrays(data.holdout).images,
                 exit_times={"kind": s.dist, "horizon_ms": selected["horizon_ms"]},
                 runtime={"adapt": r.adapt, "threads": r.threads, "adaptation": dict(r.adaptation)},
                 select_options=select_options,
                 devices=[(device_identity("cpu", r.threads), et.subset_blocks(keep), deployment, predictor)],
                 provenance={"einet": __version__, "command": " ".join(["einet", *sys.argv[1:]]),
                             "config": config.source, "stages": stages.record}, log=stages.log)
    stages.log(f"[bundle] wrote {out}: {chosen.label(blocks)}, {deployment.policy}, rule {deployment.rule.label()}")
    return out


def reselect(bundle_path: Path, identity: Mapping[str, Any], et: Any, progress: bool = False) -> Any:
    """The configuration for another device: the bundle's network and held-out split, its ET-profile `et`
    timed there, selected as the bundle was (its select options and exit times)."""
    from .bundle import read_bundle
    from .evaluation.select import select

    bundle = read_bundle(bundle_path)
    options = bundle.select_options
    from .distributions import full_inference_time

    deployment, predictor = select(
        et.profile, bundle.holdout(), kinds=options["score_under"],
        scale=bundle.horizon_ms * 1e-3 / full_inference_time(et.profile), rules=options["rules"],
        time_zero=options["time_zero"], signals=options["signals"], predictor_epochs=options["predictor_epochs"],
        seed=options["seed"], progress=progress,
        planning=None if options["planning_us"] is None else options["planning_us"] * 1e-6,
        policies=options["policies"])
    return deployment, predictor
