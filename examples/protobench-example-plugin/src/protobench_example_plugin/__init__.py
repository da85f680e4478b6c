"""An example protobench plugin: the module named by the `protobench` entry point defines the hooks."""

from protobench import hookimpl

__version__ = "0.1.0"


@hookimpl
def register_conditioners(register):
    from protobench_example_plugin.onehot import OneHot

    register(OneHot)


@hookimpl
def register_metrics(register):
    from protobench_example_plugin.histogram import PixelHistogramDistance

    register(PixelHistogramDistance)


@hookimpl
def register_loggers(register):
    from protobench_example_plugin.csvlog import CSVMetrics

    register(CSVMetrics)
