from protobench import hookimpl

#: name -> "module:Class": registered by reference, so that listing plugins imports neither them nor torch
SAMPLERS = {
    "ddpm": "protobench_samplers.samplers:DDPMSampler",
    "ddim": "protobench_samplers.samplers:DDIMSampler",
    "dpm-solver++": "protobench_samplers.samplers:DPMSolverPlusPlusSampler",
}


@hookimpl
def register_samplers(register):
    for name, target in SAMPLERS.items():
        register(target, name=name)
