from protobench import hookimpl

#: name -> "module:Class": registered by reference, so that listing plugins imports neither them nor torch
DATASETS = {
    "digits": "protobench_datasets.digits:DigitsDataset",
    "shapes": "protobench_datasets.shapes:ShapesDataset",
    "cifar10": "protobench_datasets.cifar10:CIFAR10Dataset",
    "stl10": "protobench_datasets.stl10:STL10Dataset",
    "tiny-imagenet": "protobench_datasets.tiny_imagenet:TinyImageNetDataset",
    "imagefolder": "protobench_datasets.imagefolder:ImageFolderDataset",
}


@hookimpl
def register_datasets(register):
    for name, target in DATASETS.items():
        register(target, name=name)
