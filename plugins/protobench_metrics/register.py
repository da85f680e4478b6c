from protobench import hookimpl

#: name -> ("module:Class", higher_is_better): registered by reference with the direction declared, so that
#: listing plugins and reading results (report, compare) import neither the metrics nor torch
METRICS = {
    "fid": ("protobench_metrics.fidelity_metrics:FID", False),
    "kid": ("protobench_metrics.fidelity_metrics:KID", False),
    "is": ("protobench_metrics.fidelity_metrics:InceptionScore", True),
    "precision-recall": ("protobench_metrics.fidelity_metrics:PrecisionRecall", True),
    "fid-per-class": ("protobench_metrics.fidelity_metrics:FIDPerClass", False),
    "intra-fid": ("protobench_metrics.fidelity_metrics:IntraFID", False),
    "intra-kid": ("protobench_metrics.fidelity_metrics:IntraKID", False),
    "class-accuracy": ("protobench_metrics.classifier_metrics:ClassAccuracy", True),
    "cas": ("protobench_metrics.classifier_metrics:CAS", True),
}


@hookimpl
def register_metrics(register):
    for name, (target, higher_is_better) in METRICS.items():
        register(target, name=name, higher_is_better=higher_is_better)
