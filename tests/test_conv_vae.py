"""The VAE parts (objdecomp/nn/vae.py) against oracles, and the convolutional β-VAE baseline."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from objdecomp.methods.conv_vae import ConvVAE
from objdecomp.nn.vae import (bernoulli_log_likelihood, gaussian_kl, gaussian_log_density,
                              importance_log_weights, likelihood_bounds, log_mean_exp,
                              reparameterize, standard_normal_log_density)
from objdecomp.schedules import Linear


# --- Gaussian parts -----------------------------------------------------------------------
def test_gaussian_kl_matches_closed_form_and_monte_carlo():
    torch.manual_seed(0)
    mean, logvar = torch.randn(3, 2, 2, 2), torch.randn(3, 2, 2, 2) * 0.5
    kl = gaussian_kl(mean, logvar)
    posterior = Normal(mean, (0.5 * logvar).exp())
    exact = kl_divergence(posterior, Normal(0.0, 1.0)).flatten(1).sum(1)
    torch.testing.assert_close(kl, exact)
    z = reparameterize(mean, logvar, num_samples=200_000)
    monte_carlo = (gaussian_log_density(z, mean, logvar, 3) - standard_normal_log_density(z, 3)).mean(0)
    torch.testing.assert_close(kl, monte_carlo, atol=0.05, rtol=0.01)


def test_gaussian_log_densities_match_torch_distributions():
    torch.manual_seed(0)
    z, mean, logvar = torch.randn(5, 4, 3), torch.randn(4, 3), torch.randn(4, 3)
    expected = Normal(mean, (0.5 * logvar).exp()).log_prob(z).sum(-1)
    torch.testing.assert_close(gaussian_log_density(z, mean, logvar, 1), expected)
    torch.testing.assert_close(standard_normal_log_density(z, 2), Normal(0.0, 1.0).log_prob(z).sum((-2, -1)))


def test_reparameterized_samples_have_the_posterior_moments_and_carry_gradients():
    torch.manual_seed(0)
    mean = torch.tensor([1.0, -2.0], requires_grad=True)
    logvar = torch.tensor([0.0, math.log(4.0)], requires_grad=True)
    z = reparameterize(mean, logvar, num_samples=100_000)
    assert z.shape == (100_000, 2)
    torch.testing.assert_close(z.mean(0), torch.tensor([1.0, -2.0]), atol=0.03, rtol=0)
    torch.testing.assert_close(z.std(0), torch.tensor([1.0, 2.0]), atol=0.03, rtol=0)
    z.sum().backward()
    assert mean.grad is not None and logvar.grad is not None


# --- likelihoods --------------------------------------------------------------------------
def test_bernoulli_log_likelihood_by_hand():
    # Means sigmoid(0) = 1/2 and sigmoid(log 3) = 3/4 for pixels 1 and 0: log(1/2) + log(1/4).
    logits = torch.tensor([0.0, math.log(3.0)]).view(1, 1, 1, 2)
    images = torch.tensor([1.0, 0.0]).view(1, 1, 1, 2)
    torch.testing.assert_close(bernoulli_log_likelihood(logits, images),
                               torch.tensor([math.log(0.5) + math.log(0.25)]))


def test_colour_likelihood_has_one_bernoulli_term_per_channel_and_pixel():
    # LAVAE §3.2: a saturated-colour image has 3D binary values, each an independent term.
    images = torch.tensor([1.0, 0.0, 1.0]).view(1, 3, 1, 1).expand(1, 3, 2, 2)  # magenta
    certain = torch.where(images > 0, 20.0, -20.0)
    assert bernoulli_log_likelihood(certain, images).item() == pytest.approx(0.0, abs=1e-6)
    coin = torch.zeros(1, 3, 2, 2)
    assert bernoulli_log_likelihood(coin, images).item() == pytest.approx(12 * math.log(0.5))
    wrong_red = certain.clone()
    wrong_red[:, 0, 0, 0] = -20.0  # one channel of one pixel wrong costs about 20 nats
    assert bernoulli_log_likelihood(wrong_red, images).item() == pytest.approx(-20.0, abs=1e-6)


def test_bernoulli_log_likelihood_broadcasts_over_latent_samples():
    torch.manual_seed(0)
    logits, images = torch.randn(4, 2, 1, 3, 3), (torch.rand(2, 1, 3, 3) > 0.5).float()
    scores = bernoulli_log_likelihood(logits, images)
    assert scores.shape == (4, 2)
    torch.testing.assert_close(scores[3], bernoulli_log_likelihood(logits[3], images))


# --- importance sampling --------------------------------------------------------------------
def test_log_mean_exp_by_hand():
    values = torch.tensor([[0.0, 1000.0], [math.log(3.0), 1000.0]])
    torch.testing.assert_close(log_mean_exp(values, 0), torch.tensor([math.log(2.0), 1000.0]))


def test_importance_log_weights_are_drawn_in_bounded_chunks():
    calls = []

    def draw(num_samples: int) -> torch.Tensor:
        calls.append(num_samples)
        return torch.full((num_samples, 2), float(len(calls)))

    weights = importance_log_weights(draw, num_samples=7, samples_per_call=3)
    assert calls == [3, 3, 1]
    assert weights[:, 0].tolist() == [1, 1, 1, 2, 2, 2, 3]


def test_importance_bound_converges_to_the_exact_likelihood_of_a_linear_gaussian_model():
    # p(z) = N(0, 1), p(x|z) = N(x; z, 1), so p(x) = N(x; 0, 2); proposal q(z|x) = N(x/2, 1)
    # (wider than the true posterior N(x/2, 1/2)). The ELBO stays loose; the bound tightens.
    torch.manual_seed(0)
    x = torch.tensor([-1.0, 0.5, 2.0])
    mean, logvar = x / 2, torch.zeros(3)

    def draw(num_samples: int) -> torch.Tensor:
        z = reparameterize(mean, logvar, num_samples)
        return (Normal(z, 1.0).log_prob(x) + Normal(0.0, 1.0).log_prob(z)
                - Normal(mean, 1.0).log_prob(z))

    exact = -Normal(0.0, math.sqrt(2.0)).log_prob(x)
    bounds = likelihood_bounds(importance_log_weights(draw, 20_000, 5_000))
    torch.testing.assert_close(bounds["nll_bound"], exact, atol=0.01, rtol=0)
    assert (bounds["neg_elbo"] > exact + 0.05).all()


# --- the β-VAE ----------------------------------------------------------------------------
def tiny_vae(**options) -> ConvVAE:
    return ConvVAE(image_size=16, channels=1, width=8, latent_channels=2, **options)


def binary_images(count: int = 4, channels: int = 1, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(count, channels, 16, 16, generator=generator) > 0.7).float()


def test_paper_architecture_has_1024_latent_dimensions_and_about_one_million_parameters():
    model = ConvVAE(image_size=64, channels=1)
    mean, logvar = model.encoder(torch.zeros(2, 1, 64, 64))
    assert mean.shape == logvar.shape == (2, 16, 8, 8)  # appendix B: d_VAE = 1024
    assert model.decoder(mean).shape == (2, 1, 64, 64)
    parameters = sum(p.numel() for p in model.parameters())
    assert 0.7e6 < parameters < 1.3e6  # appendix B: "about 1M"


def test_decompose_is_one_foreground_component_holding_the_reconstruction():
    model = tiny_vae().eval()
    images = binary_images()
    decomposition = model.checked_decompose(images)
    assert decomposition.num_components == 1
    assert torch.equal(decomposition.masks, torch.ones(4, 1, 16, 16))
    assert decomposition.background.tolist() == [False]
    assert torch.equal(decomposition.layers[:, 0], decomposition.recon)
    assert ((decomposition.recon >= 0) & (decomposition.recon <= 1)).all()


def test_importance_bound_never_exceeds_the_elbo_and_tightens_with_more_samples():
    torch.manual_seed(0)
    model = tiny_vae(importance_samples=64, images_per_pass=40).eval()
    with torch.no_grad():  # a posterior far from the prior, so that the two bounds differ
        model.encoder.net[-1].bias.fill_(1.0)
    batch = {"image": binary_images(8)}
    with torch.no_grad():
        scores = model.score_images(batch, model.decompose(batch["image"]))
        assert scores["neg_elbo"].shape == scores["nll_bound"].shape == (8,)
        assert (scores["nll_bound"] <= scores["neg_elbo"]).all()  # same samples: Jensen
        model.hparams.importance_samples = 1
        one_sample = torch.stack([model.score_images(batch, None)["nll_bound"] for _ in range(64)])
    # In expectation over draws, the bound decreases with K (Burda et al. 2016, Theorem 1).
    assert scores["nll_bound"].mean() < one_sample.mean() - 1.0
    torch.testing.assert_close(scores["neg_elbo"].mean(), one_sample.mean(), atol=1.0, rtol=0)


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")  # no trainer here
def test_one_training_step_keeps_every_parameter_finite_and_follows_beta():
    torch.manual_seed(0)
    model = tiny_vae(beta=Linear(0.0, 1.0, duration=100))
    optimizer = model.configure_optimizers()
    assert isinstance(optimizer, torch.optim.Adamax)  # appendix B
    loss = model.training_step({"image": binary_images()}, 0)
    terms = model.negative_elbo_terms(binary_images())
    assert torch.isfinite(loss) and loss.item() > 0
    # β = 0 at step 0: the loss is the reconstruction term alone (up to the sampled z).
    assert loss.item() == pytest.approx(terms["reconstruction"].mean().item(), rel=0.05)
    loss.backward()
    optimizer.step()
    for name, parameter in model.named_parameters():
        assert torch.isfinite(parameter).all(), name
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name


def test_image_size_must_allow_the_three_halvings():
    with pytest.raises(ValueError, match="multiple of 8"):
        ConvVAE(image_size=20)


def test_fit_and_test_log_both_bounds_with_k_samples_only_at_test(tmp_path):
    import pytorch_lightning as pl

    from tests.tiny import TinySquaresDataModule

    pl.seed_everything(0)
    data = TinySquaresDataModule(image_size=16, train_size=16, val_size=8, test_size=8)
    model = ConvVAE(image_size=16, channels=3, width=8, latent_channels=2, importance_samples=16,
                    beta=Linear(0.0, 1.0, duration=4))
    trainer = pl.Trainer(max_steps=2, accelerator="cpu", devices=1, logger=False,
                         default_root_dir=tmp_path, enable_progress_bar=False,
                         enable_model_summary=False, use_distributed_sampler=False,
                         num_sanity_val_steps=0)
    trainer.fit(model, datamodule=data)
    logged = trainer.callback_metrics
    assert logged["schedule/beta"] == pytest.approx(0.25)  # the second step's β
    assert torch.isfinite(logged["train/loss"])
    assert logged["val/nll_bound"] == logged["val/neg_elbo"]  # K = 1 while validating
    trainer.test(model, datamodule=data)
    logged = trainer.callback_metrics
    assert 0 < logged["test/nll_bound"] < logged["test/neg_elbo"]
    # The β schedule stays out of the checkpoint, which therefore loads with weights_only.
    restored = ConvVAE.load_from_checkpoint(trainer.checkpoint_callback.best_model_path,
                                            weights_only=True).eval()
    images = next(iter(data.test_dataloader()))["image"]
    torch.testing.assert_close(restored.decompose(images).recon, model.eval().decompose(images).recon)
