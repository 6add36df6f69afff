"""timm's architectures as KDModels, by name: ``timm:<name>`` (``timm:resnet18``,
``timm:mobilenetv3_small_100``, ``timm:resnet10t``), from PyTorch Image Models (R. Wightman,
"PyTorch Image Models", GitHub repository, 2019, doi:10.5281/zenodo.4414861).

The ``timm`` family of ``MODELS`` resolves a name when it is looked up; timm itself (several
seconds to import) is imported only then, so ``import kdbench.models`` does not import it and
``kdbench list models`` lists the built-in zoo alone. timm is optional: ``pip install
'kdbench[timm]'``. A name is an architecture of ``timm.list_models()``; a pretrained tag
(``resnet18.a1_in1k``) is refused, since nothing is ever downloaded: every model is built by
``timm.create_model(name, pretrained=False, num_classes=..., in_chans=C)`` for the data set's
C×H×W images, untrained, with timm's own initialisation and unchanged ImageNet stems.

The network is kept whole as ``self.net`` (its state dict is the wrapper's under ``net.``;
``load_state_dict`` also takes a bare timm model's, without the prefix). ``forward_features``
is one forward pass through timm's own API (timm ≥ 1.0):

- ``feats``: ``net.forward_intermediates(x)``, every feature point timm declares
  (``net.feature_info``, what ``features_only=True`` returns), NCHW, shallow to deep. Unlike
  the built-in zoo, timm counts the stem: a ResNet's five maps are the stem's activation
  (stride 2) and ``layer1``–``layer4``; a ViT's are its blocks' tokens as maps.
- ``embedding``: ``net.forward_head(final, pre_logits=True)``, the pooled feature the
  classifier reads (for MobileNetV3 after its ``conv_head``, as timm defines pre-logits; any
  dropout of the head, off unless ``drop_rate`` is set, sits before it);
- ``logits``: ``fc(embedding)``, with ``fc = net.get_classifier()``. An architecture whose
  classifier is not one linear layer on that feature (the two heads of a distilled DeiT or a
  LeViT, DLA's 1×1 conv) is refused when it is built: checked on a probe batch against
  ``net(x)``.
- ``preact``: where every feature point is the output of an activation module (a ResNet's
  stages end in ``act2``/``act3``, its stem in ``act1``; RegNet and LCNet too), that
  activation's input, captured by a forward pre-hook during the same pass (copied first when
  the activation works in place). timm has no API for pre-activations, so this is found on
  the probe batch when the model is built and kept only if applying the activation to what
  was captured gives each feature. Otherwise (a linear bottleneck, a residual sum, a norm
  last: MobileNetV3, EfficientNet, ConvNeXt, ViT) ``preact`` is empty rather than a guess.
  No method reads it today.

Small images: ImageNet stems downsample 32× and most timm CNNs still run on 8×8 (their last
maps are 1×1), but some do not (Inception's unpadded stem, ConvNeXt's 4× patch stem with
stride-2 downsamplers, ViTs with a fixed or patch-divisible size). Such a model is refused
when it is built, in one line naming it, the data set's image size, timm's reason and the
smallest square size it was found to run on.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from kdbench.errors import KdbenchError, first_line
from kdbench.models.base import KDModel, ModelOutput
from kdbench.models.registry import MODELS

PREFIX = "timm"
INSTALL = "pip install 'kdbench[timm]'"
_SHOW_MAX = 100


def _timm() -> Any:
    try:
        import timm
    except ImportError:
        raise KdbenchError(
            f"models '{PREFIX}:<name>' need timm, which is not installed: {INSTALL}"
        ) from None
    return timm


def _show(name: str) -> str:
    return f"'{PREFIX}:{name if len(name) <= _SHOW_MAX else name[:_SHOW_MAX] + '...'}'"


def resolve(name: str) -> Callable[..., TimmModel]:
    """The factory of ``timm:<name>``; a one-line KdbenchError when timm lacks the name."""
    timm = _timm()
    arch, dot, tag = name.partition(".")
    if dot and timm.is_model(arch):
        raise KdbenchError(
            f"{_show(name)}: kdbench builds timm models untrained (pretrained=False), so a "
            f"pretrained tag ('.{tag[:_SHOW_MAX]}') means nothing here; name the architecture: "
            f"'{PREFIX}:{arch}'"
        )
    if not name or dot or not timm.is_model(arch):
        close = difflib.get_close_matches(
            name.lower()[:_SHOW_MAX], timm.list_models(), n=3, cutoff=0.6
        )
        hint = (
            "close matches: " + ", ".join(f"'{PREFIX}:{c}'" for c in close)
            if close
            else "see timm.list_models()"
        )
        raise KdbenchError(f"unknown timm model {_show(name)} (timm {timm.__version__}); {hint}")
    return functools.partial(TimmModel, arch)


MODELS.add_family(PREFIX, resolve)


def _is_activation(module: nn.Module) -> bool:
    """An element-wise activation module, torch's or timm's."""
    where = type(module).__module__
    if where.startswith("timm.layers.activations"):
        return True
    return where == "torch.nn.modules.activation" and not isinstance(
        module,
        (nn.MultiheadAttention, nn.Softmax, nn.Softmin, nn.Softmax2d, nn.LogSoftmax, nn.GLU),
    )


def _capture(
    store: dict[int, torch.Tensor], slot: int, call: int, copy: bool
) -> Callable[[nn.Module, tuple[Any, ...]], None]:
    """A forward pre-hook keeping the input of a module's ``call``-th call (1-based)."""
    calls = 0

    def hook(_module: nn.Module, args: tuple[Any, ...]) -> None:
        nonlocal calls
        calls += 1
        if calls == call:
            store[slot] = args[0].clone() if copy else args[0]

    return hook


