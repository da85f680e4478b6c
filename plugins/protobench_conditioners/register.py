from protobench import hookimpl

#: name -> "module:Class": registered by reference, so that listing plugins imports neither them nor torch
CONDITIONERS = {
    "random": "protobench_conditioners.basic:RandomEmbedding",
    "none": "protobench_conditioners.basic:NoConditioner",
    "proto-frozen": "protobench_conditioners.prototypes:FrozenPrototypes",
    "proto-unfrozen": "protobench_conditioners.prototypes:UnfrozenPrototypes",
    "proto-shuffled": "protobench_conditioners.prototypes:ShuffledPrototypes",
    "random-scaled": "protobench_conditioners.prototypes:ScaledRandomEmbedding",
    "cbn": "protobench_conditioners.cbn:ConditionalNorm",
    "aux-classifier": "protobench_conditioners.aux_classifier:AuxClassifierConditioner",
}

#: the conditioners whose prepare step learns prototypes (declared here, so reading results imports nothing)
LEARN_PROTOTYPES = ("proto-frozen", "proto-unfrozen", "proto-shuffled")


@hookimpl
def register_conditioners(register):
    for name, target in CONDITIONERS.items():
        register(target, name=name, learns_prototypes=name in LEARN_PROTOTYPES)
