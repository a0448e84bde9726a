"""Diffusion processes: named noise schedules and the Gaussian diffusion arithmetic on them (no networks).

- :mod:`.schedule`: :class:`NoiseSchedule` (betas, ``alpha_bar``; NumPy only).
- :mod:`.gaussian`: :class:`GaussianDiffusion` (forward noising, posterior, learned variance, variational
  bound terms, respacing), shared by training, feature extraction and sampling.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "schedule": ["NoiseSchedule", "ScheduleName", "make_betas"],
        "gaussian": ["GaussianDiffusion", "respaced_timesteps", "normal_kl", "discretized_gaussian_log_likelihood"],
    },
)
