from protobench import hookimpl

#: name -> "module:Class": registered by reference, so that listing plugins imports neither them nor torch
GUIDANCES = {
    "none": "protobench_guidance.basic:NoGuidance",
    "cfg": "protobench_guidance.basic:ClassifierFreeGuidance",
    "feature": "protobench_guidance.feature:FeatureGuidance",
    "rejection": "protobench_guidance.rejection:RejectionSampling",
}


@hookimpl
def register_guidances(register):
    for name, target in GUIDANCES.items():
        register(target, name=name)
