from protobench import hookimpl


@hookimpl
def register_conditioners(register):
    from protobench_conditioners.aux_classifier import AuxClassifierConditioner
    from protobench_conditioners.basic import NoConditioner, RandomEmbedding
    from protobench_conditioners.cbn import ConditionalNorm
    from protobench_conditioners.prototypes import FrozenPrototypes, UnfrozenPrototypes

    register(RandomEmbedding)
    register(NoConditioner)
    register(FrozenPrototypes)
    register(UnfrozenPrototypes)
    register(ConditionalNorm)
    register(AuxClassifierConditioner)
