"""Device-hours are labelled by what was measured: never call CPU time GPU time."""


def hours_label(device_type: str) -> str:
    return {"cuda": "GPU-hours", "cpu": "CPU-hours"}.get(device_type, f"{device_type}-hours")
