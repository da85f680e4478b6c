from protobench import hookimpl


@hookimpl
def register_guidances(register):
    from protobench_guidance.basic import ClassifierFreeGuidance, NoGuidance

    register(NoGuidance)
    register(ClassifierFreeGuidance)