class TimmModel(KDModel):
    """A timm network (``self.net``) with kdbench's feature contract; see the module's text."""

    def __init__(self, arch: str, *, num_classes: int, input_shape: tuple[int, ...]) -> None:
        super().__init__()
        timm = _timm()
        self.arch = arch
        self.net = timm.create_model(
            arch, pretrained=False, num_classes=num_classes, in_chans=input_shape[0]
        )
        for api in ("forward_intermediates", "forward_head", "get_classifier"):
            if not callable(getattr(self.net, api, None)):
                raise KdbenchError(
                    f"{_show(arch)} has no {api}() in timm {timm.__version__}; kdbench takes a "
                    "timm model's features through forward_intermediates and forward_head"
                )
        fc = self.net.get_classifier()
        if not isinstance(fc, nn.Linear):
            raise KdbenchError(
                f"{_show(arch)}: its classifier is {type(fc).__name__}, not one linear layer; "
                "kdbench's methods need logits = fc(embedding)"
            )
        # (module name, call number) of the activation whose input is each feature's preact
        self._preact_at: tuple[tuple[str, int], ...] = ()
        self._probe(tuple(input_shape))

    @property
    def fc(self) -> nn.Linear:
        return self.net.get_classifier()

    def forward_features(self, x: torch.Tensor) -> ModelOutput:
        captured: dict[int, torch.Tensor] = {}
        handles = []
        for slot, (name, call) in enumerate(self._preact_at):
            act = self.net.get_submodule(name)
            copy = bool(getattr(act, "inplace", False))
            handles.append(act.register_forward_pre_hook(_capture(captured, slot, call, copy)))
        try:
            final, feats = self.net.forward_intermediates(x)
        finally:
            for h in handles:
                h.remove()
        emb = self.net.forward_head(final, pre_logits=True)
        preact = [captured[i] for i in range(len(self._preact_at))]
        return ModelOutput(logits=self.fc(emb), feats=list(feats), embedding=emb, preact=preact)

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ) -> Any:
        """The wrapper's state dict, or a bare timm model's (``timm.create_model(...)
        .state_dict()``: the same keys without ``net.``)."""
        if state_dict and not any(k.startswith("net.") for k in state_dict):
            state_dict = {f"net.{k}": v for k, v in state_dict.items()}
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    # -- checks on a probe batch when the model is built

    @torch.no_grad()
    def _probe(self, shape: tuple[int, ...]) -> None:
        """Run one image of the data set's shape (eval mode: no BatchNorm statistics move, and
        a generator of its own: the caller's seeded stream is not drawn from) to refuse what
        cannot work and to find the pre-activations."""
        was = self.net.training
        self.net.eval()
        try:
            x = torch.randn((1, *shape), generator=torch.Generator().manual_seed(0))
            try:
                final, feats, found = self._trace(x)
            except Exception as exc:  # timm's own refusal of a size, whatever its type
                raise KdbenchError(self._too_small(shape, exc)) from None
            if not feats or any(f.ndim != 4 for f in feats):
                raise KdbenchError(
                    f"{_show(self.arch)}: forward_intermediates gave no NCHW feature maps "
                    f"(shapes {[tuple(f.shape) for f in feats]})"
                )
            emb = self.net.forward_head(final, pre_logits=True)
            ref = self.net(x)
            if emb.ndim != 2 or not torch.allclose(self.fc(emb), ref, rtol=1e-4, atol=1e-5):
                raise KdbenchError(
                    f"{_show(self.arch)}: its classifier on forward_head(pre_logits=True) does "
                    "not give the model's logits; kdbench's methods need logits = fc(embedding)"
                )
            self._preact_at = found
        finally:
            self.net.train(was)

    def _trace(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor], tuple[tuple[str, int], ...]]:
        """forward_intermediates with every activation module watched: (final map, feats,
        the activation call each feature is the output of, or () unless every one is)."""
        calls: dict[str, int] = {}
        inputs: dict[tuple[str, int], torch.Tensor] = {}
        outputs: list[tuple[tuple[str, int], nn.Module, Any]] = []

        def pre(name: str) -> Callable[[nn.Module, tuple[Any, ...]], None]:
            def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
                calls[name] = calls.get(name, 0) + 1
                if args and isinstance(args[0], torch.Tensor):
                    copy = bool(getattr(module, "inplace", False))
                    inputs[(name, calls[name])] = args[0].clone() if copy else args[0]

            return hook

        def post(name: str) -> Callable[[nn.Module, tuple[Any, ...], Any], None]:
            def hook(module: nn.Module, _args: tuple[Any, ...], out: Any) -> None:
                outputs.append(((name, calls[name]), module, out))

            return hook

        handles = []
        for name, module in self.net.named_modules():
            if _is_activation(module):
                handles.append(module.register_forward_pre_hook(pre(name)))
                handles.append(module.register_forward_hook(post(name)))
        try:
            final, feats = self.net.forward_intermediates(x)
        finally:
            for h in handles:
                h.remove()
        found = []
        for f in feats:
            last = [(at, m) for at, m, out in outputs if out is f and at in inputs]
            if not last:
                return final, list(feats), ()
            at, module = last[-1]
            if not torch.allclose(module(inputs[at].clone()), f):
                return final, list(feats), ()
            found.append(at)
        return final, list(feats), tuple(found)

    def _too_small(self, shape: tuple[int, ...], exc: Exception) -> str:
        """Why the model does not run on ``shape``, and the smallest square side it runs on."""
        side = max(shape[1:])
        reference = (getattr(self.net, "pretrained_cfg", None) or {}).get("input_size")
        cap = 2 * max(side, *(reference[1:] if reference else (224,)))
        smallest = self._smallest_side(shape[0], side, cap)
        size = "×".join(map(str, shape))
        text = (
            f"{_show(self.arch)} does not run on the data set's {size} images "
            f"({type(exc).__name__}: {first_line(exc)}); "
        )
        if smallest is not None:
            return text + f"the smallest square input it runs on is {smallest}×{smallest}"
        if reference and self._runs((1, *reference)):
            return text + f"it runs at timm's input size {'×'.join(map(str, reference))} only"
        return text + f"it ran on no square input up to {cap}×{cap}"

    def _smallest_side(self, channels: int, side: int, cap: int) -> int | None:
        """The smallest square side above ``side`` (which fails) the model runs on: doubling,
        then bisecting (a side that runs, the smallest found if sizes are not monotonic)."""
        low, high = side, None
        while high is None and low < cap:
            s = min(2 * low, cap)
            if self._runs((1, channels, s, s)):
                high = s
            else:
                low = s
        if high is None:
            return None
        while high - low > 1:
            mid = (low + high) // 2
            if self._runs((1, channels, mid, mid)):
                high = mid
            else:
                low = mid
        return high

    def _runs(self, shape: tuple[int, ...]) -> bool:
        try:
            final, _ = self.net.forward_intermediates(torch.zeros(shape))
            self.net.forward_head(final)
        except Exception:
            return False
        return True
