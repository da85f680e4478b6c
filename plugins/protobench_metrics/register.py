from protobench import hookimpl

#: name -> "module:Class": registered by reference, so that listing plugins imports neither them nor torch
METRICS = {
    "fid": "protobench_metrics.fidelity_metrics:FID",
    "kid": "protobench_metrics.fidelity_metrics:KID",
    "is": "protobench_metrics.fidelity_metrics:InceptionScore",
    "precision-recall": "protobench_metrics.fidelity_metrics:PrecisionRecall",
    "fid-per-class": "protobench_metrics.fidelity_metrics:FIDPerClass",
    "intra-fid": "protobench_metrics.fidelity_metrics:IntraFID",
    "intra-kid": "protobench_metrics.fidelity_metrics:IntraKID",
    "class-accuracy": "protobench_metrics.classifier_metrics:ClassAccuracy",
    "cas": "protobench_metrics.classifier_metrics:CAS",
}


@hookimpl
def register_metrics(register):
    for name, target in METRICS.items():
        register(target, name=name)
