"""The ``smp-diffusion`` command line (see :mod:`smp_diffusion_encoder.cli.main`)."""
