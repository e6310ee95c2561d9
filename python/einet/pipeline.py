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

import hashlib
import json
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .build_config import BuildConfig
from .build_stages import Stages, check_paths
from .errors import EinetValueError
from .formats.manifest import file_sha256
from .variants import Variant, load_variant, variant_exits


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def build(config: BuildConfig, progress: bool = False, force: bool = False,
          log: Callable[[str], None] = print) -> Path:
    """Run the pipeline of `config` (stages skipped where unchanged, all re-run with `force`); returns the bundle."""
    import torch

    from . import data
    from .formats.checkpoint import load_checkpoint, save_checkpoint
    from .formats.split import HeldOutSplit, fingerprint
    from .models import build as build_zoo

    work = config.path(config["output"]["work"])
    assert work is not None
    check_paths(config)
    work.mkdir(parents=True, exist_ok=True)
    stages = Stages(work, log, force)
    d, net, lv = config["data"], config["network"], config["levers"]
    threads = int(config["train"]["threads"])
    torch.set_num_threads(threads)
    data_path = config.path(d["path"])
    train_all = data.load(d["dataset"], str(data_path), "train")
    test_arrays = data.load(d["dataset"], str(data_path), "test")
    split = HeldOutSplit.of(train_all, d["holdout"], d["seed"])
    train_part, holdout_arrays = split.apply(train_all)
    mean, std = data.NORMALISATION.get(d["dataset"], (None, None))
    if mean is None or std is None:  # measured on the training part, recorded in the bundle
        measured = data.ImageDataset(train_part)
        mean, std = measured.mean, measured.std
    datasets = {name: data.ImageDataset(arrays, mean, std, augment=False)
                for name, arrays in (("train", train_part), ("holdout", holdout_arrays), ("test", test_arrays))}
    log(f"data: {len(train_part)} training, {len(holdout_arrays)} held-out (fraction {d['holdout']}, seed "
        f"{d['seed']}), {len(test_arrays)} test images")
    # What the stages read of the data, by fingerprint: the split names the training data's (its held-out
    # part is cut from it), the normalisation is the dataset's or measured on the training part.
    data_key = [split.as_dict(), [float(v) for v in mean], [float(v) for v in std]]
    test_data = fingerprint(test_arrays)

    # 1. the network
    network_file = work / "network.pt"
    given = config.path(net["checkpoint"])
    # (the test split only scores its epochs in the log: the weights never see it)
    network_key = _key(net, config["train"] if given is None else None, data_key,
                       file_sha256(given) if given is not None else None)

    def make_network() -> None:
        from .formats.checkpoint import recorded_split
        from .training import TrainConfig, train
        from .training.loop import resume_mismatch

        if given is not None:
            model, state = load_checkpoint(given, constructor=net["constructor"])
            recorded = recorded_split(given, state)
            if recorded is not None and recorded != split:
                raise EinetValueError(f"{given} was trained with another held-out split ({recorded}) than [data] asks "
                                      f"for ({split})")
            save_checkpoint(network_file, model, dict(state["spec"]), config=state.get("config") or {},
                            split=split.as_dict())
            return
        if net["constructor"] is not None:
            from .models.constructor import build_converted

            spec = {"name": "converted", "constructor": net["constructor"], "kwargs": net["kwargs"],
                    "exits": net["exits"], "input_shape": [train_all.channels, *train_all.images.shape[1:3]],
                    "num_classes": train_all.num_classes}
            weights = config.path(net["backbone_weights"])
            model, _ = build_converted(net["constructor"], net["kwargs"], datasets["train"].images[:8], net["exits"],
                                       None if weights is None else str(weights))
        else:
            spec = {"name": net["zoo"], "num_classes": train_all.num_classes, "in_channels": train_all.channels,
                    "width": net["width"]}
            if net["exit_head"] != "paper":
                spec["exit_head"] = net["exit_head"]
            torch.manual_seed(d["seed"])
            model = build_zoo(**spec)
        t = config["train"]
        settings = TrainConfig(epochs=t["epochs"], batch_size=t["batch_size"], optimizer=t["optimizer"], lr=t["lr"],
                               schedule=t["schedule"], recipe=t["recipe"], exit_weights=t["exit_weights"],
                               seed=d["seed"])
        partial = work / "training.pt"  # train() resumes from it after an interruption, if it is this run's
        stale = resume_mismatch(partial, model, settings, spec, split.as_dict()) if partial.exists() else None
        if stale:
            log(f"  {partial} {stale}: discarded, training starts afresh")
            partial.unlink()
        train(model, data.ImageDataset(train_part, mean, std, augment=True), datasets["test"], settings,
              checkpoint=partial, model_spec=spec, progress=progress, split=split.as_dict())
        os.replace(partial, network_file)

    stages.run("network", network_key, [network_file], make_network)
    refit_file = work / "refit.pt"
    # Each key covers the files a stage reads, not only its settings: an upstream stage run again
    # (e.g. by --force) with another result re-runs what follows.
    refit_key = _key(file_sha256(network_file), lv["refit_pool"], lv["refit_epochs"], data_key)

    def make_refit() -> None:
        from .models.base import light_pools
        from .models.refit import refit_light_exits

        model, state = load_checkpoint(network_file, constructor=net["constructor"])
        refitted, report = refit_light_exits(model, datasets["train"], datasets["holdout"], pool=lv["refit_pool"],
                                             epochs=lv["refit_epochs"], seed=d["seed"], progress=progress)
        for r in report:
            log(f"  exit {r.exit + 1}: held-out {100 * r.old_accuracy:.2f}% ({r.old_pool}x{r.old_pool}) -> "
                f"{100 * r.new_accuracy:.2f}% ({r.new_pool}x{r.new_pool}){', kept' if r.kept else ''}")
        save_checkpoint(refit_file, refitted, dict(state["spec"]) | {"exit_pools": light_pools(refitted)},
                        config=state.get("config") or {}, split=split.as_dict(), refit=[r.as_dict() for r in report])

    if lv["refit_exits"]:
        stages.run("refit", refit_key, [refit_file], make_refit)
    base_file = refit_file if lv["refit_exits"] else network_file

    # 3. the final network file: the base network's weights and, if asked, the thumbnail exit's
    final_file = work / "final.pt"
    final_key = _key(file_sha256(base_file), lv["thumbnail"], lv["thumbnail_size"], data_key)

    def make_final() -> None:
        model, state = load_checkpoint(base_file, constructor=net["constructor"])
        extra: dict[str, Any] = {}
        if lv["thumbnail"]:
            from .models.thumbnail import fit_thumbnail

            thumbnail = fit_thumbnail(datasets["train"].images, datasets["train"].labels, train_all.num_classes,
                                      lv["thumbnail_size"], seed=d["seed"])
            correct = (thumbnail(datasets["holdout"].images).argmax(1) == datasets["holdout"].labels).float().mean()
            log(f"  thumbnail exit: held-out accuracy {100 * float(correct):.1f}%")
            extra["thumbnail"] = thumbnail.state_dict()
        save_checkpoint(final_file, model, dict(state["spec"]), config=state.get("config") or {},
                        split=split.as_dict(), **extra)

    stages.run("thumbnail" if lv["thumbnail"] else "final", final_key, [final_file], make_final)

    # 4. profiles of the largest variant
    depths = sorted(set(lv["second_look"]))
    full = Variant(lv["thumbnail_size"] if lv["thumbnail"] else None, lv["second_look_view"] if depths else None)
    profile_files = [work / "et.npz", work / "cs-holdout.npz", work / "cs-test.npz"]
    measured_et = config.path(config["profile"]["et"])
    timing = {key: value for key, value in config["profile"].items() if key != "compile"}  # (compile: after bundle)
    profile_key = _key(file_sha256(final_file), full.as_dict(), timing, config["runtime"]["threads"],
                       file_sha256(measured_et) if measured_et is not None else None, data_key, test_data,
                       config.name)

    def make_profiles() -> None:
        from .formats.profiles import ETRecord
        from .profiling import fastest_form, profile_cs, profile_et

        network = _network(config, final_file, full)
        if measured_et is not None:  # timed before on this device, e.g. back to back with a reference
            record = ETRecord.load(measured_et)
            if len(record.conv) != network.num_exits:
                raise EinetValueError(f"profile.et {measured_et} has {len(record.conv)} blocks; the network profiled "
                                      f"({full}) has {network.num_exits}")
        else:
            samples = data.ImageDataset(data.timing_arrays(holdout_arrays), mean, std).images
            threads = config["runtime"]["threads"]  # timed in the fastest verified form, which the bundle runs
            form = fastest_form(_network(config, final_file, Variant()), samples, threads, log)
            record = profile_et(_network(config, final_file, full, form), tuple(samples.shape[1:]),
                                warmup=config["profile"]["warmup"], repeats=config["profile"]["repeats"],
                                threads=threads, samples=samples, name=config.name, progress=progress, form=form)
        record.save(profile_files[0])
        for split_name, path in (("holdout", profile_files[1]), ("test", profile_files[2])):
            profile_cs(network, datasets[split_name], name=config.name, split=split_name,
                       progress=progress).save(path)

    stages.run("profile", profile_key, profile_files, make_profiles)

    # 5. selection on held-out data
    selected_files = [work / "deployment.json", work / "selected.json"]
    s = config["select"]
    select_key = _key([file_sha256(p) for p in profile_files], s, depths, lv["thumbnail"])

    def make_selection() -> None:
        from .distributions import full_inference_time
        from .evaluation.select import save_deployment, select_network
        from .formats.profiles import CSProfile, ETRecord

        et, holdout = ETRecord.load(profile_files[0]), CSProfile.load(profile_files[1])
        blocks = _blocks(full, et)
        candidates: dict[str, tuple[Any, Any]] = {}
        variants: dict[str, Variant] = {}
        for thumb in ([False, True] if lv["thumbnail"] else [False]):
            for depth in [None, *depths]:
                if depth is not None and depth > blocks:
                    raise EinetValueError(f"levers.second_look depth {depth} is more than the network's "
                                          f"{blocks} blocks")
                variant = Variant(full.thumbnail if thumb else None, full.second_look if depth else None,
                                  None if depth == blocks else depth)
                keep = variant_exits(blocks, full, variant)
                name = variant.label(blocks)
                candidates[name] = (et.subset_blocks(keep).profile, holdout.subset_exits(keep))
                variants[name] = variant
        plain = candidates[Variant().label(blocks)][0]
        horizon = full_inference_time(plain) if s["horizon_ms"] is None else s["horizon_ms"] * 1e-3
        log(f"  {len(candidates)} candidate network(s); exit times {s['dist']} over {1e3 * horizon:.3f} ms")
        deployment, predictor = select_network(
            candidates, kinds=s["score_under"], horizon=horizon, rules=s["rules"], time_zero=s["time_zero"],
            signals=s["signals"], predictor_epochs=s["predictor_epochs"], seed=s["seed"], progress=progress,
            planning=None if s["planning_us"] is None else s["planning_us"] * 1e-6, policies=s["policies"])
        save_deployment(selected_files[0], deployment, predictor)
        chosen = variants[str(deployment.network)]
        selected_files[1].write_text(json.dumps({"variant": chosen.as_dict(), "horizon_ms": 1e3 * horizon}) + "\n")
        log(f"  chosen: {deployment.network}, {deployment.policy}, rule {deployment.rule.label()}")
        for candidate, score in list(deployment.validation.items())[:5]:
            log(f"    {100 * score:6.2f}%  {candidate}")

    stages.run("select", select_key, selected_files, make_selection)
    bundle = _write(config, work, split, full, final_file, profile_files, selected_files, stages, holdout_arrays,
                    (mean, std), train_all.classes, test_data)
    if config["profile"]["compile"]:
        _compile(config, bundle, log)
    return bundle


