"""Suite-wide settings: never touch the network, keep torch to the CPU cores we have."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import torch  # noqa: E402

torch.set_num_threads(1)
