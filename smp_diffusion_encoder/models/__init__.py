"""Network architectures (no noise schedules, no training): :mod:`.config` (no torch) and the U-Net."""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "config": ["PRESETS", "UNetConfig", "get_preset", "resolve_config"],
        "unet": ["DiffusionUNet"],
    },
)