def _compile(config: BuildConfig, bundle: Path, log: Callable[[str], None]) -> None:
    """``profile.compile``: the bundle's blocks compiled for this CPU (unless cached), then timed and selected
    for as ``einet compile`` does; a failed compile leaves the prepared form's entry, said in one line."""
    from .bundle import read_bundle
    from .forms import add_timed_device, ensure_compiled
    from .models.compiled import CompileError

    threads, constructor = int(config["runtime"]["threads"]), config["network"]["constructor"]
    log(f"[compile] blocks and exits for this CPU, {threads} thread{'s' * (threads != 1)}")
    try:
        ensure_compiled(read_bundle(bundle), threads, constructor, log)
    except CompileError as error:
        log(f"[compile] {error}: the bundle runs its prepared form")
        return
    record, deployment = add_timed_device(bundle, "cpu", threads, config["profile"]["warmup"],
                                          config["profile"]["repeats"], constructor, log=log)
    log(f"[compile] timed in the {record.meta['form']['name']} form: full inference "
        f"{1e3 * record.profile.total():.3f} ms; chosen: {deployment.policy}, rule {deployment.rule.label()}")


def _blocks(full: Variant, et: Any) -> int:
    """The base network's blocks, from the full variant's profile."""
    n = len(et.conv) - (1 if full.thumbnail else 0)
    return n // 2 if full.second_look else n


