from protobench import hookimpl


@hookimpl
def register_guidances(register):
    from protobench_guidance.basic import ClassifierFreeGuidance, NoGuidance
    from protobench_guidance.feature import FeatureGuidance

    register(NoGuidance)
    register(ClassifierFreeGuidance)
    register(FeatureGuidance)
