"""Attacks on the keyed block-wise scheme: block-order recovery (jigsaw), known-plaintext key recovery, fine-tuning on
labelled encrypted images, and the runner handing attackers the deployed (keyed) authorized model."""

import functools
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from nonxfer_bench.attacks import ATTACKS, AttackContext
from nonxfer_bench.attacks.known_plaintext import estimate_key
from nonxfer_bench.cli import main
from nonxfer_bench.core.hashing import keyed_generator
from nonxfer_bench.datasets.base import load_dataset
from nonxfer_bench.encoders import ENCODERS
from nonxfer_bench.encoders.keyed_block import BlockKey, KeyedBlockParams
from nonxfer_bench.loading import load_zoo
from nonxfer_bench.schema.suite import ModelSpec
from nonxfer_bench.zoo import ZooModel, build_model, model_structure
from tests.helpers import write_yaml

ROOT = Path(__file__).resolve().parents[2]
SCRAMBLE_ONLY = KeyedBlockParams(shuffle=False, flip=False)


@functools.cache
def fashion_model(name: str) -> ZooModel:
    return build_model(next(spec for spec in load_zoo(ROOT / "suites/zoo/fashion.yaml").models if spec.name == name))


@functools.cache
def fashion(split: str, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    data = load_dataset("fashion_mnist", {"split": split}).subset(count, 0)
    return data.as_float(), torch.as_tensor(data.labels)


@functools.cache
def photos() -> torch.Tensor:
    """scikit-image's five bundled photos, RGB at 112 px (a 7 x 7 grid of 16 px blocks, as a ViT-B/16 sees 112 px)."""
    from skimage import data

    out = []
    for name in ("astronaut", "camera", "coffee", "chelsea", "rocket"):
        image = torch.from_numpy(np.asarray(getattr(data, name)()).astype(np.float32) / 255)
        image = image[None].expand(3, -1, -1) if image.dim() == 2 else image.permute(2, 0, 1)
        out.append(F.interpolate(image[None], size=(112, 112), mode="bilinear", antialias=True)[0].clamp(0, 1))
    return torch.stack(out)


def solved(images: torch.Tensor, key: BlockKey, params: dict | None = None) -> torch.Tensor:
    """``block_order`` on the key's encryption of ``images``, its block size read from a ViT with that patch size."""
    channels, size, patch = images.shape[1], images.shape[-1], key.block[0]
    vit = {"img_size": size, "patch_size": patch, "in_chans": channels, "num_classes": 10}
    preprocess = {"input_size": [channels, size, size], "mean": [0.5] * channels, "std": [0.5] * channels}
    attack = ATTACKS.create("block_order", params)
    attack.prepare(
        AttackContext(
            model_structure(ModelSpec(name="vit", arch="vit_tiny_patch16_224", kwargs=vit, preprocess=preprocess)),
            None,
            images[:0],
            images[:1],
        )
    )
    return attack(key.encrypt(images), 1.0, torch.Generator())


def exact(found: torch.Tensor, truth: torch.Tensor) -> int:
    return int(((found - truth).abs().flatten(1).amax(1) < 1e-6).sum())


def test_the_jigsaw_solver_puts_scrambled_photo_blocks_back_exactly():
    """Measured: 4 of the 5 photos come back exactly (camera: 90 % of its blocks), 0 of 5 once the blocks are also
    pixel-shuffled and flipped (the solver assumes blocks that keep their inner layout)."""
    images = photos()
    key = BlockKey.draw(3, (16, 16), 3, 49, SCRAMBLE_ONLY)
    assert exact(key.encrypt(images), images) == 0
    assert exact(solved(images, key), images) >= 4
    assert exact(solved(images, BlockKey.draw(3, (16, 16), 3, 49, KeyedBlockParams())), images) == 0


def test_the_jigsaw_solver_after_jpeg_recovers_fewer_photos():
    """After JPEG at quality 90 the order is right for 2 of 5 photos (measured), compared with the true key's
    decryption of the same JPEG images; strength 0 leaves the JPEG release as found."""
    images = photos()
    key = BlockKey.draw(3, (16, 16), 3, 49, SCRAMBLE_ONLY)
    jpeg = ATTACKS.create("jpeg_pil", {"max_quality": 90, "min_quality": 90})(
        key.encrypt(images), 0.0, torch.Generator()
    )
    found = solved(images, key, {"jpeg_quality": 90})
    assert 2 <= exact(found, key.decrypt(jpeg)) < 5


def test_the_jigsaw_solver_on_scrambled_fashion_beats_a_random_order_but_rarely_solves_an_image():
    """Fashion-MNIST in 7 px blocks (a 4 x 4 grid of mostly flat or textured blocks) is hard for edge matching:
    measured on 200 test images, 12 % of block positions get their own content back (a random order: 8 %, the
    identical black blocks), and 1 of 200 images comes back whole."""
    images = fashion("test", 200)[0]
    key = BlockKey.draw(3, (7, 7), 1, 16, SCRAMBLE_ONLY)
    found = solved(images, key)
    right = float(((found - images).unfold(2, 7, 7).unfold(3, 7, 7).abs().amax((-1, -2)) < 1e-6).double().mean())
    scrambled = float(
        ((key.encrypt(images) - images).unfold(2, 7, 7).unfold(3, 7, 7).abs().amax((-1, -2)) < 1e-6).double().mean()
    )
    assert right > scrambled + 0.02 and exact(found, images) <= 10


def test_known_plaintext_recovers_the_key_from_two_fashion_pairs():
    vit, encoder = fashion_model("vit_a"), ENCODERS.create("keyed_block")
    key = encoder.key(vit, vit.input_size, keyed_generator("release"))
    pairs, test = fashion("train", 2)[0], fashion("test", 100)[0]
    estimate = estimate_key(pairs, key.encrypt(pairs), key.block)
    assert all(torch.equal(getattr(estimate, part), getattr(key, part)) for part in ("shuffle", "flip", "scramble"))
    assert torch.allclose(estimate.decrypt(key.encrypt(test)), test, atol=1e-6, rtol=0)  # 1 - (1 - x) rounds
    one = estimate_key(pairs[:1], key.encrypt(pairs[:1]), key.block)  # one image: its blocks alone do not pin the order
    assert torch.equal(one.shuffle, key.shuffle) and not torch.equal(one.scramble, key.scramble)


def keyed_context(params: dict | None = None) -> tuple[AttackContext, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A context as the runner builds one for vit_a's keyed release: the deployed model as ``authorized``, the encoder
    as ``encode`` (an attacker's generator); returns it with the clean test images, their labels and the release."""
    vit, encoder = fashion_model("vit_a"), ENCODERS.create("keyed_block", params)
    public, public_labels = fashion("train", 256)
    clean, labels = fashion("test", 200)
    release = encoder.encode(clean, vit, 0.0, keyed_generator("release")).images
    deployed = encoder.authorized_view(vit, keyed_generator("release"))
    encode = lambda images, model: encoder.encode(images, model, 0.0, keyed_generator("attacker", model.name)).images
    return (
        AttackContext(deployed, fashion_model, public, release[:8], public_labels=public_labels, encode=encode),
        clean,
        labels,
        release,
    )


def test_known_plaintext_decrypts_a_keyed_release_through_the_attack_interface():
    context, clean, _, release = keyed_context()
    attack = ATTACKS.create("keyed_known_plaintext", {"pairs": 4})
    attack.prepare(context)
    assert torch.allclose(attack(release, 1.0, torch.Generator()), clean, atol=1e-6, rtol=0)
    assert torch.equal(attack(release, 0.0, torch.Generator()), release)
    assert (
        attack.budget(1.0).labelled == 4 and attack.budget(0.5).labelled == 2 and attack.parameter(0.25) == {"pairs": 1}
    )


def accuracy(model: ZooModel, images: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(images).argmax(1) == labels).double().mean())


def test_finetuning_the_patch_embedding_on_labelled_encrypted_images_learns_part_of_the_key():
    """The existing ``finetune`` attack applies unchanged: its labelled NEs are the public images encrypted under the
    release's key (the deployed model's). Measured on 200 test images: vit_b reads the shuffled and flipped release
    at 8 %, 35 % after 5 epochs on 256 labelled encrypted images of its first layer alone (clean: 87 %)."""
    context, clean, labels, release = keyed_context({"scramble": False})
    vit_b = fashion_model("vit_b")
    attack = ATTACKS.create("finetune", {"labelled": 256, "scope": "first_layer", "epochs": 5})
    attack.prepare(context)
    assert torch.equal(attack.data, context.authorized.key.encrypt(context.public_images))  # the release's key
    before, after = accuracy(vit_b, release, labels), accuracy(attack.adapt(vit_b, 1.0), release, labels)
    assert before < 0.2 and after > before + 0.1 and accuracy(vit_b, clean, labels) > 0.8


def test_embeddings_scope_trains_the_position_embeddings_too():
    context, *_ = keyed_context()
    vit_b = fashion_model("vit_b")
    for scope, moves in (("first_layer", False), ("embeddings", True)):
        attack = ATTACKS.create("finetune", {"labelled": 32, "scope": scope, "epochs": 1})
        attack.prepare(context)
        adapted = attack.adapt(vit_b, 1.0)
        assert not torch.equal(adapted.first_conv.weight, vit_b.first_conv.weight)
        assert (not torch.equal(adapted.net.pos_embed, vit_b.net.pos_embed)) == moves
        assert torch.equal(adapted.net.blocks[0].mlp.fc1.weight, vit_b.net.blocks[0].mlp.fc1.weight)


def test_the_runner_scores_the_deployed_model_and_hands_it_to_attackers(tmp_path):
    """On a keyed release the authorized model (as deployed) agrees with its clean predictions on every image, the
    unauthorized twin does not, and known-plaintext pairs (made through the group's context) decrypt the release for
    it."""
    suite = {
        "name": "keyed",
        "dataset": {"name": "fashion_mnist", "params": {"split": "test"}, "limit": 60},
        "public": {"name": "fashion_mnist", "params": {"split": "train"}, "limit": 8},
        "zoo": str(ROOT / "suites/zoo/fashion.yaml"),
        "authorized": ["vit_a"],
        "encoders": [{"name": "keyed_block", "strengths": [0]}],
        "attacks": [{"name": "identity"}, {"name": "keyed_known_plaintext", "params": {"pairs": 4}}],
        "batch_size": 30,
        "output": {"dir": str(tmp_path / "runs"), "results": str(tmp_path / "results"), "sample_images": 0},
        "tracking": {"enabled": False},
    }
    assert main(["run", str(write_yaml(tmp_path / "suite.yaml", suite))]) == 0
    cells = pd.read_csv(tmp_path / "results" / "keyed" / "cells.csv")
    keyed = cells[cells.encoder == "keyed_block"].set_index(["attack", "model"])["agreement"]
    assert keyed[("identity", "vit_a")] == 1.0 and keyed[("identity", "vit_b")] < 0.5
    assert keyed[("keyed_known_plaintext", "vit_b")] == 1.0
