from protobench import hookimpl


@hookimpl
def register_metrics(register):
    from protobench_metrics.classifier_metrics import CAS, ClassAccuracy
    from protobench_metrics.fidelity_metrics import FID, KID, FIDPerClass, InceptionScore, PrecisionRecall

    for cls in (FID, KID, InceptionScore, PrecisionRecall, FIDPerClass, ClassAccuracy, CAS):
        register(cls)
