from protobench import hookimpl


@hookimpl
def register_metrics(register):
    from protobench_metrics.classifier_metrics import CAS, ClassAccuracy
    from protobench_metrics.fidelity_metrics import (
        FID,
        KID,
        FIDPerClass,
        InceptionScore,
        IntraFID,
        PrecisionRecall,
    )

    for cls in (FID, KID, InceptionScore, PrecisionRecall, FIDPerClass, IntraFID, ClassAccuracy, CAS):
        register(cls)
