from protobench import hookimpl


@hookimpl
def register_samplers(register):
    from protobench_samplers.samplers import DDIMSampler, DDPMSampler

    register(DDPMSampler)
    register(DDIMSampler)
