"""DatasetTests: what the core relies on from a dataset."""

from __future__ import annotations

import re
from typing import ClassVar

import pytest
import torch

from protobench.interfaces import DataSplit
from protobench.testing.conformance._base import PluginTests


class DatasetTests(PluginTests):
    kind = "dataset"
    #: folder holding the dataset's files, for datasets read from --data-root
    data_root: ClassVar[str | None] = None

    @pytest.fixture(scope="class")
    def plugin_context(self):
        return {"data_root": self.data_root}

    @pytest.fixture(scope="class")
    def loaded(self, plugin_registry, plugin_context):
        dataset = self.build(plugin_registry, plugin_context)
        return dataset, dataset.load()

    def test_splits(self, loaded):
        """Train and test splits: uint8 N×C×H×W of `image_shape`, int64 labels in [0, num_classes)."""
        dataset, splits = loaded
        assert len(splits) == 2
        for split in splits:
            assert isinstance(split, DataSplit) and len(split) > 0
            assert split.images.dtype == torch.uint8
            assert tuple(split.images.shape[1:]) == tuple(dataset.image_shape)
            assert split.labels.dtype == torch.int64
            assert 0 <= int(split.labels.min()) and int(split.labels.max()) < dataset.num_classes
        assert set(splits[0].labels.unique().tolist()) == set(range(dataset.num_classes)), "a class has no training image"

    def test_class_names(self, loaded):
        dataset, _ = loaded
        assert len(dataset.class_names) == dataset.num_classes
        assert all(isinstance(n, str) and n for n in dataset.class_names)

    def test_deterministic(self, loaded, plugin_registry, plugin_context):
        """Two instances hold the same data, hence the same checksum (every cache keys on it)."""
        dataset, (train, test) = loaded
        other = self.build(plugin_registry, plugin_context, seed=123)
        train2, test2 = other.load()
        assert torch.equal(train.images, train2.images) and torch.equal(test.labels, test2.labels)
        assert dataset.checksum() == other.checksum()
        assert re.fullmatch(r"[0-9a-f]{8,64}", dataset.checksum())

    def test_presets_are_config_keys(self, plugin_registry, plugin_entry):
        """Presets name real config keys, and a config with only this dataset chosen resolves."""
        from protobench.config import build_config, check_key

        for key in plugin_entry.cls.presets:
            check_key(key)
        build_config({"dataset": self.plugin_name, **({"data_root": self.data_root} if self.data_root else {})},
                     plugin_registry)

    def test_resize(self, loaded):
        """Images of another size and channel count come back as this dataset's uint8 `image_shape`."""
        dataset, _ = loaded
        c, h, w = dataset.image_shape
        for channels in {1, 3}:
            images = torch.randint(0, 256, (2, channels, 2 * h + 3, 2 * w + 1), dtype=torch.uint8)
            out = dataset.resize(images)
            assert out.dtype == torch.uint8 and tuple(out.shape) == (2, c, h, w)
