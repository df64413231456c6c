"""Short weak-label training runs that show whether the joint model learns: per epoch the
training loss beside the loss of predicting the class priors, the training and validation AUC,
and at the end the validation AUC per class beside the linear floor's.

Run:  python benchmarks/diagnose_weak_label.py --named weak_label_demo --epochs 20 \\
          --set weak_label_recipe=generic --set data_root=/work/cache/weak_dev \\
          --set 'recipe_options={"events_per_clip": [1, 1], "ebr_db": [0, 0], "clips_per_split": {"train": 240, "valid": 60, "test": 60}}'

The config is Training.py's: its defaults, then the named configs, then each --set (JSON
values, or plain words). Training is Training.py's (Models/weak_label/training.py: the same
features, start at the priors, augmentation and JointModel steps) without checkpoints or
early stopping. Printed first: the model inputs' statistics and the prior loss of the training
and validation splits. Each epoch line gives the validation AUC twice, with the batch
normalisation's moving statistics (as in inference) and with batch statistics (as in training):
a gap between the two means stale moving statistics.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

TRAIN_CLIPS_SCORED = 120  # training clips scored after every epoch (the training AUC)


def training_config(named: list[str], settings: list[str]) -> dict:
    """Training.py's config: defaults, named configs in order, then KEY=VALUE settings."""
    import Training

    config = dict(Training.config())
    for name in named:
        with open(os.path.join(Training.CONFIG_DIR, f"{name}.json"), encoding="utf-8") as file:
            config.update(json.load(file))
    for setting in settings:
        key, _, value = setting.partition("=")
        if key not in config:
            raise SystemExit(f"--set {setting}: Training.py has no config key '{key}'.")
        try:
            config[key] = json.loads(value)
        except json.JSONDecodeError:
            config[key] = value
    return config


def prior_loss(labels: np.ndarray, priors: np.ndarray) -> float:
    """Mean BCE of predicting `priors` for every clip: where a model that learnt nothing ends."""
    priors = np.clip(priors, 1e-7, 1 - 1e-7)
    return float(-np.mean(labels * np.log(priors) + (1 - labels) * np.log(1 - priors)))


def batch_statistics_probabilities(model, features: np.ndarray, batch_size: int) -> np.ndarray:
    return np.concatenate([model(features[first:first + batch_size], training=True)["probabilities"].numpy()
                           for first in range(0, len(features), batch_size)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--named", action="append", default=[], help="a named config of configs/; repeatable")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a config key; repeatable")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    arguments = parser.parse_args()
    config = training_config(arguments.named, arguments.set)
    logging.basicConfig(level=logging.WARNING)

    import tensorflow as tf

    from Models.weak_label.augmentation import Augmentation
    from Models.weak_label.prior_bias import start_at_priors
    from Models.weak_label.solver import JointModel
    from Models.weak_label.tagging import tagging_metrics
    from Models.weak_label.training import floor_tagging_of, linear_floor, load_features, model_spec_of

    data = load_features(config, logging.getLogger("diagnose"))
    classes, train, valid = data.clips.classes, data.labelled["train"], data.labelled["valid"]
    band_std = train.features.std(axis=(0, 1))
    print(f"model inputs: train mean {train.features.mean():+.3f} std {train.features.std():.3f} (per band "
          f"{band_std.min():.3f}..{band_std.max():.3f}); valid mean {valid.features.mean():+.3f} std "
          f"{valid.features.std():.3f}; {(train.features < -4).mean():.1%} of train values below -4")
    priors = train.labels.mean(axis=0)
    print(f"prior loss: train {prior_loss(train.labels, priors):.4f}, valid {prior_loss(valid.labels, priors):.4f}")
    tf.keras.utils.set_random_seed(arguments.seed)
    steps_per_epoch = -(-len(train.labels) // config["batch_size"])
    joint = JointModel(model_spec_of(config, len(classes), data.num_frames), config["learning_rate"],
                       config["lr_decay_epochs"] * steps_per_epoch, config["lr_decay_factor"],
                       config["sparsity_weight"], config["jit_compile"],
                       sparsity_masks=config["sparsity_masks"])
    if config["output_bias"] == "prior":
        start_at_priors(joint.model, config["classifier"], train.features[:config["batch_size"]], priors)
    augmentation = Augmentation.of(config, data.standardisation)
    order = np.random.default_rng(arguments.seed)
    for epoch in range(arguments.epochs):
        start = time.perf_counter()
        losses = [joint.train_step(*augmentation(train.features[clips], train.labels[clips],
                                                 (arguments.seed, epoch, step)))
                  for step, clips in enumerate(np.array_split(order.permutation(len(train.labels)), steps_per_epoch))]
        seconds = time.perf_counter() - start
        masks, probabilities = joint.predict(valid.features, config["batch_size"])
        valid_bce = float(joint.losses(tf.constant(valid.labels), tf.constant(masks),
                                       tf.constant(probabilities))["bce"])
        tagging = tagging_metrics(valid.labels, probabilities, classes)
        batch_auc = tagging_metrics(valid.labels, batch_statistics_probabilities(
            joint.model, valid.features, config["batch_size"]), classes)["weighted_auc"]
        _, train_probabilities = joint.predict(train.features[:TRAIN_CLIPS_SCORED], config["batch_size"])
        train_tagging = tagging_metrics(train.labels[:TRAIN_CLIPS_SCORED], train_probabilities, classes)
        print(f"epoch {epoch + 1:3d}: train loss {np.mean([float(item['loss']) for item in losses]):.4f} "
              f"(bce {np.mean([float(item['bce']) for item in losses]):.4f}), train AUC "
              f"{train_tagging['weighted_auc']:.3f}; valid bce {valid_bce:.4f}, AUC {tagging['weighted_auc']:.3f}, "
              f"mAP {tagging['mean_average_precision']:.3f} (batch statistics: AUC {batch_auc:.3f}); mean mask "
              f"{masks.mean():.3f}; probabilities {probabilities.mean():.3f} ({probabilities.std():.3f}); "
              f"{seconds:.0f} s", flush=True)
    floor = floor_tagging_of(linear_floor(data), data, "valid")
    print("validation AUC per class (linear floor): " + ", ".join(
        f"{name} {tagging['per_class'][name].get('auc', np.nan):.3f} "
        f"({floor['per_class'][name].get('auc', np.nan):.3f})" for name in classes)
        + f"; weighted {tagging['weighted_auc']:.3f} ({floor['weighted_auc']:.3f})")
    print(f"training AUC per class (first {TRAIN_CLIPS_SCORED} clips): " + ", ".join(
        f"{name} {train_tagging['per_class'][name].get('auc', np.nan):.3f}" for name in classes))


if __name__ == "__main__":
    main()
