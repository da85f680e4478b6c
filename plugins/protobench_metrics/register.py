from protobench import hookimpl


@hookimpl
def register_metrics(register):
    from protobench_metrics.fidelity_metrics import FID

    register(FID)
