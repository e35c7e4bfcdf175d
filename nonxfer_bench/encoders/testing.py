"""The specification every encoder meets, importable by plugin authors (``nonxfer_bench.encoders.testing``).

``tests/encoders/test_specification.py`` runs it over every registered encoder; a plugin's own tests run it over
theirs, with the parameters the encoder needs::

    from nonxfer_bench.encoders.testing import check

    def test_uniform_meets_the_encoder_specification():
        check("uniform", {"shared": True})

or one test per check: ``@pytest.mark.parametrize("check", CHECKS.values(), ids=CHECKS.keys())``. Every check takes
a ``device`` (default the CPU): with ``device="cuda"`` the models and images are made on the CPU and moved there, and
the encoder is given a CPU generator, as in ``tests/test_cuda_path.py``.

The checks build small seeded random-weight zoo models, the :data:`STEMS` (a ViT whose 4x4 patch embedding tiles the
image and has an exact patch null space, and a ResNet with an overlapping 7x7/2 stem), each with 1 and 3 channels at
:data:`SIZE`, and encode three seeded random images at each of :data:`STRENGTHS`. An encoder runs only on the models
its ``check_model`` accepts (a suite refuses the others at load, one line naming the suite key), and must accept one.

What an encoder promises (each a check below; the declarations are class attributes of
:class:`~nonxfer_bench.encoders.base.Encoder`):

- shape and range: B x C x H x W float images in [0, 1] at the model's input size in, a release of the same shape,
  dtype and device out, finite; within [0, 1] if it declares ``in_unit_range``, else "unclipped": [0, 1] pixel
  units that may leave [0, 1] (``float32`` storage keeps such values, image formats clip them). Neither the images
  nor the model are changed;
- determinism under a key: one generator seed gives one release, bit for bit, and another seed another release,
  unless the encoder declares ``keyed = False`` (``clean``), when every seed gives the same one; no draw from torch's
  global generator;
- the achieved PSNR: ``Encoding.achieved_psnr`` is the standard PSNR (peak 1) of each release against its image,
  within :data:`TOLERANCE_DB`, whatever the strength unit (cells record it as ``encoded_psnr``, the scale on which
  schemes are compared). ``strength_unit`` says whether the strength is a standard PSNR target
  (:data:`~nonxfer_bench.encoders.base.STANDARD_PSNR`: the release hits it, so schemes compare at matched PSNR), is
  ignored (:data:`~nonxfer_bench.encoders.base.IGNORED`: every strength gives the same release) or is the
  encoder's own unit (``reference``'s nominal PSNR: strengths give different releases);
- ``check_model``: None or one line, from the layers alone (the same answer for the weightless structure on the
  meta device, which is what the suite loader passes, as for the built model);
- ``noise_subspace``: None, or a :class:`~nonxfer_bench.linalg.subspace.NoiseSubspace` whose pixel basis is
  D x k for the first layer's D = C kh kw, the same on every call; on stems whose windows tile the image (the ViT)
  every window of the noise (release - images) lies in its span;
- ``authorized_view``: a zoo model with the model's input size, on its device, the same for the same seed, finite
  logits, and ``model`` left as it was;
- ``storage_formats``: stored in each declared format and read back, the release keeps the authorized model's
  predictions (those on the ``float32`` release) about as well as that storage keeps them for the clean images.
"""

from __future__ import annotations

import copy
import functools
from typing import Any, Callable

import torch
import torch.nn.functional as F

from nonxfer_bench.core.params import unbounded
from nonxfer_bench.encoders.base import ENCODERS, IGNORED, STANDARD_PSNR, Encoder, Encoding
from nonxfer_bench.linalg.subspace import NoiseSubspace
from nonxfer_bench.metrics.image_quality import psnr_per_image
from nonxfer_bench.schema.storage import parse_format
from nonxfer_bench.schema.suite import ModelSpec
from nonxfer_bench.storage.formats import apply_storage
from nonxfer_bench.zoo import ZooModel, build_model, model_structure

Device = torch.device | str
STEMS = ("vit", "resnet")
CHANNELS = (1, 3)
SIZE = (20, 24)  # not square, so a swapped height and width shows
STRENGTHS = (5.0, 20.0, 40.0)
TOLERANCE_DB = 0.01  # between a reported and a measured PSNR, and between a standard-PSNR target and the release
SPAN_TOLERANCE = 1e-4  # the noise's windows outside a declared subspace, relative to their norm
MAX_REASON = 400  # characters of a check_model refusal
STORAGE_IMAGES = 64  # smooth images a storage format is checked on
STORAGE_STRENGTH = 30.0  # the strength they are encoded at
STORAGE_MARGIN = (
    0.05  # how much less of the authorized model's predictions a stored release may keep than stored clean images
)


