import numpy as np
import pytest
import torch

from smp_diffusion_encoder.diffusion import GaussianDiffusion, NoiseSchedule, make_betas
from smp_diffusion_encoder.errors import ConfigError


def test_linear_schedule_matches_ddpm():
    betas = make_betas("linear", 1000)
    assert betas.shape == (1000,)
    assert betas[0] == pytest.approx(1e-4) and betas[-1] == pytest.approx(0.02)
    # rescaled for fewer steps so the total noise stays comparable
    assert make_betas("linear", 500)[-1] == pytest.approx(0.04)


def test_cosine_schedule_properties():
    abar = NoiseSchedule("cosine").alphas_cumprod
    assert np.all(np.diff(abar) < 0) and abar[-1] < 1e-4
    assert make_betas("cosine").max() <= 0.999
    # alpha_bar(t) = f(t)/f(0) with f = cos^2(((t/T + s)/(1 + s)) pi/2)
    f = lambda t: np.cos((t / 1000 + 0.008) / 1.008 * np.pi / 2) ** 2  # noqa: E731
    assert abar[499] == pytest.approx(f(500) / f(0), rel=1e-6)


def test_q_sample_is_the_closed_form():
    s = GaussianDiffusion(NoiseSchedule("linear"))
    x0, noise = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    t = torch.tensor([0, 500, 999])
    abar = torch.from_numpy(s.schedule.alphas_cumprod)[t].float().view(-1, 1, 1, 1)
    torch.testing.assert_close(s.q_sample(x0, t, noise), abar.sqrt() * x0 + (1 - abar).sqrt() * noise)


def test_bad_names_and_timesteps_are_rejected():
    with pytest.raises(ConfigError, match="sigmoid"):
        make_betas("sigmoid")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="1000"):
        GaussianDiffusion(NoiseSchedule()).coefficients([1000])
    with pytest.raises(ConfigError, match=r"\[-1\]"):
        GaussianDiffusion(NoiseSchedule()).q_sample(
            torch.zeros(1, 1, 2, 2), torch.tensor([-1]), torch.zeros(1, 1, 2, 2)
        )
    with pytest.raises(ConfigError, match="num_timesteps"):
        NoiseSchedule("linear", 0)


def test_respaced_process_keeps_the_subsequence_alpha_bars() -> None:
    d = GaussianDiffusion(NoiseSchedule("linear", 1000)).respaced(10)
    abar = NoiseSchedule("linear", 1000).alphas_cumprod
    assert d.num_steps == 10 and d.timesteps[0] == 0 and d.timesteps[-1] == 999
    np.testing.assert_allclose(d.np_tables["alphas_cumprod"], abar[d.timesteps])
    # beta'_k = 1 - abar[tau_k] / abar[tau_{k-1}] reproduces the sub-sequence's alpha_bar as a product
    np.testing.assert_allclose(np.cumprod(1 - d.np_tables["betas"]), abar[d.timesteps], rtol=1e-12)
    # the posterior of the full process at k=t matches guided-diffusion's closed form
    full = GaussianDiffusion(NoiseSchedule("linear", 1000))
    t, betas = 500, NoiseSchedule("linear", 1000).betas
    assert full.np_tables["posterior_variance"][t] == pytest.approx(betas[t] * (1 - abar[t - 1]) / (1 - abar[t]))
