"""`nonxfer-bench train zoo`: train the zoo's models with file weights, reproducibly, and save them.

Each model is trained from its own seed on the zoo file's dataset (train split), evaluated on the
test split, and written as ``.safetensors`` with a JSON card beside it (accuracy, time, settings).
Models whose weight file already exists are skipped unless ``fresh`` is set.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from nonxfer_bench.core.atomic import atomic_write, save_atomically
from nonxfer_bench.core.errors import UserError, excerpt
from nonxfer_bench.datasets.base import load_dataset
from nonxfer_bench.loading import load_zoo
from nonxfer_bench.metrics.outcomes import accuracy
from nonxfer_bench.schema.suite import ModelSpec, TrainSpec, ZooFile
from nonxfer_bench.zoo import ZooModel, create_network


def train_model(spec: ModelSpec, train: TrainSpec, images: torch.Tensor, labels: torch.Tensor) -> ZooModel:
    """Train one zoo model from scratch on [0, 1] images with AdamW and a cosine schedule."""
    torch.manual_seed(spec.seed)
    torch.set_flush_denormal(True)  # tiny weights late in training otherwise slow CPU steps down 20-50x
    model = ZooModel(
        spec, create_network(spec.model_copy(update={"weights": spec.weights.model_copy(update={"source": "none"})}))
    )
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)
    steps_per_epoch = math.ceil(len(labels) / train.batch_size)
    total = train.epochs * steps_per_epoch
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=train.lr, total_steps=total, pct_start=0.15)
    generator = torch.Generator().manual_seed(spec.seed)
    with tqdm(total=total, desc=f"train {spec.name}", unit="step") as bar:
        for _ in range(train.epochs):
            order = torch.randperm(len(labels), generator=generator)
            for start in range(0, len(order), train.batch_size):
                index = order[start : start + train.batch_size]
                loss = F.cross_entropy(model(images[index]), labels[index], label_smoothing=0.1)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
                bar.update()
    return model.eval()


def train_zoo(zoo_path: Path, fresh: bool = False, only: list[str] | None = None) -> list[dict]:
    """Train every file-weight model of a zoo file that is missing (or all, with ``fresh``); ``only`` (the CLI's
    ``--only``) names some of them, each of which must be one (else nothing would be trained, silently)."""
    zoo: ZooFile = load_zoo(zoo_path)
    trainable = [m.name for m in zoo.models if m.weights.source == "file"]
    unknown = [name for name in only or [] if name not in trainable]
    if unknown:
        raise UserError(
            f"{zoo_path}: --only {', '.join(map(excerpt, unknown))}: no model of that name with file weights in this "
            f"zoo; valid: {', '.join(trainable) if trainable else 'none (no model has weights: {source: file})'}"
        )
    if zoo.dataset is None:
        raise UserError(f"{zoo_path}: key 'dataset': a zoo file needs a dataset to train on")
    targets = [m for m in zoo.models if m.weights.source == "file" and (only is None or m.name in only)]
    todo = [m for m in targets if fresh or not m.weights.path.is_file()]
    if not todo:
        return []
    train_set = load_dataset(zoo.dataset.name, {**zoo.dataset.params, "split": "train"})
    test_set = load_dataset(zoo.dataset.name, {**zoo.dataset.params, "split": "test"})
    cards = []
    for spec in todo:
        started = time.time()
        train = spec.train or zoo.train
        model = train_model(spec, train, train_set.as_float(), train_set.labels)
        seconds = time.time() - started
        test_accuracy = accuracy(model.predict(test_set.as_float(), 512), test_set.labels)
        save_atomically(model.net.state_dict(), spec.weights.path)
        card = {
            "name": spec.name,
            "arch": spec.arch,
            "kwargs": spec.kwargs,
            "seed": spec.seed,
            "dataset": zoo.dataset.name,
            "train": train.model_dump(),
            "test_accuracy": round(test_accuracy, 4),
            "train_seconds": round(seconds, 1),
            "threads": torch.get_num_threads(),
            "first_conv": model.first_conv_name,
            "first_conv_shape": list(model.first_conv.weight.shape),
            "torch": torch.__version__,
        }
        atomic_write(spec.weights.path.with_suffix(".json"), json.dumps(card, indent=2) + "\n")
        tqdm.write(f"{spec.name}: test accuracy {test_accuracy:.4f} in {seconds:.0f} s")
        cards.append(card)
    return cards
