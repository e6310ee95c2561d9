"""The size caps of the dataset loaders, read each time a file is loaded: for a genuine file above one,
assign a larger value here before loading (``einet.data.limits.MAX_IDX_BYTES = 4 << 30``).

A file above a cap raises :class:`~einet.data.DatasetError` naming the cap, before it is
decompressed or allocated.
"""

from __future__ import annotations

# Size caps, generous for the real datasets: the largest MNIST-family IDX file
# (EMNIST ByClass images) holds 547 MB, the largest CIFAR file (CIFAR-100 'train')
# 155 MB, and encoded images are rarely above a few MB.
MAX_IDX_BYTES = 1 << 30  # decompressed payload of one IDX file
MAX_CIFAR_FILE_BYTES = 256 << 20  # one CIFAR python-version file (batch or meta)
MAX_IMAGE_BYTES = 64 << 20  # one encoded image file (or zip member) of an image folder
MAX_IMAGE_PIXELS = 1 << 24  # one image of an image folder, from its header (4096 x 4096)
MAX_DATASET_BYTES = 1 << 30  # the decoded arrays of one split: uint8 images and int64 labels
