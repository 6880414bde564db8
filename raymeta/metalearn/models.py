"""Model builders for the training methods: built-in MLP / small CNN, or the user's.

A model is named by the ``[model]`` section (:class:`raymeta.config.ModelSection`):
``"mlp"``, ``"cnn"``, ``"conv4"``, ``"resnet12"``
(:mod:`~raymeta.metalearn.resnet`; ``kwargs = {channels = [...]}`` narrows it), an
import path ``"package.module:function"`` (so a
``ray job submit --working-dir`` job can use the user's own code) or, in code, any
callable. A user factory is called with the section's ``kwargs`` and must return a
``torch.nn.Module``; it runs under a forked, seeded torch RNG, so every rank builds
the same initial weights without touching the global generator's state.

Built-in models draw their weights from an explicit ``torch.Generator``.

Example:
    >>> from raymeta.config import ModelSection
    >>> net = build_model(ModelSection(factory="cnn", hidden=(32,)),
    ...                   in_shape=(64,), out_features=10, seed=0)
    >>> net(torch.zeros(2, 64)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from raymeta.errors import TrainingSetupError

__all__ = [
    "AutocastForward",
    "SmallCNN",
    "build_mlp",
    "build_model",
    "load_object",
    "resolve_factory",
]


def build_mlp(
    sizes: Sequence[int], *, generator: torch.Generator, dtype: torch.dtype
) -> nn.Sequential:
    """An MLP ``sizes[0] -> ... -> sizes[-1]`` with ReLU, seeded by ``generator``.

    Uses PyTorch's default ``Linear`` init distribution (uniform ±1/√fan_in) but draws
    from ``generator`` so that every rank builds identical weights.
    """
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layer = nn.Linear(a, b, dtype=dtype)
        _uniform_init(layer, a, generator)
        layers.append(layer)
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def _uniform_init(layer: nn.Module, fan_in: int, generator: torch.Generator) -> None:
    bound = 1.0 / math.sqrt(fan_in)
    with torch.no_grad():
        for p in layer.parameters():
            p.uniform_(-bound, bound, generator=generator)


class SmallCNN(nn.Module):
    """A small CNN for square grey images ``(N, s*s)``, ``(N, s, s)``, ``(N, 1, s, s)``.

    Conv(3x3, ``channels``)-BatchNorm-ReLU-MaxPool blocks (as many as halve the side
    to >= 2, at most ``blocks``), global average pooling, then an MLP head
    ``channels -> hidden... -> out_features``. Flat inputs are reshaped to
    ``1 x s x s`` (8x8 digits: s = 8; 28x28 images: s = 28). With 64 channels
    and 4 blocks this is the few-shot Conv4 (28 -> 14 -> 7 -> 3 -> 1) plus a linear
    projection. BatchNorm uses the statistics of each forward batch in ``train()``
    and running averages in ``eval()``. In HeTRoM's episodic training one forward
    holds every support and query example of this rank's tasks, so statistics are
    per (local) meta-batch, and evaluation, which stays in train mode like the
    MAML / ProtoNet reference code, is transductive per test batch of tasks.

    Args:
        side: Image side ``s``.
        out_features: Output width (classes, or an embedding size).
        channels: Convolution channels.
        hidden: Head hidden widths.
        blocks: Most conv blocks.
        generator: Initialisation generator (no global RNG).
        dtype: Parameter dtype.
    """

    def __init__(
        self,
        side: int,
        out_features: int,
        *,
        channels: int = 32,
        hidden: Sequence[int] = (),
        blocks: int = 4,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        """Build the blocks and the head, initialised from ``generator``."""
        super().__init__()
        gen = generator or torch.Generator().manual_seed(0)
        self.side = side
        layers: list[nn.Module] = []
        size, in_ch = side, 1
        for _ in range(blocks):
            if size < 2:
                break
            conv = nn.Conv2d(in_ch, channels, 3, padding=1, dtype=dtype)
            _uniform_init(conv, in_ch * 9, gen)
            layers += [conv, nn.BatchNorm2d(channels, dtype=dtype), nn.ReLU()]
            layers.append(nn.MaxPool2d(2))
            size, in_ch = size // 2, channels
        self.features = nn.Sequential(*layers)
        self.head = build_mlp(
            [in_ch, *hidden, out_features], generator=gen, dtype=dtype
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map images (flat, ``s x s`` or ``1 x s x s``) to ``(N, out_features)``."""
        x = x.reshape(x.shape[0], 1, self.side, self.side)
        return self.head(self.features(x).mean(dim=(-2, -1)))


