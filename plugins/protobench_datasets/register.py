from protobench import hookimpl


@hookimpl
def register_datasets(register):
    from protobench_datasets.digits import DigitsDataset

    register(DigitsDataset)
