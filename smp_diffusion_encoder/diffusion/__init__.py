"""Diffusion processes: noise schedules and forward noising (no networks)."""

from smp_diffusion_encoder.diffusion.schedule import NoiseSchedule, ScheduleName, make_betas

__all__ = ["NoiseSchedule", "ScheduleName", "make_betas"]