def _network(config: BuildConfig, checkpoint: Path, variant: Variant, form: Any = None) -> Any:
    """`variant` of the network in `checkpoint` (its thumbnail exit from the same file), in `form` (None: as
    trained)."""
    return load_variant(checkpoint, variant, config["network"]["constructor"], form)[0]


def _write(config: BuildConfig, work: Path, split: Any, full: Variant, final_file: Path, profile_files: list[Path],
           selected_files: list[Path], stages: Stages, holdout_arrays: Any, normalisation: tuple[Any, Any],
           classes: tuple[str, ...], test_data: str) -> Path:
    """6. The bundle: the chosen variant's profiles, cut from the full ones, and its configuration."""
    from . import __version__
    from .bundle import device_identity
    from .data import timing_arrays
    from .evaluation.select import load_deployment
    from .formats.manifest import write_bundle
    from .formats.profiles import CSProfile, ETRecord
    from .predictor import load_predictor

    selected = json.loads(selected_files[1].read_text())
    chosen = Variant(**selected["variant"])
    et = ETRecord.load(profile_files[0])
    blocks = _blocks(full, et)
    keep = variant_exits(blocks, full, chosen)
    deployment = load_deployment(selected_files[0])
    predictor = load_predictor(work / deployment.predictor) if deployment.predictor else None
    s, r = config["select"], config["runtime"]
    out = config.path(config["output"]["bundle"])
    assert out is not None
    test = CSProfile.load(profile_files[2]).subset_exits(keep) if config["output"]["keep_test_profile"] else None
    network = _network(config, final_file, chosen)
    input_shape = [holdout_arrays.channels, *holdout_arrays.images.shape[1:3]]
    select_options = {key: s[key] for key in ("score_under", "rules", "time_zero", "signals", "policies",
                                              "predictor_epochs", "seed", "planning_us")}
    write_bundle(out, name=config.name, checkpoint=final_file, variant=chosen, num_exits=network.num_exits,
                 input_spec={"shape": input_shape, "mean": list(normalisation[0]), "std": list(normalisation[1]),
                             "classes": list(classes)},
                 split=split, holdout=CSProfile.load(profile_files[1]).subset_exits(keep), test=test,
                 test_data=test_data,
                 timing_images=timing_arrays(holdout_arrays).images,
                 exit_times={"kind": s["dist"], "horizon_ms": selected["horizon_ms"]},
                 runtime={"adapt": bool(r["adapt"]), "threads": int(r["threads"]),
                          "adaptation": dict(r["adaptation"])},
                 select_options=select_options,
                 devices=[(device_identity("cpu", int(r["threads"])), et.subset_blocks(keep), deployment, predictor)],
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
    options = bundle.manifest["select"]
    from .distributions import full_inference_time

    deployment, predictor = select(
        et.profile, bundle.holdout(), kinds=options["score_under"],
        scale=bundle.horizon_ms * 1e-3 / full_inference_time(et.profile), rules=options["rules"],
        time_zero=options["time_zero"], signals=options["signals"], predictor_epochs=options["predictor_epochs"],
        seed=options["seed"], progress=progress,
        planning=None if options["planning_us"] is None else options["planning_us"] * 1e-6,
        policies=options["policies"])
    return deployment, predictor
