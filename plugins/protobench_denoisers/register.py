from protobench import hookimpl

#: name -> "module:Class": registered by reference, so that listing plugins imports neither them nor torch
DENOISERS = {
    "unet": "protobench_denoisers.unet:UNet",
}


@hookimpl
def register_denoisers(register):
    for name, target in DENOISERS.items():
        register(target, name=name)
