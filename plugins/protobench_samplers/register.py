from protobench import hookimpl


@hookimpl
def register_samplers(register):
    from protobench_samplers.samplers import DDIMSampler, DDPMSampler, DPMSolverPlusPlusSampler

    register(DDPMSampler)
    register(DDIMSampler)
    register(DPMSolverPlusPlusSampler)
