from protobench import hookimpl


@hookimpl
def register_datasets(register):
    from protobench_datasets.cifar10 import CIFAR10Dataset
    from protobench_datasets.digits import DigitsDataset
    from protobench_datasets.imagefolder import ImageFolderDataset
    from protobench_datasets.shapes import ShapesDataset
    from protobench_datasets.stl10 import STL10Dataset
    from protobench_datasets.tiny_imagenet import TinyImageNetDataset

    register(DigitsDataset)
    register(ShapesDataset)
    register(CIFAR10Dataset)
    register(STL10Dataset)
    register(TinyImageNetDataset)
    register(ImageFolderDataset)