def model_spec(stem: str, channels: int) -> ModelSpec:
    """The zoo entry of one specification model: ``vit`` or ``resnet`` with ``channels`` channels at :data:`SIZE`."""
    preprocess = {"input_size": [channels, *SIZE], "mean": [0.5] * channels, "std": [0.25] * channels}
    if stem == "vit":
        kwargs = {
            "img_size": list(SIZE),
            "patch_size": 4,
            "in_chans": channels,
            "embed_dim": 12,
            "depth": 1,
            "num_heads": 2,
            "num_classes": 10,
        }
        return ModelSpec(
            name=f"vit{channels}", arch="vit_tiny_patch16_224", kwargs=kwargs, preprocess=preprocess, seed=0
        )
    kwargs = {"in_chans": channels, "layers": [1, 1, 1, 1], "channels": [8, 8, 8, 8], "num_classes": 10}
    return ModelSpec(name=f"resnet{channels}", arch="resnet18", kwargs=kwargs, preprocess=preprocess, seed=1)


@functools.cache
def _built(stem: str, channels: int) -> ZooModel:
    return build_model(model_spec(stem, channels))


def make_model(stem: str, channels: int, device: Device = "cpu") -> ZooModel:
    """A fresh copy of a specification model (built once per process), on ``device``."""
    model = copy.deepcopy(_built(stem, channels))
    return model if torch.device(device).type == "cpu" else model.to_device(torch.device(device))


def make_images(channels: int, device: Device = "cpu") -> torch.Tensor:
    """Three seeded random images at :data:`SIZE` (drawn on the CPU, then moved to ``device``)."""
    return torch.rand(3, channels, *SIZE, generator=torch.Generator().manual_seed(0)).to(device)


def key(seed: int) -> torch.Generator:
    """The generator an encoding is given: a CPU generator with ``seed``, as the runner's keyed generators are."""
    return torch.Generator().manual_seed(seed)


def accepted(encoder: Encoder, device: Device = "cpu") -> list[tuple[str, ZooModel]]:
    """(where, model) for every specification model ``encoder.check_model`` accepts, on ``device``; fails if it
    accepts none."""
    cases = [(stem, channels) for stem in STEMS for channels in CHANNELS]
    models = [
        (
            f"{encoder.name} on {stem} ({channels} channel{'s' if channels > 1 else ''})",
            make_model(stem, channels, device),
        )
        for stem, channels in cases
        if encoder.check_model(model_structure(model_spec(stem, channels))) is None
    ]
    assert models, (
        f"{encoder.name}: check_model refuses every model of the specification ({', '.join(STEMS)}), so nothing of it "
        "can be checked"
    )
    return models


