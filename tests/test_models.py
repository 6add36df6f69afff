"""Every registered model builds, runs at its input sizes and exposes features uniformly."""

from __future__ import annotations

import pytest
import torch

from kdbench.models import MODELS, build_model, count_macs, count_params


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny batches over the whole zoo: intra-op threads only add overhead, and on a shared
    2-core machine they made this module several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 32, 32)])
def test_model_forward_and_features(name, shape):
    if name == "convnet4" and shape[-1] < 16:  # refused, in words, rather than failing later
        with pytest.raises(ValueError, match=r"depth 4 needs images of at least 8×8 px"):
            build_model(name, num_classes=7, input_shape=shape)
        return
    model = build_model(name, num_classes=7, input_shape=shape).eval()
    x = torch.randn(3, *shape)
    out = model.forward_features(x)
    assert out.logits.shape == (3, 7)
    assert torch.equal(model(x), out.logits)
    assert out.feats and all(f.shape[0] == 3 and f.ndim == 4 for f in out.feats)
    assert out.embedding is not None and out.embedding.shape[0] == 3 and out.embedding.ndim == 2
    assert count_params(model) > 0 and count_macs(model, shape) > 0


def test_cnn_tiny_size_by_hand():
    m = build_model("cnn_tiny", num_classes=10, input_shape=(1, 8, 8))
    # convs without bias (BN follows): 1·4·9, 4·8·9, 8·8·9; BN γ,β: 2·(4+8+8); fc 8·10+10
    assert count_params(m) == 36 + 288 + 576 + 40 + 90
    # MACs: 8×8×4 outputs × 9, pool, 4×4×8 × 36, pool, 2×2×8 × 72, fc 80
    assert count_macs(m, (1, 8, 8)) == 64 * 4 * 9 + 16 * 8 * 36 + 4 * 8 * 72 + 80


def test_registry_refuses_duplicates_and_suggests_names():
    from kdbench.errors import KdbenchError

    with pytest.raises(TypeError, match="registered twice"):
        MODELS.add("cnn_tiny", lambda *, num_classes, input_shape: None)
    with pytest.raises(TypeError, match="must accept"):
        MODELS.add("broken_model", lambda n: None)
    with pytest.raises(KdbenchError, match="did you mean 'cnn_tiny'"):
        MODELS.get("cnn_tiyn")
