"""Tiny 16x16 single-channel models, one per first-layer geometry the encoders must handle: a patchifying ViT stem
(an exact null space), a patchifying ConvNeXt stem (full rank) and an overlapping ResNet stem."""

from nonxfer_bench.schema.suite import ModelSpec

PRE = {"input_size": [1, 16, 16], "mean": [0.3], "std": [0.4]}
RESNET = dict(layers=[1, 1, 1, 1], channels=[8, 16, 32, 64], num_classes=10)
STEMS = {
    "patchify_null": ModelSpec(
        name="vit",
        arch="vit_tiny_patch16_224",
        preprocess=PRE,
        kwargs=dict(img_size=16, patch_size=4, in_chans=1, embed_dim=12, depth=1, num_heads=2, num_classes=10),
    ),
    "patchify_full_rank": ModelSpec(
        name="cnx",
        arch="convnext_atto",
        preprocess=PRE,
        kwargs=dict(in_chans=1, dims=[24, 24, 24, 24], depths=[1, 1, 1, 1], num_classes=10),
    ),
    "overlapping": ModelSpec(name="res", arch="resnet18", preprocess=PRE, kwargs=dict(in_chans=1, **RESNET)),
}
