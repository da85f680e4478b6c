from protobench import hookimpl


@hookimpl
def register_conditioners(register):
    from protobench_conditioners.basic import NoConditioner, RandomEmbedding

    register(RandomEmbedding)
    register(NoConditioner)
