"""A bundle's candidate networks are cuts of the largest variant (einet.bundle.variant_exits): the
cut of the full variant's CS-profile is each smaller variant's own profile, exactly, so `einet build`
profiles once and selects among them all."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from einet.formats.profiles import ETRecord  # noqa: E402
from einet.models import build  # noqa: E402
from einet.models.thumbnail import ThumbnailClassifier  # noqa: E402
from einet.profiling import profile_cs  # noqa: E402
from einet.variants import Variant, variant_exits  # noqa: E402


@pytest.mark.parametrize("candidate", [Variant(), Variant(8), Variant(None, "flip", 2), Variant(8, "flip", 2),
                                       Variant(8, "flip", None), Variant(None, "flip", None)])
def test_the_cut_of_the_full_variant_is_the_candidates_own_profile(candidate):
    torch.manual_seed(0)
    model = build("b_alexnet", num_classes=10, in_channels=3, width=0.125).eval()
    thumbnail = ThumbnailClassifier(3, 10, 8).eval()
    samples = torch.utils.data.TensorDataset(torch.randn(6, 3, 32, 32), torch.arange(6) % 10)
    full = Variant(8, "flip")
    whole = profile_cs(full.build(model, thumbnail), samples, progress=False)
    own = profile_cs(candidate.build(model, thumbnail), samples, progress=False)
    keep = variant_exits(model.num_exits, full, candidate)
    cut = whole.subset_exits(keep)
    np.testing.assert_array_equal(cut.prediction, own.prediction)
    np.testing.assert_allclose(cut.confidence, own.confidence, atol=1e-6)
    assert cut.log_probs is not None and own.log_probs is not None
    np.testing.assert_allclose(cut.log_probs.astype(np.float32), own.log_probs.astype(np.float32), atol=1e-3)
    times = np.arange(1.0, whole.num_exits + 1) * 1e-4  # block i costs i units: the cut keeps exactly its blocks
    et = ETRecord(*(times.copy() for _ in ETRecord.TIMES)).subset_blocks(keep)
    np.testing.assert_array_equal(et.conv, times[keep])
    assert et.meta["cut_to_blocks"] == keep.tolist()


def test_a_thumbnail_in_front_of_a_second_look_runs_both():
    torch.manual_seed(0)
    model = build("b_alexnet", num_classes=10, in_channels=3, width=0.125).eval()
    network = Variant(8, "flip", 2).build(model, ThumbnailClassifier(3, 10, 8))
    assert network.num_exits == 1 + 2 * 2
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        outputs = network(x)
        h = x
        for i in range(network.num_exits):  # the runtime's way: block by block
            h = network.forward_block(i, h)
            assert torch.equal(network.forward_exit(i, h), outputs[i])