def _host(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().cpu().double()


def _state(model: ZooModel) -> dict[str, torch.Tensor]:
    return {name: _host(value).clone() for name, value in model.state_dict().items()}


def _same_state(before: dict[str, torch.Tensor], model: ZooModel) -> bool:
    after = _state(model)
    return before.keys() == after.keys() and all(torch.equal(before[name], after[name]) for name in before)


def _db_apart(first: torch.Tensor, second: torch.Tensor) -> float:
    """The largest difference of two PSNR vectors in dB (0 where both are +inf, inf where only one is)."""
    both = torch.isinf(first) & torch.isinf(second) & (first == second)
    return float(torch.where(both, torch.zeros_like(first), (first - second).abs()).max())


def check_declarations(name: str, params: dict[str, Any] | None = None, device: Device = "cpu") -> None:
    """A docstring, a ``Params`` model that refuses unknown keys and bounds every number from both sides, a ``secret``
    sentence declared below the base class, a one-line ``strength_unit``, boolean ``keyed``/``in_unit_range`` and a
    string ``version``; ``params`` are valid."""
    cls = ENCODERS.get(name)
    assert cls.__doc__, f"{name}: needs a docstring"
    assert not unbounded(cls.Params), (
        f"{name}: numeric parameters without a lower or an upper bound: {', '.join(unbounded(cls.Params))}"
    )
    try:
        cls.Params(not_a_parameter=1)
        raise AssertionError(
            f"{name}: Params accepts an unknown key (use extra='forbid': build it on nonxfer_bench.core.params.Strict)"
        )
    except ValueError:  # refused, as it must be
        pass
    declared = next(k for k in cls.__mro__ if "secret" in vars(k))
    assert (
        declared is not Encoder
        and isinstance(cls.secret, str)
        and len(cls.secret.split()) >= 5
        and "\n" not in cls.secret
    ), (
        f"{name}: declare `secret`, one sentence: what the owner keeps secret and what the release assumes (got "
        f"{cls.secret!r})"
    )
    assert isinstance(cls.strength_unit, str) and cls.strength_unit.strip() and "\n" not in cls.strength_unit, (
        f"{name}: strength_unit {cls.strength_unit!r}"
    )
    assert isinstance(cls.keyed, bool) and isinstance(cls.in_unit_range, bool), (
        f"{name}: keyed and in_unit_range are booleans"
    )
    assert isinstance(cls.version, str) and cls.version, (
        f"{name}: version {cls.version!r} (a string, part of every cell key)"
    )
    formats = cls.storage_formats
    assert isinstance(formats, tuple) and formats and all(isinstance(f, str) for f in formats), (
        f"{name}: storage_formats {formats!r} (a tuple of format names)"
    )
    for fmt in formats:
        try:
            canonical = parse_format(fmt).name
        except ValueError as error:
            raise AssertionError(f"{name}: storage_formats: {error}") from None
        assert canonical == fmt, f"{name}: storage_formats names {fmt!r}; write it {canonical!r}"
    assert len(set(formats)) == len(formats), f"{name}: storage_formats {formats!r} names a format twice"
    ENCODERS.create(name, params)


def check_model_hook(name: str, params: dict[str, Any] | None = None, device: Device = "cpu") -> None:
    """``check_model`` answers None or one line, from the layers alone: the same for a model's weightless structure
    (meta device, as the suite loader builds it) as for the built model; it accepts at least one model."""
    encoder = ENCODERS.create(name, params)
    for stem in STEMS:
        for channels in CHANNELS:
            where = f"{name}.check_model on {stem} ({channels} channel(s))"
            on_structure = encoder.check_model(model_structure(model_spec(stem, channels)))
            on_model = encoder.check_model(make_model(stem, channels, device))
            assert on_structure == on_model, (
                f"{where}: {on_structure!r} on the structure, {on_model!r} on the model (it must not read weights)"
            )
            if on_structure is not None:
                assert isinstance(on_structure, str) and on_structure.strip(), (
                    f"{where}: returned {on_structure!r}, not None or a reason"
                )
                assert "\n" not in on_structure and "\r" not in on_structure and len(on_structure) <= MAX_REASON, (
                    f"{where}: not one line: {on_structure[:500]!r}"
                )
    accepted(encoder, device)


def check_release_shape_and_range(name: str, params: dict[str, Any] | None = None, device: Device = "cpu") -> None:
    """An :class:`Encoding` whose release has the images' shape, dtype and device, finite values (within [0, 1] when
    the encoder declares ``in_unit_range``) and one achieved PSNR per image; the images and the model unchanged."""
    encoder = ENCODERS.create(name, params)
    for where, model in accepted(encoder, device):
        images = make_images(model.input_size[0], device)
        clean, state = images.clone(), _state(model)
        for strength in STRENGTHS:
            at = f"{where} at strength {strength:g}"
            encoding = encoder.encode(images, model, strength, key(1))
            assert isinstance(encoding, Encoding), f"{at}: returned {type(encoding).__name__}, not an Encoding"
            released = encoding.images
            assert released.shape == images.shape and released.dtype == images.dtype, (
                f"{at}: {tuple(released.shape)} {released.dtype} for {tuple(images.shape)} {images.dtype}"
            )
            assert released.device == images.device, (
                f"{at}: released on {released.device}, the images are on {images.device}"
            )
            values = _host(released)
            assert torch.isfinite(values).all(), f"{at}: non-finite values"
            if type(encoder).in_unit_range:
                assert 0 <= float(values.min()) and float(values.max()) <= 1, (
                    f"{at}: declares in_unit_range, released [{float(values.min()):.3g}, {float(values.max()):.3g}]"
                )
            psnr = encoding.achieved_psnr
            assert psnr.shape == (len(images),) and psnr.is_floating_point(), (
                f"{at}: achieved_psnr {tuple(psnr.shape)} {psnr.dtype}, not one float per image"
            )
        assert torch.equal(_host(images), _host(clean)), f"{where}: changed the images it was given"
        assert _same_state(state, model), f"{where}: changed the model's weights or buffers"


def check_determinism_under_a_key(name: str, params: dict[str, Any] | None = None, device: Device = "cpu") -> None:
    """One generator seed gives one release, bit for bit; another seed gives another release, or the same one when the
    encoder declares ``keyed = False``; torch's global generator is not drawn from."""
    encoder = ENCODERS.create(name, params)
    for where, model in accepted(encoder, device):
        images = make_images(model.input_size[0], device)
        state = torch.get_rng_state()
        first, again, other = (_host(encoder.encode(images, model, 20.0, key(seed)).images) for seed in (1, 1, 2))
        assert torch.equal(state, torch.get_rng_state()), (
            f"{where}: drew from torch's global generator (draw from the one it is given)"
        )
        assert torch.equal(first, again), f"{where}: not deterministic for one generator seed"
        if type(encoder).keyed:
            assert not torch.equal(first, other), (
                f"{where}: another seed gave the same release (declare keyed = False if the key is ignored)"
            )
        else:
            assert torch.equal(first, other), f"{where}: declares keyed = False, but another seed gave another release"


def check_achieved_psnr(name: str, params: dict[str, Any] | None = None, device: Device = "cpu") -> None:
    """``achieved_psnr`` is the standard PSNR of each release against its image; with the strength unit
    ``STANDARD_PSNR`` also the strength (within :data:`TOLERANCE_DB`); ``IGNORED``: every strength gives one release;
    the encoder's own unit: the strengths give different releases."""
    encoder = ENCODERS.create(name, params)
    unit = type(encoder).strength_unit
    for where, model in accepted(encoder, device):
        images = make_images(model.input_size[0], device)
        releases = []
        for strength in STRENGTHS:
            encoding = encoder.encode(images, model, strength, key(1))
            measured, reported = _host(psnr_per_image(images, encoding.images)), _host(encoding.achieved_psnr)
            at = f"{where} at strength {strength:g}"
            assert _db_apart(reported, measured) <= TOLERANCE_DB, (
                f"{at}: achieved_psnr {reported.tolist()}, the release's standard PSNR {measured.tolist()}"
            )
            if unit == STANDARD_PSNR:
                assert _db_apart(measured, torch.full_like(measured, strength)) <= TOLERANCE_DB, (
                    f"{at}: a standard-PSNR target, released at {measured.tolist()} dB"
                )
            releases.append(_host(encoding.images))
        same = all(torch.equal(releases[0], release) for release in releases[1:])
        if unit == IGNORED:
            assert same, (
                f"{where}: strength_unit says the strength is ignored, but strengths {STRENGTHS} gave different "
                "releases"
            )
        elif unit != STANDARD_PSNR:
            assert not same, (
                f"{where}: strengths {STRENGTHS} ({unit}) gave one release (declare strength_unit = IGNORED)"
            )


def _tiles(model: ZooModel) -> bool:
    """The stem's windows tile the image: stride == kernel, no padding or dilation, sizes divisible."""
    geometry, size = model.geometry, model.input_size[1:]
    plain = (
        geometry.stride == geometry.kernel_size
        and geometry.padding == (0, 0)
        and geometry.dilation == (1, 1)
        and not geometry.same
    )
    return plain and all(n % k == 0 for n, k in zip(size, geometry.kernel_size))


def check_noise_subspace(name: str, params: dict[str, Any] | None = None, device: Device = "cpu") -> None:
    """``noise_subspace`` is None, or a NoiseSubspace whose pixel basis is D x k (D = C kh kw of the first layer), the
    same on every call; where the stem's windows tile the image, every window of the noise lies in its span."""
    encoder = ENCODERS.create(name, params)
    for where, model in accepted(encoder, device):
        first, again = encoder.noise_subspace(model), encoder.noise_subspace(model)
        if first is None:
            assert again is None, f"{where}: noise_subspace is None once and a subspace the next time"
            continue
        assert isinstance(first, NoiseSubspace) and isinstance(again, NoiseSubspace), (
            f"{where}: noise_subspace returned {type(first).__name__}"
        )
        basis = _host(first.pixel_basis)
        depth = model.first_conv.in_channels * model.geometry.kernel_size[0] * model.geometry.kernel_size[1]
        assert basis.dim() == 2 and basis.shape[0] == depth and basis.shape[1] >= 1, (
            f"{where}: pixel basis {tuple(basis.shape)}, not {depth} x k"
        )
        assert torch.equal(basis, _host(again.pixel_basis)), f"{where}: noise_subspace changed between two calls"
        if not _tiles(model):
            continue
        images = make_images(model.input_size[0], device)
        noise = _host(encoder.encode(images, model, 20.0, key(1)).images) - _host(images)
        kernel = model.geometry.kernel_size
        windows = F.unfold(noise, kernel_size=kernel, stride=kernel)  # B x D x L
        q = torch.linalg.qr(basis).Q
        outside = windows - q @ (q.T @ windows)
        assert outside.norm() <= SPAN_TOLERANCE * windows.norm(), (
            f"{where}: the noise has {float(outside.norm() / windows.norm()):.2g} of its norm outside the declared "
            "subspace"
        )


def check_authorized_view(name: str, params: dict[str, Any] | None = None, device: Device = "cpu") -> None:
    """``authorized_view`` gives a ZooModel with the model's input size on the model's device, the same model (equal
    logits) for the same seed, finite logits, and leaves ``model`` as it was."""
    encoder = ENCODERS.create(name, params)
    for where, model in accepted(encoder, device):
        images, state = make_images(model.input_size[0], device), _state(model)
        view, again = encoder.authorized_view(model, key(1)), encoder.authorized_view(model, key(1))
        assert isinstance(view, ZooModel), f"{where}: authorized_view returned {type(view).__name__}, not a ZooModel"
        assert view.input_size == model.input_size and view.device == model.device, (
            f"{where}: view for {view.input_size} on {view.device}"
        )
        with torch.no_grad():
            logits, repeated = _host(view(images)), _host(again(images))
        assert torch.isfinite(logits).all() and torch.equal(logits, repeated), (
            f"{where}: the view's logits are not finite or not the same for one seed"
        )
        assert _same_state(state, model), f"{where}: authorized_view changed the model it was given (return a new one)"


def smooth_images(channels: int, device: Device = "cpu") -> torch.Tensor:
    """:data:`STORAGE_IMAGES` seeded smooth images at :data:`SIZE` (random 5 x 6 images upsampled): content that lossy
    formats keep about as well as photographs, unlike per-pixel noise."""
    coarse = torch.rand(STORAGE_IMAGES, channels, 5, 6, generator=torch.Generator().manual_seed(0))
    return F.interpolate(coarse, size=SIZE, mode="bilinear", align_corners=False).to(device)


def _kept(model: ZooModel, before: torch.Tensor, after: torch.Tensor) -> float:
    """The share of images whose prediction ``after`` storage is the one ``before``. Predictions are the argmax of the
    logits centered by their mean over ``before``: a random-weight model's plain argmax is nearly one class whatever
    the image, so agreement on it would say nothing."""
    with torch.no_grad():
        logits = _host(model(before))
        centre = logits.mean(0)
        return float(((_host(model(after)) - centre).argmax(1) == (logits - centre).argmax(1)).double().mean())


def check_storage_formats(name: str, params: dict[str, Any] | None = None, device: Device = "cpu") -> None:
    """Each declared storage format keeps the authorized model working: on every accepted model, the authorized view's
    predictions on the release stored in that format and read back agree with those on the ``float32`` release for at
    least as many of :data:`STORAGE_IMAGES` smooth images, encoded at :data:`STORAGE_STRENGTH`, as the same storage
    keeps the model's predictions on the clean images, less :data:`STORAGE_MARGIN` (a lossy format changes a
    random-weight
    model's predictions even on clean images)."""
    encoder = ENCODERS.create(name, params)
    for where, model in accepted(encoder, device):
        images = smooth_images(model.input_size[0], device)
        release = encoder.encode(images, model, STORAGE_STRENGTH, key(1)).images
        view = encoder.authorized_view(model, key(1))
        for fmt in type(encoder).storage_formats:
            kept = _kept(view, release, apply_storage(release, fmt).to(device))
            clean = _kept(model, images, apply_storage(images, fmt).to(device))
            assert kept >= clean - STORAGE_MARGIN, (
                f"{where}: declares storage format {fmt}, but stored in it the release keeps the authorized model's "
                f"predictions on {kept:.0%} of {STORAGE_IMAGES} images (stored clean images keep {clean:.0%}); leave "
                f"{fmt} out of storage_formats"
            )


CHECKS: dict[str, Callable[..., None]] = {  # each: (name, params=None, device="cpu")
    "declarations": check_declarations,
    "check_model": check_model_hook,
    "release_shape_and_range": check_release_shape_and_range,
    "determinism_under_a_key": check_determinism_under_a_key,
    "achieved_psnr": check_achieved_psnr,
    "noise_subspace": check_noise_subspace,
    "authorized_view": check_authorized_view,
    "storage_formats": check_storage_formats,
}


def check(name: str, params: dict[str, Any] | None = None, device: Device = "cpu") -> None:
    """Every check of :data:`CHECKS` in turn; the first that fails raises an AssertionError naming the case."""
    for run in CHECKS.values():
        run(name, params, device)
