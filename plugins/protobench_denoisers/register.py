from protobench import hookimpl


@hookimpl
def register_denoisers(register):
    from protobench_denoisers.unet import UNet

    register(UNet)
