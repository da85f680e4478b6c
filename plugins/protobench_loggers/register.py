from protobench import hookimpl

#: name -> "module:Class": registered by reference, so that listing plugins imports neither them nor tensorboard
LOGGERS = {
    "tensorboard": "protobench_loggers.tensorboard:TensorBoardLogger",
}


@hookimpl
def register_loggers(register):
    for name, target in LOGGERS.items():
        register(target, name=name)