class AutocastForward(nn.Module):
    """Run ``module``'s forward under bf16 autocast and return float32 outputs.

    Parameters (and so optimizer state and SAMA's finite-difference perturbation)
    stay in the module's own dtype; only the forward's matmuls/convs run in bf16.
    """

    def __init__(self, module: nn.Module, *, device_type: str = "cpu") -> None:
        """Wrap ``module``; ``device_type`` is autocast's ("cpu" or "cuda")."""
        super().__init__()
        self.inner = module
        self.device_type = device_type

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The wrapped forward in bf16, outputs cast back to float32."""
        with torch.autocast(self.device_type, dtype=torch.bfloat16):
            out = self.inner(*args, **kwargs)
        return out.float() if isinstance(out, torch.Tensor) else out


def load_object(path: str, *, what: str) -> Any:
    """Import ``"package.module:name"`` and return the named object.

    Raises:
        TrainingSetupError: The path is malformed, the module does not import, or
            it has no such name; the message says which and how to fix it.
    """
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise TrainingSetupError(
            f"{what} {path!r} is not an import path; write 'package.module:function'"
        )
    try:
        module = importlib.import_module(module_name)
    except Exception as err:
        raise TrainingSetupError(
            f"{what} {path!r}: module {module_name!r} does not import "
            f"({type(err).__name__}: {err}); is it on PYTHONPATH / in the job's "
            "--working-dir?"
        ) from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise TrainingSetupError(
            f"{what} {path!r}: module {module_name!r} has no attribute {attr!r}"
        ) from None


def resolve_factory(factory: str | Callable[..., Any]) -> Callable[..., Any]:
    """The callable a user factory names (an import path or the callable itself)."""
    obj = (
        load_object(factory, what="model factory")
        if isinstance(factory, str)
        else factory
    )
    if not callable(obj):
        raise TrainingSetupError(f"model factory {factory!r} is not callable")
    return obj


def build_model(
    section: Any, *, in_shape: Sequence[int], out_features: int, seed: int
) -> nn.Module:
    """Build the model a ``[model]`` section names (identical for equal ``seed``).

    Args:
        section: A :class:`raymeta.config.ModelSection`.
        in_shape: Shape of one input example (built-ins only).
        out_features: Output width of a built-in model.
        seed: Initialisation seed.

    Raises:
        TrainingSetupError: An unknown factory, a failing import, a factory that
            does not return a ``torch.nn.Module``, or a CNN input that is not square.
    """
    dtype = getattr(torch, section.dtype)
    gen = torch.Generator().manual_seed(seed)
    numel = math.prod(in_shape)
    if section.factory == "mlp":
        return build_mlp(
            [numel, *section.hidden, out_features], generator=gen, dtype=dtype
        )
    if section.factory in ("cnn", "conv4", "resnet12"):
        side = math.isqrt(numel)
        if side * side != numel:
            raise TrainingSetupError(
                f"model.factory {section.factory!r} needs square grey images; an "
                f"example has shape {tuple(in_shape)} ({numel} values, not a square)"
            )
        if section.factory == "resnet12":
            from raymeta.metalearn.resnet import ResNet12

            widths = section.kwargs.get("channels", (64, 160, 320, 640))
            return ResNet12(
                side, out_features, channels=widths, generator=gen, dtype=dtype
            )
        channels = 64 if section.factory == "conv4" else 32
        return SmallCNN(
            side,
            out_features,
            channels=channels,
            hidden=section.hidden,
            generator=gen,
            dtype=dtype,
        )
    return _call_user_factory(section, seed, dtype)


def _call_user_factory(section: Any, seed: int, dtype: torch.dtype) -> nn.Module:
    factory = resolve_factory(section.factory)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            model = factory(**section.kwargs)
        except TypeError as err:
            raise TrainingSetupError(
                f"model factory {section.factory!r} rejected kwargs "
                f"{sorted(section.kwargs)}: {err}"
            ) from None
    if not isinstance(model, nn.Module):
        raise TrainingSetupError(
            f"model factory {section.factory!r} returned {type(model).__name__}, not a "
            "torch.nn.Module; return the network itself"
        )
    return model.to(dtype)
