"""The thumbnail exit: an answer from time zero that the rest of einet treats as exit 0."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from einet.models import build  # noqa: E402
from einet.models.thumbnail import ThumbnailClassifier, fit_thumbnail, with_thumbnail_exit  # noqa: E402


def test_thumbnail_exit_comes_first_and_leaves_the_other_exits_unchanged():
    torch.manual_seed(0)
    model = build("b_alexnet", num_classes=10, in_channels=3, width=0.25).eval()
    thumbnail = ThumbnailClassifier(3, 10, size=4).eval()
    elastic = with_thumbnail_exit(model, thumbnail).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before, after = model(x), elastic(x)
        assert elastic.num_exits == model.num_exits + 1
        torch.testing.assert_close(after[0], thumbnail(x))
        for a, b in zip(before, after[1:]):
            torch.testing.assert_close(a, b)


def test_fit_thumbnail_learns_what_a_thumbnail_shows():
    generator = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 3, (600,), generator=generator)
    images = torch.randn(600, 3, 16, 16, generator=generator) * 0.5
    images[torch.arange(600), labels] += 1.0  # the class is the brightest colour channel
    model = fit_thumbnail(images[:500], labels[:500], num_classes=3, size=4, epochs=20)
    with torch.no_grad():
        accuracy = (model(images[500:]).argmax(1) == labels[500:]).float().mean()
    assert accuracy > 0.9


@pytest.mark.parametrize("arguments", [(3, 10, 0), (0, 10, 8), (3, 1, 8)])
def test_bad_thumbnail_sizes(arguments):
    with pytest.raises(ValueError, match="need size"):
        ThumbnailClassifier(*arguments)
    with pytest.raises(ValueError, match="epochs"):
        fit_thumbnail(torch.zeros(2, 3, 8, 8), torch.zeros(3, dtype=torch.long), 10)
